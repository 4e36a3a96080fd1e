"""The offline suites: tasks of the built-in envs posed to orchestrator-v0, graded by each env's own grader.

* ``hotpotqa`` — web-research-v0's test split (HotpotQA distractor dev, CC BY-SA 4.0); scored
  by the env's grader, whose components hold HotpotQA's exact match and token F1.
* ``codebase-qa`` — codebase-explorer questions over an installed pure-Python package the
  students never saw (their training codebase is the standard-library subset); which package
  is chosen by :func:`choose_codebase` and recorded with its version and content hash.
* ``frontend`` — frontend-design-v0's test briefs. The page lives in the subagent's sandbox,
  where the browser is, so the episode's score is the grade the env gave the page of the call
  that took the brief (see :class:`DelegatedGrader`), provided the orchestrator's answer names
  that page.
* ``mixed`` — the three, shuffled: the orchestrator must pick the right subagent; each task
  carries ``expected_subagent`` for routing accuracy and is graded by its source's grader.

Every suite is an orchestrator-v0 env built by :func:`make_bench_env` (a ``module:function``
env factory, so the rollout engine can run, store and resume it).
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import random
from pathlib import Path
from typing import Any

from skillgym.orchestrator import OrchestratorEnv, PosedTasks, Roster, ScriptedRouter, load_roster, make_spec
from skillgym.sandbox.base import Sandbox
from skillgym.tasks import TaskList
from skillgym.types import Grade, Message, Task

__all__ = [
    "HELD_OUT_PACKAGES",
    "OFFLINE_SUITES",
    "SOURCE_ENVS",
    "DelegatedGrader",
    "MixedGrader",
    "choose_codebase",
    "expected_names",
    "make_bench_env",
    "suite_tasks",
]

SOURCE_ENVS = {
    "hotpotqa": "web-research-v0",
    "codebase-qa": "codebase-explorer-v0",
    "frontend": "frontend-design-v0",
}
OFFLINE_SUITES = (*SOURCE_ENVS, "mixed")
HELD_OUT_PACKAGES = ("jinja2", "click", "rich", "packaging", "yaml")
"""Pure-Python packages tried in order for ``codebase-qa``: the first one installed is used."""


def choose_codebase(preferred: str | None = None) -> dict[str, Any]:
    """The held-out codebase for ``codebase-qa``: an installed pure-Python package.

    Args:
        preferred: A package (import name) or a folder; None: the first of
            :data:`HELD_OUT_PACKAGES` that is installed.

    Returns:
        ``{"name", "version", "path"}`` (recorded in the run's ``bench.json``).

    Raises:
        ValueError: nothing usable is installed, or ``preferred`` is neither a package nor a folder.
    """
    candidates = [preferred] if preferred else list(HELD_OUT_PACKAGES)
    for name in candidates:
        folder = Path(name).expanduser()
        if folder.is_dir():
            return {"name": folder.name, "version": None, "path": str(folder.resolve())}
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin or not spec.origin.endswith("__init__.py"):
            continue
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            version = None
        return {"name": name, "version": version, "path": str(Path(spec.origin).parent)}
    raise ValueError(
        f"codebase-qa: no held-out package found (tried {', '.join(candidates)}); "
        "install one of them or pass --codebase PACKAGE_OR_FOLDER"
    )


def expected_names(roster: Roster) -> dict[str, str]:
    """Source env id -> the roster entry that plays it (the right subagent for its tasks)."""
    out: dict[str, str] = {}
    for entry in roster.subagents:
        out.setdefault(entry.env, entry.name)
    return out


def _entry_args(roster: Roster, env: str, backend: str) -> dict[str, Any]:
    entry = next((s for s in roster.subagents if s.env == env), None)
    args = dict(entry.env_args) if entry is not None else {}
    args.setdefault("backend", backend)
    return args


class _AllSplits(PosedTasks):
    """Posed tasks of every split, test first: none of a held-out codebase was ever trained on,
    so its train split is held out too."""

    def tasks(self, split: str) -> list[Task]:
        source = self.spec().tasks
        pooled: list[Task] = []
        for name in ("test", "validation", "train"):
            try:
                pooled += source.tasks(name)
            except (KeyError, ValueError):
                continue
        return [self._pose(t.model_copy(update={"split": split})) for t in pooled[: self.limit]]

    def get(self, task_id: str) -> Task:
        return super().get(task_id).model_copy(update={"split": "test"})


class DelegatedGrader:
    """Grades an orchestrator episode by the grade its subagent's work got in the subagent's
    own sandbox (frontend pages: the browser lives there, not in the orchestrator's workspace).

    The call counts when it ran the episode's task (the router passes the brief verbatim, so
    the subagent env recognises and grades it) and the orchestrator's answer names what that
    call answered (the page's path). An orchestrator that rewrites the brief gets an ungraded
    call, hence 0 here: the report says so in ``details``.

    Args:
        env_id: The subagent env whose graded calls count.
    """

    def __init__(self, env_id: str) -> None:
        self.env_id = env_id
        self.env: OrchestratorEnv | None = None

    def bind(self, env: OrchestratorEnv) -> None:
        self.env = env

    def grade(self, task: Task, answer: str, messages: list[Message], sandbox: Sandbox | None) -> Grade:
        if self.env is None:
            raise RuntimeError("DelegatedGrader is not bound to an orchestrator env (call bind(env))")
        children = self.env.trajectory.children
        graded = [
            c
            for c in children
            if c.env_id == self.env_id and c.task_id == task.id and c.reward is not None and c.metadata.get("graded")
        ]
        if not graded:
            reason = "no subagent call ran this task (the brief must reach the subagent verbatim to be graded)"
            return Grade(score=0.0, components={"delegated": 0.0}, details={"reason": reason, "calls": len(children)})
        child = graded[-1]
        produced = (child.final_answer or "").strip()
        names_it = bool(produced) and produced in answer
        components = {**child.reward_components, "delegated": 1.0, "answer_names_page": float(names_it)}
        score = float(child.reward or 0.0) if names_it else 0.0
        return Grade(score=score, components=components, details={"subagent_answer": produced[:200]})


class MixedGrader:
    """Grades each task with the grader of the env it came from (``metadata["source_env"]``)."""

    def __init__(self, graders: dict[str, Any]) -> None:
        self.graders = graders

    def bind(self, env: OrchestratorEnv) -> None:
        for grader in self.graders.values():
            if hasattr(grader, "bind"):
                grader.bind(env)

    def grade(self, task: Task, answer: str, messages: list[Message], sandbox: Sandbox | None) -> Grade:
        source = task.metadata.get("source_env")
        if source not in self.graders:
            raise ValueError(
                f"mixed task {task.id!r} has source_env={source!r}; expected one of {sorted(self.graders)}"
            )
        return self.graders[source].grade(task, answer, messages, sandbox)


def _posed(suite: str, roster: Roster, backend: str, limit: int | None) -> tuple[PosedTasks, Any]:
    env = SOURCE_ENVS[suite]
    expected = expected_names(roster).get(env)
    cls = _AllSplits if suite == "codebase-qa" else PosedTasks
    posed = cls(env, _entry_args(roster, env, backend), expected_subagent=expected, limit=limit)
    grader: Any = DelegatedGrader(env) if suite == "frontend" else posed.grader
    return posed, grader


def suite_tasks(
    suite: str, roster: Roster, *, backend: str = "auto", n_tasks: int | None = None, seed: int = 0
) -> tuple[Any, Any]:
    """(task source, grader) of an offline suite, its tasks in the ``test`` split.

    Args:
        suite: One of :data:`OFFLINE_SUITES`.
        roster: The roster (its entries' ``env_args`` say how the source envs are built, e.g.
            the held-out ``codebase``).
        backend: Sandbox backend for source envs the roster does not configure.
        n_tasks: The first N tasks (``mixed``: N drawn evenly from the three, then shuffled).
        seed: The ``mixed`` shuffle.

    Returns:
        A task source and the grader that goes with it.
    """
    if suite in SOURCE_ENVS:
        return _posed(suite, roster, backend, n_tasks)
    if suite != "mixed":
        raise ValueError(f"unknown offline suite {suite!r}; choose one of {', '.join(OFFLINE_SUITES)}")
    per = None if n_tasks is None else -(-n_tasks // len(SOURCE_ENVS))
    pooled: list[Task] = []
    graders: dict[str, Any] = {}
    for name, env in SOURCE_ENVS.items():
        posed, grader = _posed(name, roster, backend, per)
        pooled += posed.tasks("test")
        graders[env] = grader
    ids = [t.id for t in pooled]
    if len(set(ids)) != len(ids):
        raise ValueError("mixed: two source envs share a task id; the set cannot be keyed by task id")
    random.Random(f"mixed:{seed}").shuffle(pooled)
    pooled = [t.model_copy(update={"split": "test"}) for t in pooled[:n_tasks]]
    return TaskList(pooled, name="mixed (hotpotqa, codebase-qa, frontend)", splits=("test",)), MixedGrader(graders)


def make_bench_env(
    suite: str,
    roster: dict[str, Any] | str,
    backend: str = "auto",
    n_tasks: int | None = None,
    seed: int = 0,
    max_turns: int = 8,
    router_min_score: float | None = 0.0,
    **env_kwargs: Any,
) -> OrchestratorEnv:
    """orchestrator-v0 on an offline suite (the env factory ``bench run`` hands the rollout engine).

    Args:
        suite: One of :data:`OFFLINE_SUITES`.
        roster: The roster (its dict or a YAML path), baseline policies already applied.
        backend: Sandbox backend of the orchestrator's workspace.
        n_tasks: Tasks in the suite (see :func:`suite_tasks`).
        seed: The ``mixed`` shuffle.
        max_turns: Orchestrator turns.
        router_min_score: What the ``expert`` orchestrator (the scripted router) needs of a
            description match to delegate. 0 (default): it always delegates to its best match;
            a benchmark measures subagents and routing, and answering alone is the
            ``no-subagents`` baseline. None: the router's own threshold (it declines most
            open-domain questions: their words are names no description holds).
        **env_kwargs: :class:`SkillEnv` options (``split``, ...).

    Returns:
        The env; its grader is bound to it where grading reads the episode's subagent calls.
    """
    parsed = load_roster(roster)
    source, grader = suite_tasks(suite, parsed, backend=backend, n_tasks=n_tasks, seed=seed)
    spec = make_spec(parsed, tasks=source, grader=grader, backend=backend, max_turns=max_turns)
    update: dict[str, Any] = {"metadata": {**spec.metadata, "bench_suite": suite}}
    if router_min_score is not None:
        update["expert"] = functools.partial(ScriptedRouter, min_score=router_min_score)
    spec = spec.model_copy(update=update)
    keep = {"split", "render_mode", "token_counter"}
    env = OrchestratorEnv(spec, **{k: v for k, v in env_kwargs.items() if k in keep})
    if hasattr(grader, "bind"):
        grader.bind(env)
    return env
