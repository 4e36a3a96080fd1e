"""``orchestrator-v0``: an env whose model plans and delegates to subagents.

Its tools are ``list_subagents``, ``subagent(prompt, config)``, file tools on its workspace
(the shared workspace: subagents see it at ``/workspace/shared``) and ``submit``. Its tasks
and grader come from a task source: by default codebase-explorer-v0's held-out tasks posed
as orchestrator tasks and graded by codebase-explorer's grader.

    env = skillgym.make("orchestrator-v0", roster="roster.yaml", tasks="codebase-explorer-v0")
    trajectory = skillgym.run_episode(env, env.env_spec.expert())   # the scripted router

Every ``subagent`` call is a nested episode (see :mod:`.runner`); the calls of one assistant
turn start together before the turn's calls are answered in order, so they run concurrently.
Each call becomes a child of the orchestrator's trajectory, and ``env.trajectory.metadata``
carries the tree's :func:`~.tree.rollup` (tokens and cost per model, time, calls).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from skillgym.env import SkillEnv, spec_tools
from skillgym.graders.base import Grader
from skillgym.graders.config import TaskReferenceGrader
from skillgym.sandbox.base import Sandbox, SandboxConfig, SandboxError
from skillgym.sandbox.ops import OpError
from skillgym.spec import EnvSpec
from skillgym.tasks import TaskList, TaskSource, load_tasks_jsonl
from skillgym.toolcalls import ParsedCall, parse_turn, validate_arguments
from skillgym.tools.base import Tool
from skillgym.types import Grade, Message, Task, Trajectory

from .roster import Roster, RosterError, SubagentConfig, load_roster, parse_inline
from .runner import SHARED_DIR, CallHandle, CallResult, SubagentRunner, cached_spec, read_shared
from .tools import ListSubagents, SubagentArgs, SubagentTool
from .tree import rollup

__all__ = ["ENV_ID", "EXAMPLE_ROSTER", "OrchestratorEnv", "PosedTasks", "default_roster", "make_env", "make_spec"]

ENV_ID = "orchestrator-v0"
FILE_TOOLS = ["read_file", "write_file", "edit_file", "glob", "grep", "list_dir", "submit"]
SYSTEM_PROMPT = (
    "You are an orchestrator. Call list_subagents to see who can help, delegate work with "
    "subagent(prompt, config) (write a complete prompt: the subagent sees nothing else), and "
    "submit the final answer alone. Your workspace is shared with subagents: they see it at "
    f"/workspace/{SHARED_DIR}, and files they write there appear in your workspace."
)


EXAMPLE_ROSTER = Path(__file__).with_name("rosters") / "codebase-explorer.yaml"
"""The shipped example roster (codebase-explorer-v0 played by its scripted expert)."""


def default_roster(backend: str = "auto") -> Roster:
    """The example roster (:data:`EXAMPLE_ROSTER`), its subagents on sandbox ``backend``."""
    roster = load_roster(EXAMPLE_ROSTER)
    entries = [s.model_copy(update={"env_args": {**s.env_args, "backend": backend}}) for s in roster.subagents]
    return roster.model_copy(update={"subagents": entries})


class PosedTasks:
    """Another env's tasks posed as orchestrator tasks (built lazily: reading some task
    sources costs seconds).

    Each task keeps its prompt, reference and split; its metadata gains ``source_env`` and
    ``expected_subagent`` (the roster entry that plays that env, when there is one), so routing
    accuracy can be reported. :attr:`grader` grades with the source env's own grader.

    Args:
        env: The source env id (e.g. ``codebase-explorer-v0``).
        env_args: Its spec options.
        expected_subagent: The roster name that should take these tasks (None: unknown).
        limit: Keep only the first ``limit`` tasks of each split.
    """

    def __init__(
        self,
        env: str,
        env_args: dict[str, Any] | None = None,
        *,
        expected_subagent: str | None = None,
        limit: int | None = None,
    ) -> None:
        self.env = env
        self.env_args = dict(env_args or {})
        self.expected_subagent = expected_subagent
        self.limit = limit
        self._spec: EnvSpec | None = None
        self._lock = threading.Lock()
        self.grader = _SourceGrader(self)

    def spec(self) -> EnvSpec:
        with self._lock:
            if self._spec is None:
                self._spec = cached_spec(self.env, self.env_args)
            return self._spec

    def _pose(self, task: Task) -> Task:
        metadata = {**task.metadata, "source_env": self.env}
        if self.expected_subagent is not None:  # unknown is not "answer alone": routing skips such tasks
            metadata["expected_subagent"] = self.expected_subagent
        return task.model_copy(update={"metadata": metadata})

    def tasks(self, split: str) -> list[Task]:
        tasks = self.spec().tasks.tasks(split)
        return [self._pose(t) for t in tasks[: self.limit]]

    def get(self, task_id: str) -> Task:
        return self._pose(self.spec().tasks.get(task_id))


class _SourceGrader:
    def __init__(self, source: PosedTasks) -> None:
        self.source = source

    def grade(self, task: Task, answer: str, messages: list[Message], sandbox: Sandbox | None) -> Grade:
        return self.source.spec().grader.grade(task, answer, messages, sandbox)


def _task_source(
    tasks: Any, roster: Roster, grader: Grader | None, limit: int | None, env_args: dict[str, Any]
) -> tuple[TaskSource, Grader]:
    """(source, grader) from what ``make_spec(tasks=...)`` accepts."""
    if isinstance(tasks, PosedTasks):
        return tasks, grader or tasks.grader
    if isinstance(tasks, (str, Path)) and Path(tasks).suffix == ".jsonl":
        return load_tasks_jsonl(tasks), grader or TaskReferenceGrader()
    if isinstance(tasks, str):
        expected = next((s for s in roster.subagents if s.env == tasks), None)
        args = expected.env_args if expected is not None else env_args
        posed = PosedTasks(tasks, args, expected_subagent=expected.name if expected else None, limit=limit)
        return posed, grader or posed.grader
    if isinstance(tasks, Sequence):
        items = [t if isinstance(t, Task) else Task.model_validate(t) for t in tasks]
        return TaskList(items, name="orchestrator tasks"), grader or TaskReferenceGrader()
    if isinstance(tasks, TaskSource):
        if grader is None:
            raise ValueError("orchestrator-v0: tasks given as a task source need a grader= too")
        return tasks, grader
    raise TypeError(
        f"orchestrator-v0: tasks={tasks!r} is not an env id, a .jsonl path, a list of tasks or a task source"
    )


def make_spec(
    roster: Roster | dict[str, Any] | str | Path | None = None,
    tasks: Any = "codebase-explorer-v0",
    grader: Grader | None = None,
    *,
    backend: str = "auto",
    router: str = "route",
    task_limit: int | None = None,
    max_turns: int = 8,
    **spec_kwargs: Any,
) -> EnvSpec:
    """The EnvSpec of orchestrator-v0.

    Args:
        roster: The subagents (a :class:`Roster`, its dict or a YAML path); default
            :func:`default_roster`.
        tasks: A source env id whose tasks are posed as orchestrator tasks (graded by that
            env's grader), a JSONL task file, a list of tasks, or a task source (with ``grader``).
        grader: Overrides the grader that goes with ``tasks``.
        backend: Sandbox backend of the orchestrator's own workspace.
        router: What the ``expert`` policy spec plays: ``route`` (the scripted router) or
            ``none`` (it answers alone, never delegating).
        task_limit: Keep the first N tasks of each split (posed tasks only).
        max_turns: Orchestrator turns.
        **spec_kwargs: Other :class:`EnvSpec` fields.

    Returns:
        The spec; ``metadata["roster"]`` holds the roster.
    """
    from .router import ScriptedRouter

    parsed = load_roster(roster) if roster is not None else default_roster(backend)
    if router not in ("route", "none"):
        raise ValueError(f"orchestrator-v0: router={router!r}; use 'route' or 'none'")
    source, chosen_grader = _task_source(tasks, parsed, grader, task_limit, {"backend": backend})
    delegate = router == "route"
    return EnvSpec(
        id=ENV_ID,
        description="Orchestrator: plan, delegate to subagents with subagent(prompt, config), answer.",
        tools=list(FILE_TOOLS),
        sandbox=SandboxConfig(backend=backend),
        tasks=source,
        grader=chosen_grader,
        system_prompt=SYSTEM_PROMPT,
        max_turns=max_turns,
        expert=lambda: ScriptedRouter(delegate=delegate),
        metadata={"roster": parsed.model_dump(mode="json"), "router": router},
        **spec_kwargs,
    )


def make_env(**kwargs: Any) -> OrchestratorEnv:
    """``skillgym.make("orchestrator-v0", ...)``: spec options as for :func:`make_spec`, env
    options as for :class:`~skillgym.env.SkillEnv`."""
    env_keys = {"split", "sandbox", "sandbox_factory", "render_mode", "token_counter"}
    env_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in env_keys and not isinstance(kwargs[k], dict)}
    return OrchestratorEnv(make_spec(**kwargs), **env_kwargs)


class OrchestratorEnv(SkillEnv):
    """A :class:`SkillEnv` with host-side ``subagent`` and ``list_subagents`` tools.

    Args:
        env_spec: An orchestrator spec (:func:`make_spec`); its ``metadata["roster"]`` is the roster.
        roster: Overrides the spec's roster.
        **kwargs: :class:`SkillEnv` options.
    """

    def __init__(
        self, env_spec: EnvSpec, *, roster: Roster | dict[str, Any] | str | Path | None = None, **kwargs: Any
    ) -> None:
        source = roster if roster is not None else env_spec.metadata.get("roster")
        self.roster = load_roster(source) if source is not None else default_roster()
        self.runner = SubagentRunner()
        # Calls started ahead for the turn being stepped, by their position in the turn (ids
        # need not be unique in model output), and how many calls the step has run so far.
        self._pending: dict[int, tuple[str, CallHandle, list[str]]] = {}
        self._call_seq = 0
        super().__init__(env_spec, **kwargs)

    def _build_tools(self) -> list[Tool]:
        return [ListSubagents(self), SubagentTool(self), *spec_tools(self.env_spec)]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        observation, info = super().reset(seed=seed, options=options)
        assert self._trajectory is not None and self._task is not None
        if "expected_subagent" in self._task.metadata:
            self._trajectory.metadata["expected_subagent"] = self._task.metadata["expected_subagent"]
        return observation, info

    # -- concurrency: start every subagent call of a turn before answering them in order -----
    def step(self, action: Any):
        self._call_seq = 0
        if not self._done and self._trajectory is not None:
            self._pending = self._start_turn_calls(action)
        try:
            return super().step(action)
        finally:
            leftover, self._pending = self._pending, {}
            for _, handle, _ in leftover.values():  # never asked for (the step broke): let them end
                self.runner.finish(handle)

    def _start_turn_calls(self, action: Any) -> dict[int, tuple[str, CallHandle, list[str]]]:
        try:
            parsed = parse_turn(action, call_id_prefix=f"call_{self._turn + 1}")
        except Exception:  # the core step reports unreadable turns; nothing to start here
            return {}
        if parsed.errors or any(c.name is None or c.arguments is None for c in parsed.calls):
            return {}
        started: dict[int, tuple[str, CallHandle, list[str]]] = {}
        shared: tuple[dict[str, str], list[str]] | None = None
        for position, call in enumerate(parsed.calls):
            tool = self.tools.get(call.name or "")
            if tool is not None and tool.ends_episode:
                break  # calls after a submit are not run (SkillEnv.step)
            if call.name != SubagentTool.name:
                continue
            args, error = validate_arguments(call.name, call.arguments or {}, SubagentArgs)
            if error:
                continue
            try:
                entry = self.resolve(args.config)
            except (KeyError, RosterError):
                continue  # answered when the call is run, with the error
            if shared is None:
                shared = self._shared_snapshot()
            started[position] = (call.id, self.runner.start(entry, args.prompt, shared[0]), shared[1])
        return started

    def _run_call(self, call: ParsedCall) -> tuple[str, str | None, str | None]:
        # SkillEnv.step runs a readable turn's calls in order, up to a submit: the n-th call run
        # here is the n-th of the turn, the position it was started under.
        position, self._call_seq = self._call_seq, self._call_seq + 1
        pending = self._pending.get(position)
        if pending is None or pending[0] != call.id or call.name != SubagentTool.name:
            return super()._run_call(call)
        del self._pending[position]
        _, handle, notes = pending
        return self._complete(handle, notes, call.id), None, None

    # -- used by the tools -------------------------------------------------------------------
    def resolve(self, config: str | dict[str, Any]) -> SubagentConfig:
        """The roster entry (or inline definition) a call's ``config`` names."""
        if isinstance(config, dict):
            if not self.roster.allow_inline:
                raise RosterError(
                    "inline subagent definitions are not allowed by this roster (allow_inline: false); "
                    f"pass one of these names as config: {', '.join(self.roster.names) or 'none'}"
                )
            return parse_inline(config)
        return self.roster.get(config)

    def run_subagent_now(self, args: SubagentArgs, sandbox: Sandbox) -> str:
        """Run one call to the end (a call that ``step`` did not start ahead)."""
        try:
            entry = self.resolve(args.config)
        except KeyError as exc:
            raise OpError(str(exc.args[0])) from None
        except RosterError as exc:
            raise OpError(str(exc)) from None
        files, notes = self._shared_snapshot()
        return self._complete(self.runner.start(entry, args.prompt, files), notes, None)

    def _shared_snapshot(self) -> tuple[dict[str, str], list[str]]:
        sandbox = self._sandbox if self._sandbox is not None else self.sandbox
        try:
            return read_shared(sandbox)
        except SandboxError as exc:
            return {}, [f"note: the shared workspace could not be read ({exc}); the subagent starts without it"]

    def _complete(self, handle: CallHandle, notes: list[str], call_id: str | None) -> str:
        result: CallResult = self.runner.finish(handle)
        if result.file_contents:
            sandbox = self._sandbox if self._sandbox is not None else self.sandbox
            try:
                sandbox.put_files(result.file_contents)
            except (OpError, SandboxError) as exc:
                result.notes.append(f"note: the files could not be copied into your workspace: {exc}")
        if result.child is not None and self._trajectory is not None:
            result.child.metadata["call_id"] = call_id
            result.child.metadata["turn"] = self._turn
            self._trajectory.children.append(result.child)
        result.notes[:0] = notes
        return result.tool_text()

    # -- record --------------------------------------------------------------------------------
    @property
    def trajectory(self) -> Trajectory:
        """The episode so far, with ``metadata["rollup"]`` (see :func:`~.tree.rollup`)."""
        record = super().trajectory
        record.metadata["rollup"] = rollup(record, self.roster.orchestrator_prices).model_dump()
        return record

    def close(self) -> None:
        self.runner.close()
        super().close()
