"""SkillEnv: a skill as a Gymnasium environment (one sandbox, many episodes).

The episode is a chat. ``reset`` puts the skill's instructions and a task in front of the
model; each ``step`` takes one assistant turn, runs its tool calls in the sandbox, and
returns the chat so far. A turn without a tool call (or a ``submit`` call) ends the
episode and the grader scores the answer. Model output can be anything: every defect comes
back to the model as a tool message, never as an exception.
"""

from __future__ import annotations

import copy
import json
import time
import warnings
from collections.abc import Callable
from typing import Any

import gymnasium as gym

from skillgym.graders.base import MAX_ANSWER_CHARS
from skillgym.sandbox.base import Sandbox, SandboxError
from skillgym.sandbox.ops import OpError, truncate
from skillgym.spaces import AssistantAction, ChatObservation
from skillgym.spec import EnvSpec
from skillgym.toolcalls import (
    ParsedCall,
    ParsedTurn,
    assistant_message,
    parse_turn,
    replace_lone_surrogates,
    validate_arguments,
)
from skillgym.tools import get_tools
from skillgym.tools.base import Tool
from skillgym.tools.skill import LoadSkill
from skillgym.types import Message, StepTiming, Task, ToolError, ToolOutput, Trajectory, strip_image_data


def approx_tokens(messages: list[Message]) -> int:
    """A tokenizer-free estimate (~4 characters a token) used for the token budget (an image
    counts as its reference, not its base64 bytes)."""
    return sum(len(json.dumps(m, ensure_ascii=False)) for m in strip_image_data(messages)) // 4


class SkillEnv(gym.Env[list[Message], Any]):
    """A skill as a Gymnasium environment: one sandbox, many episodes, one chat per episode.

    Build one with :func:`skillgym.make` (a registered id, ``skill:NAME`` or a
    ``module:function`` factory), or directly from an :class:`~skillgym.spec.EnvSpec`. The
    sandbox starts on the first ``reset`` (or on first use of :attr:`sandbox`), never in the
    constructor, so an env can be built and inspected for free; ``close`` stops it.

    Two specs, two roles: :attr:`env_spec` is skillgym's :class:`~skillgym.spec.EnvSpec`,
    the full definition (skill, tools, sandbox, tasks, grader, budgets) and what every
    skillgym component reads. ``env.spec`` is Gymnasium's own ``gymnasium.envs.registration.EnvSpec``
    (id ``skillgym/<id>``, entry point, kwargs): Gymnasium sets it only when the env was
    made through ``gymnasium.make("skillgym/<id>")`` and it is None otherwise. Read
    ``env_spec``; ``spec`` exists for Gymnasium's wrappers and checkers.

    Args:
        env_spec: What the env is (see :class:`~skillgym.spec.EnvSpec`).
        split: The task split that ``reset`` draws from when no task is named.
        sandbox: A sandbox to use instead of one made from ``env_spec.sandbox`` (the caller
            keeps ownership: ``close`` does not close it).
        sandbox_factory: Makes the sandbox (instead of ``env_spec.sandbox``); called again if
            the sandbox dies.
        render_mode: None or ``"ansi"`` (``render`` returns the transcript as text).
        token_counter: Counts the chat's tokens for the ``max_tokens`` budget (default: about
            four characters a token).

    Attributes:
        observation_space: The chat so far, a list of OpenAI-format messages.
        action_space: One assistant turn: text with ``<tool_call>`` markup, or an OpenAI
            assistant message dict with ``tool_calls``.
        tools: The tools offered, by name; ``tool_schemas`` are their OpenAI schemas.
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(
        self,
        env_spec: EnvSpec,
        *,
        split: str = "train",
        sandbox: Sandbox | None = None,
        sandbox_factory: Callable[[], Sandbox] | None = None,
        render_mode: str | None = None,
        token_counter: Callable[[list[Message]], int] = approx_tokens,
    ):
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode {render_mode!r} is not supported; use None or 'ansi'")
        self.env_spec = env_spec
        self.split = split
        self.render_mode = render_mode
        self.token_counter = token_counter
        self.observation_space = ChatObservation()
        self.action_space = AssistantAction()
        self._sandbox = sandbox
        self._owns_sandbox = sandbox is None
        self._sandbox_factory = sandbox_factory
        self.tools: dict[str, Tool] = {t.name: t for t in self._build_tools()}
        self.tool_schemas = [t.schema() for t in self.tools.values()]
        self._messages: list[Message] = []
        self._task: Task | None = None
        self._trajectory: Trajectory | None = None
        self._turn = 0
        self._done = True

    # -- setup -------------------------------------------------------------------------------
    def _build_tools(self) -> list[Tool]:
        return spec_tools(self.env_spec)

    def system_prompt(self) -> str:
        """The system message ``reset`` puts first (see :func:`system_prompt_for`)."""
        return system_prompt_for(self.env_spec)

    @property
    def sandbox(self) -> Sandbox:
        if self._sandbox is None or not self._sandbox.alive:
            if self._sandbox is not None and self._owns_sandbox:
                self._sandbox.close()
            if self._sandbox_factory is not None:
                self._sandbox = self._sandbox_factory()
            else:
                from skillgym.sandbox import make_sandbox

                self._sandbox = make_sandbox(self.env_spec.sandbox)
            self._sandbox.start()
            self._owns_sandbox = True
        return self._sandbox

    # -- gymnasium API ---------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode: pick a task, reset the sandbox's workspace to the task's files,
        and put the skill's instructions and the task in front of the model.

        Args:
            seed: Seeds ``np_random`` (which task is drawn when none is named); recorded in
                the trajectory.
            options: ``task`` (a :class:`~skillgym.types.Task` or its dict) or ``task_id``
                (one of the task source's ids); without either, a task of ``split`` (the
                option, else the env's) is drawn with ``np_random``. ``policy_id`` names who
                plays the episode in its trajectory.

        Returns:
            observation: The chat so far: a ``system`` message (skill instructions and env
                notes; absent when there are none) and the ``user`` message with the task prompt.
            info: ``tools`` (OpenAI tool schemas), ``task_id``, ``task_metadata``, ``env_id``
                and ``split``.
        """
        super().reset(seed=seed)
        if options is not None and not isinstance(options, dict):
            raise TypeError(
                f"reset(options=...) takes a dict such as {{'task_id': 'ID'}} or None, got {type(options).__name__}"
            )
        options = options or {}
        self._task = self._pick_task(options)
        sandbox = self.sandbox
        sandbox.reset()
        sandbox.put_files(self._task.files)
        self._messages = []
        system = self.system_prompt()
        if system:
            self._messages.append({"role": "system", "content": system})
        self._messages.append({"role": "user", "content": self._task.prompt})
        self._turn = 0
        self._last_turn: list[Message] | None = None
        self._identical_turns = 0
        self._done = False
        spec = self.env_spec
        self._trajectory = Trajectory(
            env_id=spec.id,
            env_version=spec.version,
            task_id=self._task.id,
            skill_hash=seen_skill_hash(spec),
            policy_id=str(options.get("policy_id") or "unknown"),
            tools=self.tool_schemas,
            seed=seed,
            metadata={"split": self._task.split, "instruction_mode": spec.instruction_mode},
        )
        info = {
            "tools": copy.deepcopy(self.tool_schemas),
            "task_id": self._task.id,
            "task_metadata": copy.deepcopy(self._task.metadata),
            "env_id": spec.id,
            "split": self._task.split,
        }
        return copy.deepcopy(self._messages), info

    def _pick_task(self, options: dict[str, Any]) -> Task:
        if options.get("task") is not None:
            task = options["task"]
            return task if isinstance(task, Task) else Task.model_validate(task)
        source = self.env_spec.tasks
        if options.get("task_id") is not None:
            return source.get(str(options["task_id"]))
        split = options.get("split", self.split)
        tasks = source.tasks(split)
        if not tasks:
            raise ValueError(f"{self.env_spec.id}: the task source has no tasks in split {split!r}")
        return tasks[int(self.np_random.integers(len(tasks)))]

    def step(self, action: Any):
        """Take one assistant turn: run its tool calls in order in the sandbox, or grade its answer.

        Model output never raises: a call that cannot be parsed, names an unknown tool or has
        bad arguments comes back as a ``tool`` message saying precisely what was wrong (and is
        recorded in the trajectory's ``tool_errors``).

        Args:
            action: One assistant turn: raw model text (tool calls in ``<tool_call>{json}</tool_call>``
                markup) or an OpenAI assistant message dict with ``tool_calls``. A turn with no
                tool call, or a ``submit`` call, is the final answer.

        Returns:
            observation: The chat so far (the assistant turn and one ``tool`` message per call).
            reward: 0.0 until the final step; then the grader's score in [0, 1] (0.0 when truncated).
            terminated: The episode ended with an answer.
            truncated: The turn budget (``max_turns``) or token budget (``max_tokens``) ran out, or
                the last ``max_identical_turns`` turns were identical (stuck).
            info: ``turn``, ``tool_errors`` (this turn's), ``reward_components`` on the final
                step, ``truncation_reason`` when truncated.

        Raises:
            RuntimeError: The episode is over or was never started (call ``reset``).
            SandboxError: The sandbox broke and no fresh one could be started (not the model's doing).
        """
        if self._done or self._trajectory is None or self._task is None:
            raise RuntimeError("the episode is over (or was never started): call reset() first")
        self._turn += 1
        first_new = len(self._messages)
        started = time.perf_counter()
        parsed = parse_turn(
            action, call_id_prefix=f"call_{self._turn}", loose_string_calls=self.env_spec.loose_string_calls
        )
        broken = [c for c in parsed.calls if c.name is None or c.arguments is None]
        answer: str | None = None
        tool_messages: list[Message] = []
        errors: list[ToolError] = []
        repairs = list(parsed.repairs)

        if parsed.errors or broken:
            # The turn could not be read: record it as written (in a form every chat template
            # and provider accepts), run nothing, and say precisely what was wrong.
            message = _assistant_raw(action, parsed)
            self._messages.append(message)
            tool_messages.extend(_unreadable_turn_replies(self._turn, parsed, message))
            errors.extend(ToolError(turn=self._turn, tool=None, error=e) for e in parsed.errors)
            errors.extend(ToolError(turn=self._turn, tool=c.name, error=c.error) for c in broken if c.error)
        else:
            self._messages.append(assistant_message(parsed.content, parsed.reasoning, parsed.calls))
            if not parsed.calls:
                answer = parsed.content
            for call in parsed.calls:
                if answer is not None:
                    tool_messages.append(_tool_message(call, "Not run: the answer was already submitted in this turn."))
                    continue
                text, error, submitted = self._run_call(call)
                images = []
                if isinstance(text, ToolOutput):  # a tool that returned images with its text
                    text, images = text.text, text.images
                text, fixed = replace_lone_surrogates(text)
                if fixed:
                    repairs.append(f"output of {call.name}: {fixed} lone UTF-16 surrogate(s) replaced by U+FFFD")
                if error:
                    errors.append(ToolError(turn=self._turn, tool=call.name, error=error))
                if submitted is not None:
                    answer = submitted
                tool_messages.append(_tool_message(call, text, images))

        self._messages.extend(tool_messages)
        this_turn = _without_call_ids(self._messages[first_new:])
        self._identical_turns = self._identical_turns + 1 if this_turn == self._last_turn else 1
        self._last_turn = this_turn
        tool_seconds = time.perf_counter() - started
        traj = self._trajectory
        traj.timings.append(StepTiming(turn=self._turn, tool_seconds=round(tool_seconds, 6)))
        traj.tool_errors.extend(errors)
        if repairs:
            # The record holds what the model sent, but it must be storable as UTF-8: say what changed.
            traj.metadata.setdefault("repairs", []).extend({"turn": self._turn, "repair": r} for r in repairs)

        reward, terminated, truncated = 0.0, False, False
        info: dict[str, Any] = {"turn": self._turn, "tool_errors": [e.error for e in errors]}
        if repairs:
            info["repairs"] = repairs
        if answer is not None:
            terminated = True
            reward = self._grade(answer, info)
        elif self.env_spec.max_identical_turns and self._identical_turns >= self.env_spec.max_identical_turns:
            truncated = True
            info["truncation_reason"] = (
                f"stuck: the same turn met the same tool results {self._identical_turns} times in a row "
                f"(max_identical_turns={self.env_spec.max_identical_turns})"
            )
        elif self._turn >= self.env_spec.max_turns:
            truncated, info["truncation_reason"] = True, f"turn budget of {self.env_spec.max_turns} exhausted"
        elif self.token_counter(self._messages) >= self.env_spec.max_tokens:
            truncated, info["truncation_reason"] = True, f"token budget of {self.env_spec.max_tokens} exhausted"
        if truncated:
            info["reward_components"] = {}
            traj.reward = 0.0
            traj.metadata["truncation_reason"] = info["truncation_reason"]
        self._done = terminated or truncated
        traj.terminated, traj.truncated = terminated, truncated
        return copy.deepcopy(self._messages), reward, terminated, truncated, info

    def _run_call(self, call: ParsedCall) -> tuple[str | ToolOutput, str | None, str | None]:
        """Run one well-formed call. Returns (text for the model, or a :class:`ToolOutput` when the
        tool also returned images; error or None; submitted answer)."""
        assert call.name is not None and call.arguments is not None
        tool = self.tools.get(call.name)
        if tool is None:
            error = f"unknown tool {_clip(repr(call.name), 80)}; available tools: {', '.join(self.tools)}"
            return f"Error: {error}", error, None
        args, error = validate_arguments(call.name, call.arguments, tool.Args)
        if error:
            return f"Error: {error}", error, None
        # The sandbox as it is, not through the ``sandbox`` property: that would quietly swap a
        # dead one for an empty one, and the model would never hear its workspace was lost.
        sandbox = self._sandbox if self._sandbox is not None else self.sandbox
        if tool.ends_episode:
            return tool(sandbox, args), None, getattr(args, "answer", "")
        try:
            output = tool(sandbox, args)
        except OpError as exc:
            return f"Error: {exc}", str(exc), None
        except SandboxError as exc:
            # What the call did killed or hung the sandbox (``kill -9 $PPID``, a process that
            # holds the executor's pipe): the model's doing, so the episode goes on in a new one.
            error = self._replace_sandbox(call, exc)
            return f"Error: {error}", error, None
        if isinstance(output, ToolOutput):
            text, _ = truncate(output.text, self.env_spec.max_tool_output)
            return (ToolOutput(text=text, images=output.images) if output.images else text), None, None
        text, _ = truncate(output, self.env_spec.max_tool_output)
        return text, None, None

    def _replace_sandbox(self, call: ParsedCall, failure: SandboxError) -> str:
        """Swap a sandbox that died under ``call`` for a fresh one holding the task's files.

        Returns the error for the model. Starting the new sandbox is the machine's business:
        if that fails, its :class:`SandboxError` propagates (the episode cannot go on).
        """
        assert self._trajectory is not None and self._task is not None
        dead, self._sandbox = self._sandbox, None
        if dead is not None and self._owns_sandbox:
            try:
                dead.close()
            except Exception as exc:  # a dead sandbox that also fails to close must not hide the episode
                warnings.warn(f"closing a failed sandbox: {type(exc).__name__}: {exc}", stacklevel=3)
        reason = _clip(str(failure).replace(" Close this sandbox and start a new one.", "").strip(), 400)
        self.sandbox.put_files(self._task.files)  # the property starts the replacement
        self._trajectory.metadata.setdefault("sandbox_replaced", []).append(
            {"turn": self._turn, "tool": call.name, "error": reason}
        )
        return (
            f"the sandbox stopped working while {call.name} ran ({reason}). It was replaced by a fresh "
            "one: the workspace holds the task's starting files again and every process you started "
            "is gone. Do not signal the tool executor, and give long commands a short timeout."
        )

    def _grade(self, answer: str, info: dict[str, Any]) -> float:
        assert self._task is not None and self._trajectory is not None
        traj = self._trajectory
        traj.final_answer = answer
        # Graders see a bounded answer (graders.base.MAX_ANSWER_CHARS) so no matcher, judge
        # prompt or check can be made slow by a huge one; the record keeps the whole answer.
        graded, cut = answer[:MAX_ANSWER_CHARS], max(0, len(answer) - MAX_ANSWER_CHARS)
        extra = {"answer_truncated": {"answer_chars": len(answer), "graded_chars": MAX_ANSWER_CHARS}} if cut else {}
        try:
            grade = self.env_spec.grader.grade(self._task, graded, self._messages, self._sandbox)
        except Exception as exc:  # a grader (or a sandbox the episode broke) must not take an evaluation down
            where = "the sandbox failed while grading" if isinstance(exc, SandboxError) else "grader failed"
            message = f"{where} task {self._task.id!r}: {type(exc).__name__}: {_clip(str(exc), 2000)}"
            warnings.warn(message, stacklevel=2)
            info["reward_components"], info["grader_error"] = {}, message
            traj.reward, traj.grade_details = 0.0, {"grader_error": message, **extra}
            return 0.0
        info["reward_components"] = dict(grade.components)
        traj.reward, traj.reward_components = grade.score, dict(grade.components)
        traj.grade_details = {**grade.details, **extra}
        return grade.score

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        from skillgym.transcript import transcript_text

        return transcript_text(self._messages)

    def close(self) -> None:
        if self._sandbox is not None and self._owns_sandbox:
            self._sandbox.close()
            self._sandbox = None
        self._done = True
        super().close()

    # -- what the env records for its caller ---------------------------------------------
    def record_policy_turn(
        self,
        seconds: float | None,
        *,
        usage: dict[str, Any] | None = None,
        token_ids: list[int] | None = None,
        logprobs: list[float] | None = None,
    ) -> None:
        """Add the policy's side of the turn just stepped to the trajectory.

        The env times its own side of every turn in ``step``; the policy's side happens
        outside it, so whoever drives the episode (:func:`skillgym.episode.arun_episode`)
        hands it over here, right after ``step``. It lands on the turn the env just
        recorded (by turn number), so policy and env timings cannot drift apart.

        Args:
            seconds: Wall time of the policy's turn.
            usage: ``prompt_tokens`` and ``completion_tokens`` of the turn (added to the totals).
            token_ids: The turn's sampled token ids, when the policy gives them.
            logprobs: Their log-probabilities.
        """
        traj = self._trajectory
        if traj is None or self._turn == 0:
            raise RuntimeError("no turn to record: call reset() and step() first")
        timing = traj.timings[-1] if traj.timings and traj.timings[-1].turn == self._turn else None
        if timing is None:  # step() failed before timing its turn: record the policy's side anyway
            timing = StepTiming(turn=self._turn)
            traj.timings.append(timing)
        if seconds is not None:
            timing.policy_seconds = round(seconds, 6)
        if usage:
            traj.usage.prompt_tokens += int(usage.get("prompt_tokens") or 0)
            traj.usage.completion_tokens += int(usage.get("completion_tokens") or 0)
        if token_ids is not None:
            traj.token_ids = [*(traj.token_ids or []), list(token_ids)]
        if logprobs is not None:
            traj.logprobs = [*(traj.logprobs or []), list(logprobs)]

    def truncate(self, reason: str) -> None:
        """End the episode from outside (a driver's own step limit): the record says
        ``truncated`` and ``step`` refuses further turns until the next ``reset``.

        Args:
            reason: Why, kept in the trajectory's ``metadata["truncation_reason"]``.
        """
        if self._trajectory is None or self._done:
            return
        self._done = True
        self._trajectory.truncated = True
        self._trajectory.metadata["truncation_reason"] = reason

    # -- accessors -------------------------------------------------------------------------
    @property
    def task(self) -> Task | None:
        """The current episode's task (None before the first ``reset``)."""
        return self._task

    @property
    def trajectory(self) -> Trajectory:
        """The episode so far (a copy): messages, timings, errors, reward."""
        if self._trajectory is None:
            raise RuntimeError("no episode yet: call reset() first")
        # The chat lives in self._messages; the record takes a copy only when it is read, with
        # images as references (model_copy does not run the record's validators).
        messages = copy.deepcopy(strip_image_data(self._messages))
        return self._trajectory.model_copy(deep=True, update={"messages": messages})


def spec_tools(spec: EnvSpec) -> list[Tool]:
    """The tools an env made from ``spec`` offers, in order (``load_skill`` first where the
    skill is loaded on demand). Builds no sandbox: tools get one only when called."""
    tools = get_tools(spec.tools)
    if spec.host_tools:
        names = {t.name for t in tools}
        clash = [t.name for t in spec.host_tools if t.name in names]
        if clash:
            raise ValueError(f"{spec.id}: host tool(s) {clash} clash with built-in tools of the same name")
        # Before the first tool that ends the episode, so ``submit`` stays last.
        at = next((i for i, t in enumerate(tools) if t.ends_episode), len(tools))
        tools[at:at] = list(spec.host_tools)
    if spec.instruction_mode == "load_skill":
        if spec.skill is None:
            raise ValueError(f"{spec.id}: instruction_mode 'load_skill' needs a skill")
        tools.insert(0, LoadSkill(spec.skill))
    return tools


def system_prompt_for(spec: EnvSpec) -> str:
    """The system message of an env made from ``spec``: the skill's text (``system`` mode) or
    its name and description (``load_skill`` mode), then the env's own notes."""
    parts = []
    if spec.skill is not None and spec.instruction_mode == "system":
        parts.append(spec.skill.instructions.strip())
    elif spec.skill is not None and spec.instruction_mode == "load_skill":
        parts.append(
            f"You have a skill available: {spec.skill.name}: {spec.skill.description}\n"
            "Call load_skill to read its instructions when the task calls for it."
        )
    if spec.system_prompt:
        parts.append(spec.system_prompt.strip())
    return "\n\n".join(parts)


def seen_skill_hash(spec: EnvSpec) -> str | None:
    """The content hash of the skill text a model in this env can see: None when there is
    no skill or the instruction mode hides it (the ablation must not claim a skill)."""
    if spec.skill is None or spec.instruction_mode == "none":
        return None
    return spec.skill.content_hash


def _without_call_ids(messages: list[Message]) -> list[Message]:
    """A turn's messages minus the call ids, which are numbered by turn: equal for a repeated turn."""
    stripped = []
    for message in messages:
        message = {k: v for k, v in message.items() if k != "tool_call_id"}
        if message.get("tool_calls"):
            message["tool_calls"] = [{k: v for k, v in c.items() if k != "id"} for c in message["tool_calls"]]
        stripped.append(message)
    return stripped


def _assistant_raw(action: Any, parsed: ParsedTurn) -> Message:
    """The record of a turn that could not run: its text as written, its structured calls in
    OpenAI form with the arguments text as sent. Never the action object itself, which may hold
    anything (wrong types, cycles, a million levels of nesting)."""
    message: Message = {"role": "assistant", "content": parsed.source}
    if (
        isinstance(action, dict)
        and parsed.reasoning
        and isinstance(action.get("reasoning_content") or action.get("reasoning"), str)
    ):
        message["reasoning_content"] = parsed.reasoning
    if parsed.source_tool_calls:
        message["tool_calls"] = copy.deepcopy(parsed.source_tool_calls)
    return message


def _unreadable_turn_replies(turn: int, parsed: ParsedTurn, message: Message) -> list[Message]:
    """Tool messages answering a turn that could not run: one per recorded call id (providers
    reject a call left unanswered), else one; the first says everything that was wrong."""
    problems = [f"- {e}" for e in parsed.errors]
    problems += [f"- call {i + 1}: {c.error}" for i, c in enumerate(parsed.calls) if c.error]
    if parsed.errors:
        head = "Error: your turn could not be read, so nothing was run."
    else:
        runnable = sum(1 for c in parsed.calls if c.error is None)
        note = " The other calls in this turn were not run; send them again." if runnable else ""
        head = f"Error: your tool call could not be parsed, so nothing was run.{note}"
    text = head + "\n" + "\n".join(problems)
    ids = [c["id"] for c in message.get("tool_calls") or []]
    if not ids:
        return [{"role": "tool", "tool_call_id": f"call_{turn}_error", "content": text}]
    rest = "Not run: this turn could not be read (see the error above)."
    return [
        {"role": "tool", "tool_call_id": call_id, "content": text if i == 0 else rest} for i, call_id in enumerate(ids)
    ]


def _tool_message(call: ParsedCall, text: str, images: list | None = None) -> Message:
    message: Message = {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": text}
    if images:  # beside the text, which stays what a text-only model reads
        message["images"] = [image.model_dump(exclude_none=True) for image in images]
    return message


def _clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, for quoting model output in a message."""
    return text if len(text) <= limit else text[: limit - 3] + "..."
