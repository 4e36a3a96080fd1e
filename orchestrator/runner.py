"""Running subagent calls: one nested episode per call, through the core episode driver.

A :class:`SubagentRunner` belongs to one orchestrator env. ``start(entry, prompt, shared)``
begins a call and returns at once; ``finish(handle)`` waits for it and gives a
:class:`CallResult`: the compact answer the orchestrator reads, the files the subagent wrote
into the shared workspace, a one-line status, and the child trajectory. Nothing a subagent
does raises out of ``finish``: a policy that raises, an episode that hangs past its timeout,
a model server that is down or an answer of a megabyte all come back as a status line.

Where the work happens. Every call is a coroutine (:func:`skillgym.episode.arun_episode`) on
one event loop that lives in a daemon thread for the whole process, so several calls made in
one assistant turn run concurrently, and 32 orchestrator episodes x 4 calls still share one
loop. Each running call holds a *slot*: an env (its own sandbox) and a policy, plus a
one-thread executor where that env's blocking work runs. An in-process model (``hf:``) is
loaded once per process and shared by every slot that names it, so concurrent calls batch. A slot whose call ended cleanly goes
back to an idle list (the next call reuses its sandbox: ``reset`` empties the workspace); a
slot whose call timed out or failed is closed on its own executor, i.e. only after any env
call still in flight has returned, so a cancelled episode can never start a fresh sandbox
behind our back. :meth:`SubagentRunner.close` waits for those closings.

The shared workspace. The orchestrator's workspace is the shared workspace. A subagent sees
a copy of it at ``/workspace/shared`` (:data:`SHARED_DIR`) when its call starts; the files it
creates or changes there are copied back into the orchestrator's workspace when the call
ends, and their paths are reported. Copies, not a bind mount, so it works the same on every
sandbox backend and concurrent calls cannot see each other's half-written files.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import os
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skillgym.env import SkillEnv, approx_tokens
from skillgym.episode import EpisodeState, arun_episode
from skillgym.graders.base import Grader
from skillgym.policies.base import Policy
from skillgym.policies.spec import make_policy, parse_policy_spec
from skillgym.registry import make_spec
from skillgym.sandbox.base import Sandbox
from skillgym.sandbox.ops import VIRTUAL_ROOT, OpError
from skillgym.spec import ENV_ID_RE, EnvSpec
from skillgym.types import Grade, Message, Task, Trajectory, Usage

from .roster import SubagentConfig

__all__ = ["SHARED_DIR", "CallResult", "SubagentRunner", "cached_spec", "read_shared", "subagent_spec"]

SHARED_DIR = "shared"
"""Where a subagent sees the orchestrator's shared workspace: ``/workspace/shared``."""
MAX_SHARED_FILES = 200
MAX_SHARED_BYTES = 4_000_000  # copied into one call, in total
_ERROR_CHARS = 300
START_TIMEOUT_S = 900.0
"""Longest wait for a subagent's env and policy to be built (a spec that reads a codebase, a
model loaded in process); not part of the call's ``timeout_s``."""


class SubagentStartError(RuntimeError):
    """The subagent's env or policy could not be made ready in time."""


@dataclass
class CallResult:
    """What one subagent call gives back.

    Attributes:
        status: ``ok``, ``truncated``, ``timeout`` or ``error: ...`` (one line).
        answer: The final answer (``submit`` text or last message), cut to the entry's
            ``max_answer_chars``.
        answer_chars: Length of the whole answer (more than ``len(answer)`` when cut).
        files: Shared-workspace paths the subagent created or changed (relative to it).
        file_contents: Their contents, to be copied into the orchestrator's workspace.
        child: The nested episode's trajectory (its ``metadata`` holds the call's accounting).
        notes: Extra lines for the tool message (a cut answer, files that were not copied).
    """

    status: str
    answer: str = ""
    answer_chars: int = 0
    files: list[str] = field(default_factory=list)
    file_contents: dict[str, str] = field(default_factory=dict)
    child: Trajectory | None = None
    notes: list[str] = field(default_factory=list)

    def tool_text(self) -> str:
        """The tool message the orchestrator reads: status, files, answer."""
        lines = [f"status: {self.status}"]
        if self.files:
            lines.append("files: " + ", ".join(self.files))
        lines += self.notes
        lines.append("answer:" + (f"\n{self.answer}" if self.answer else " (none)"))
        return "\n".join(lines)


# -- the process-wide loop ------------------------------------------------------------------------

_LOOP: asyncio.AbstractEventLoop | None = None
_LOOP_PID = 0
_LOOP_LOCK = threading.Lock()


def _loop() -> asyncio.AbstractEventLoop:
    """The event loop every subagent call runs on (started once, in a daemon thread)."""
    global _LOOP, _LOOP_PID
    with _LOOP_LOCK:
        # A forked child inherits the loop object but not the thread that runs it: start its own.
        if _LOOP is None or _LOOP.is_closed() or _LOOP_PID != os.getpid():
            loop = asyncio.new_event_loop()
            # Synchronous policies (the expert, in-process models) run their turns in the
            # loop's default executor: the default size (CPUs + 4) would cap concurrency.
            loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(256, thread_name_prefix="subagent-act"))
            threading.Thread(target=loop.run_forever, name="subagent-loop", daemon=True).start()
            _LOOP, _LOOP_PID = loop, os.getpid()
        return _LOOP


# -- specs ----------------------------------------------------------------------------------------

_SPECS: dict[str, EnvSpec] = {}
_SPECS_LOCK = threading.Lock()


def cached_spec(env: str, env_args: dict[str, Any] | None = None) -> EnvSpec:
    """``make_spec(env, **env_args)`` built once per process (some spec factories read a whole
    codebase); ``env`` may also be a skill folder, ``SKILL.md`` or agent ``.md`` path.

    Args:
        env: A registered id, ``skill:NAME``, ``module:function``, or a path.
        env_args: The spec factory's options.

    Returns:
        The shared spec: copy it (``model_copy``) before changing it.
    """
    env_args = dict(env_args or {})
    key = f"{env}|{sorted(env_args.items())!r}"
    with _SPECS_LOCK:
        spec = _SPECS.get(key)
    if spec is None:
        spec = _build_spec(env, env_args)
        with _SPECS_LOCK:
            spec = _SPECS.setdefault(key, spec)
    return spec


def subagent_spec(entry: SubagentConfig) -> EnvSpec:
    """The env spec of a roster entry, with its limits applied and its grader asked only
    about the env's own tasks."""
    spec = cached_spec(entry.env, entry.env_args)
    update: dict[str, Any] = {"grader": _KnownOnly(spec.grader)}
    if entry.limits.max_turns is not None:
        update["max_turns"] = entry.limits.max_turns
    if entry.limits.max_tokens is not None:
        update["max_tokens"] = entry.limits.max_tokens
    return spec.model_copy(update=update)


def _build_spec(env: str, env_args: dict[str, Any]) -> EnvSpec:
    path = Path(env).expanduser()
    if ("/" in env or env.endswith(".md")) and path.exists():
        from skillgym.compiler.build import spec_from_skill

        try:
            return spec_from_skill(path, **env_args)
        except (FileNotFoundError, ValueError):
            if "tasks" in env_args:
                raise
            # A skill without a task file still makes a subagent: its tasks are the prompts.
            return spec_from_skill(path, tasks=[], **env_args)
    return make_spec(env, **env_args)


class _KnownOnly:
    """The subagent env's grader, asked only about its own tasks: a prompt the orchestrator
    wrote has no reference to grade against (the call's reward is then None, not 0)."""

    def __init__(self, inner: Grader) -> None:
        self.inner = inner

    def grade(self, task: Task, answer: str, messages: list[Message], sandbox: Sandbox | None) -> Grade:
        if task.metadata.get("ungraded"):
            return Grade(score=0.0, details={"ungraded": True})
        return self.inner.grade(task, answer, messages, sandbox)


class _KnownTasks:
    """Finds a task of the subagent's own task source whose prompt is exactly the call's
    prompt (built lazily, once per spec): such a call can be graded."""

    def __init__(self) -> None:
        self._index: dict[int, dict[str, Task]] = {}
        self._lock = threading.Lock()

    def find(self, spec: EnvSpec, prompt: str) -> Task | None:
        with self._lock:
            index = self._index.get(id(spec.tasks))
            if index is None:
                index = {}
                for split in ("train", "validation", "test"):
                    try:
                        tasks = spec.tasks.tasks(split)
                    except (ValueError, KeyError):
                        continue
                    for task in tasks:
                        index.setdefault(task.prompt.strip(), task)
                self._index[id(spec.tasks)] = index
        return index.get(prompt.strip())


_KNOWN = _KnownTasks()


# -- slots ----------------------------------------------------------------------------------------


class _SharedModels:
    """In-process models (``hf:`` specs), loaded once per process and shared by every slot that
    names them, counted by users and closed when the last one goes.

    One model per slot would load a copy per concurrent call (and per orchestrator env), and
    the copies could not batch; one shared :class:`~skillgym.policies.hf_policy.HFPolicy`
    batches the turns of every call in flight, as a rollout worker's shared policy does.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[str, tuple[Policy, int]] = {}

    @staticmethod
    def shares(spec: str) -> bool:
        return parse_policy_spec(spec).kind == "hf"

    def acquire(self, spec: str, env: SkillEnv) -> Policy:
        with self._lock:  # a second caller waits for the first one's load instead of loading again
            policy, users = self._models.get(spec) or (make_policy(spec, env), 0)
            self._models[spec] = (policy, users + 1)
            return policy

    def release(self, spec: str) -> None:
        with self._lock:
            policy, users = self._models[spec]
            if users > 1:
                self._models[spec] = (policy, users - 1)
                return
            del self._models[spec]
        policy.close()


_SHARED_MODELS = _SharedModels()


@dataclass
class _Slot:
    env: SkillEnv
    policy: Policy
    executor: concurrent.futures.ThreadPoolExecutor
    shared_spec: str | None = None  # set when the policy is a shared in-process model

    def close(self) -> None:
        """Release the policy's connections and the env's sandbox (never on the subagent loop's
        own thread: an async policy's connections are closed on that loop, and we wait)."""
        aclose = getattr(self.policy, "aclose", None)
        if aclose is not None:
            try:
                asyncio.run_coroutine_threadsafe(aclose(), _loop()).result(timeout=10)
            except Exception:  # a session that will not close must not keep the sandbox alive
                pass
        release = (lambda: _SHARED_MODELS.release(self.shared_spec)) if self.shared_spec else self.policy.close
        for closer in (release, self.env.close):
            try:
                closer()
            except Exception:  # closing must go on: a second resource may still need releasing
                pass


@dataclass
class CallHandle:
    """A started call: wait for it with :meth:`SubagentRunner.finish`."""

    entry: SubagentConfig
    prompt: str
    future: concurrent.futures.Future
    started: float


class SubagentRunner:
    """Runs the subagent calls of one orchestrator env (see the module docstring).

    Args:
        env_kwargs: :class:`SkillEnv` options for every subagent env (e.g. ``token_counter``).
    """

    def __init__(self, env_kwargs: dict[str, Any] | None = None) -> None:
        self.env_kwargs = dict(env_kwargs or {})
        self._idle: dict[str, list[_Slot]] = {}
        self._lock = threading.Lock()
        self._closing: list[concurrent.futures.Future] = []
        self._closed = False

    # -- public ------------------------------------------------------------------------------
    def start(self, entry: SubagentConfig, prompt: str, shared: dict[str, str]) -> CallHandle:
        """Begin a call; returns at once (the episode runs on the subagent loop)."""
        future = asyncio.run_coroutine_threadsafe(self._call(entry, prompt, shared), _loop())
        return CallHandle(entry=entry, prompt=prompt, future=future, started=time.perf_counter())

    def finish(self, handle: CallHandle) -> CallResult:
        """Wait for a call and return its result; never raises."""
        try:
            # No timeout here: the coroutine bounds itself (START_TIMEOUT_S, then timeout_s).
            return handle.future.result()
        except Exception as exc:  # the loop itself failed: still an answer, not a crash
            return CallResult(status=_error_status("the subagent runner failed", exc))

    def call(self, entry: SubagentConfig, prompt: str, shared: dict[str, str] | None = None) -> CallResult:
        """``finish(start(...))``: one call, waited for."""
        return self.finish(self.start(entry, prompt, shared or {}))

    def close(self, timeout: float = 60.0) -> None:
        """Close every idle slot and wait (up to ``timeout`` s) for failed slots to close."""
        self._closed = True
        with self._lock:
            idle = [slot for slots in self._idle.values() for slot in slots]
            self._idle.clear()
            closing, self._closing = self._closing, []
        for slot in idle:
            slot.close()
            slot.executor.shutdown(wait=False)
        concurrent.futures.wait(closing, timeout=timeout)
        self._closed = False  # an env may be reset after close (Gymnasium allows it): slots are made anew

    # -- one call ----------------------------------------------------------------------------
    async def _call(self, entry: SubagentConfig, prompt: str, shared: dict[str, str]) -> CallResult:
        started = time.perf_counter()
        slot: _Slot | None = None
        state = EpisodeState()
        spec_id = entry.env
        task: Task | None = None
        try:
            slot = await self._acquire(entry)
            spec = slot.env.env_spec
            spec_id = spec.id
            task = _task_for(spec, prompt, shared)
            episode = arun_episode(slot.env, slot.policy, task=task, executor=slot.executor, state=state)
            trajectory = await asyncio.wait_for(episode, timeout=entry.limits.timeout_s)
            result = await self._finished(entry, slot, trajectory, graded=not task.metadata.get("ungraded"))
        except TimeoutError:
            limit = entry.limits.timeout_s
            result = self._failed(entry, slot, state, spec_id, task, f"timeout after {limit:g} s", status="timeout")
            result.notes.append(
                f"note: stopped after its timeout of {limit:g} s (limits.timeout_s) "
                f"before it answered ({state.turns} turns done)"
            )
        except Exception as exc:
            result = self._failed(
                entry,
                slot,
                state,
                spec_id,
                task,
                _error_status("", exc),
                status=_error_status("", exc),
                trace=traceback.format_exc(),
            )
        assert result.child is not None
        _account(result.child, entry, time.perf_counter() - started, result.status, prompt)
        return result

    async def _finished(
        self, entry: SubagentConfig, slot: _Slot, trajectory: Trajectory, *, graded: bool
    ) -> CallResult:
        status = "truncated" if trajectory.truncated else "ok"
        answer = trajectory.final_answer
        if answer is None:  # truncated: the last thing it said is all there is
            answer = next(
                (str(m.get("content") or "") for m in reversed(trajectory.messages) if m.get("role") == "assistant"), ""
            )
        loop = asyncio.get_running_loop()
        files, contents, notes = await loop.run_in_executor(slot.executor, _collect_shared, slot.env)
        trajectory.metadata["graded"] = graded
        if not graded:  # a prompt of the orchestrator's own: nothing to grade it against
            trajectory.reward, trajectory.reward_components, trajectory.grade_details = None, {}, {}
        limit = entry.limits.max_answer_chars
        result = CallResult(
            status=status,
            answer=answer[:limit],
            answer_chars=len(answer),
            files=files,
            file_contents=contents,
            child=trajectory,
            notes=notes,
        )
        if len(answer) > limit:
            result.notes.append(f"note: the answer was cut to its first {limit:,} of {len(answer):,} characters")
        self._release(entry, slot)
        return result

    def _failed(
        self,
        entry: SubagentConfig,
        slot: _Slot | None,
        state: EpisodeState,
        spec_id: str,
        task: Task | None,
        error: str,
        *,
        status: str,
        trace: str | None = None,
    ) -> CallResult:
        partial = None
        if slot is not None and state.reset_done:
            try:
                partial = slot.env.trajectory
            except Exception:
                partial = None
        match = ENV_ID_RE.match(spec_id)
        child = Trajectory.failed(
            error,
            env_id=spec_id if match else "subagent-v0",
            env_version=int(match["version"]) if match else 0,
            task_id=task.id if task is not None else "subagent",
            policy_id=entry.policy,
            partial=partial,
            metadata={"traceback": trace} if trace else None,
        )
        if slot is not None:
            self._discard(slot)
        return CallResult(status=status, child=child)

    # -- slots -------------------------------------------------------------------------------
    async def _acquire(self, entry: SubagentConfig) -> _Slot:
        key = _slot_key(entry)
        with self._lock:
            idle = self._idle.get(key)
            if idle:
                return idle.pop()
        executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"subagent-{entry.name}")

        def build() -> _Slot:
            env = SkillEnv(subagent_spec(entry), **self.env_kwargs)
            try:
                env.sandbox  # noqa: B018 - start it now: a cold sandbox start is not the episode's time
                if _SHARED_MODELS.shares(entry.policy):
                    policy = _SHARED_MODELS.acquire(entry.policy, env)
                    return _Slot(env=env, policy=policy, executor=executor, shared_spec=entry.policy)
                return _Slot(env=env, policy=make_policy(entry.policy, env), executor=executor)
            except Exception:
                env.close()
                raise

        future = executor.submit(build)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout=START_TIMEOUT_S)
        except BaseException as exc:
            # A build still running when we gave up finishes on its own: close what it made.
            future.add_done_callback(_close_built)
            executor.shutdown(wait=False)
            if isinstance(exc, TimeoutError):
                raise SubagentStartError(
                    f"the subagent's env and policy were not ready after {START_TIMEOUT_S:g} s "
                    f"(env {entry.env!r}, policy {entry.policy!r})"
                ) from None
            raise

    def _release(self, entry: SubagentConfig, slot: _Slot) -> None:
        with self._lock:
            if not self._closed:
                self._idle.setdefault(_slot_key(entry), []).append(slot)
                return
        self._discard(slot)

    def _discard(self, slot: _Slot) -> None:
        """Close a slot after whatever env call is still running on its executor."""
        future = slot.executor.submit(slot.close)
        slot.executor.shutdown(wait=False)
        with self._lock:
            self._closing = [f for f in self._closing if not f.done()] + [future]


def _close_built(future: concurrent.futures.Future) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().close()


def _slot_key(entry: SubagentConfig) -> str:
    return entry.model_dump_json(include={"env", "env_args", "policy", "limits"})


def _task_for(spec: EnvSpec, prompt: str, shared: dict[str, str]) -> Task:
    """The nested episode's task: the subagent env's own task when the prompt is one of them
    (it can be graded), else a task made of the prompt alone (no gold answer, not graded)."""
    files = {f"{SHARED_DIR}/{path}": text for path, text in shared.items()}
    known = _KNOWN.find(spec, prompt)
    if known is not None:
        return known.model_copy(
            update={"files": {**known.files, **files}, "metadata": {**known.metadata, "posed_by": "orchestrator"}}
        )
    digest = hashlib.sha256(prompt.encode("utf-8", "replace")).hexdigest()[:12]
    return Task(
        id=f"call-{digest}",
        prompt=prompt,
        files=files,
        split="test",
        metadata={"posed_by": "orchestrator", "ungraded": True},
    )


def _collect_shared(env: SkillEnv) -> tuple[list[str], dict[str, str], list[str]]:
    """Files the subagent created or changed under ``shared/`` (the task's seed files are the
    snapshot it started from)."""
    task = env.task
    seeded = {
        p.removeprefix(f"{SHARED_DIR}/"): t
        for p, t in (task.files if task else {}).items()
        if p.startswith(f"{SHARED_DIR}/")
    }
    try:
        listing = env.sandbox.call("glob", pattern="**/*", path=SHARED_DIR)
    except OpError:
        return [], {}, []  # no shared folder: nothing written
    notes: list[str] = []
    changed: dict[str, str] = {}
    total = 0
    for shown in listing["matches"]:
        rel = _relative(shown).removeprefix(f"{SHARED_DIR}/")
        try:
            text = env.sandbox.call("read_text", path=f"{SHARED_DIR}/{rel}")["content"]
        except OpError as exc:
            notes.append(f"note: {rel} was not copied back: {exc}")
            continue
        if seeded.get(rel) == text:
            continue
        total += len(text)
        if total > MAX_SHARED_BYTES or len(changed) >= MAX_SHARED_FILES:
            notes.append(f"note: {rel} was not copied back: the call's files exceed the shared-workspace limits")
            continue
        changed[rel] = text
    if listing.get("truncated"):
        notes.append("note: the subagent wrote more files than could be listed; only some were copied back")
    return sorted(changed), changed, notes


def read_shared(sandbox: Sandbox) -> tuple[dict[str, str], list[str]]:
    """The orchestrator's workspace as the snapshot a subagent call starts from."""
    try:
        listing = sandbox.call("glob", pattern="**/*", path=".")
    except OpError:
        return {}, []
    files: dict[str, str] = {}
    notes: list[str] = []
    total = 0
    for path in (_relative(p) for p in listing["matches"][:MAX_SHARED_FILES]):
        try:
            text = sandbox.call("read_text", path=path)["content"]
        except OpError as exc:
            notes.append(f"note: {path} is not visible to the subagent: {exc}")
            continue
        total += len(text)
        if total > MAX_SHARED_BYTES:
            notes.append(
                f"note: {path} is not visible to the subagent: the shared workspace exceeds {MAX_SHARED_BYTES:,} bytes"
            )
            continue
        files[path] = text
    return files, notes


def _relative(shown: str) -> str:
    """A path as ops print it (``/workspace/a/b``) relative to the workspace (``a/b``)."""
    return shown.removeprefix(VIRTUAL_ROOT).lstrip("/")


def estimate_usage(messages: list[Message]) -> Usage:
    """Tokens of an episode whose policy reported none (a scripted expert): per assistant turn,
    the chat before it as input and the turn itself as output (about four characters a token)."""
    usage = Usage()
    for index, message in enumerate(messages):
        if message.get("role") == "assistant":
            usage.prompt_tokens += approx_tokens(messages[:index])
            usage.completion_tokens += approx_tokens([message])
    return usage


def _account(child: Trajectory, entry: SubagentConfig, seconds: float, status: str, prompt: str) -> None:
    """Write the call's accounting into the child's metadata (the roll-up reads it)."""
    source = "policy"
    if child.usage.total_tokens == 0 and child.messages:
        child.usage = estimate_usage(child.messages)
        source = "estimated"
    child.metadata.update(
        {
            "subagent": entry.name,
            "model": entry.model,
            "call_status": status,
            "latency_s": round(seconds, 6),
            "cost_usd": entry.prices.cost(child.usage),
            "usage_source": source,
            "prompt": prompt,
            "graded": bool(child.metadata.get("graded")) and child.reward is not None,
        }
    )


def _error_status(where: str, exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    if len(text) > _ERROR_CHARS:
        text = text[: _ERROR_CHARS - 3] + "..."
    head = f"{where}: " if where else ""
    return f"error: {head}{type(exc).__name__}: {text}"
