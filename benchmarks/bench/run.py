"""``bench run``: one benchmark, one orchestrator, every selected baseline, side by side.

Layout of ``--out DIR``::

    DIR/<bench>/bench.json                 what ran: suite, orchestrator, roster, baselines,
                                           suite facts (e.g. the held-out codebase), stage times
    DIR/<bench>/<baseline>/                a rollout run directory per baseline (manifest,
                                           trajectories/shard-*.jsonl, summary.json)

Each baseline is a rollout (:func:`skillgym.rollouts.run_rollouts`) of the suite's
orchestrator env: its store is append-only and keyed by task, so running the same command
again after a crash (even ``kill -9``) runs only the tasks that have no record yet.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from skillgym.io import atomic_write_text
from skillgym.orchestrator import Roster
from skillgym.policies.spec import parse_policy_spec
from skillgym.rollouts import RolloutConfig, run_rollouts

from ..suites import OFFLINE_SUITES, SOURCE_ENVS, choose_codebase, expected_names, suite_info
from .roster import NO_SUBAGENTS, Baseline, BenchRoster

__all__ = ["BENCH_ENV", "BenchRun", "StageTime", "baseline_dir", "run_bench"]

BENCH_ENV = "skillgym.benchmarks.suites.offline:make_bench_env"


class StageTime(BaseModel):
    """One baseline's run of one benchmark."""

    baseline: str
    seconds: float
    records: int
    ran: int = Field(description="Episodes run this time (the rest were already in the store).")
    failed: int = 0


class BenchRun(BaseModel):
    """``bench.json``: everything the report needs besides the trajectories."""

    bench: str
    orchestrator: str
    tasks: int | None
    seed: int = 0
    roster: dict[str, Any]
    baselines: list[Baseline]
    skipped: dict[str, str] = Field(default_factory=dict, description="Baseline -> why it was not run.")
    suite: dict[str, Any] = Field(default_factory=dict)
    stages: list[StageTime] = Field(default_factory=list)


def baseline_dir(out: Path, bench: str, baseline: str) -> Path:
    return out / bench / baseline.replace("/", "__")


def _needed(bench: str) -> list[str]:
    if bench == "mixed":
        return list(SOURCE_ENVS.values())
    return [SOURCE_ENVS[bench]] if bench in SOURCE_ENVS else []


def _prepare_roster(bench: str, roster: Roster, codebase: dict[str, Any] | None, backend: str) -> Roster:
    """The roster the suite runs with: the held-out codebase and the sandbox backend set on the
    entries that need them."""
    entries = []
    for entry in roster.subagents:
        args = dict(entry.env_args)
        args.setdefault("backend", backend)
        if codebase is not None and entry.env == "codebase-explorer-v0":
            args["codebase"] = codebase["path"]
        entries.append(entry.model_copy(update={"env_args": args}))
    return roster.model_copy(update={"subagents": entries})


def _why_not(bench: str, baseline: Baseline, roster: Roster, orchestrator: str) -> str | None:
    if baseline.name == NO_SUBAGENTS:
        if parse_policy_spec(orchestrator).kind == "expert":
            return (
                "no-subagents needs a real orchestrator model (--orchestrator openai:MODEL@URL): the scripted "
                "router cannot answer a task alone"
            )
        return None
    expected = expected_names(roster)
    for env in _needed(bench):
        name = expected.get(env)
        if name is None:
            return f"the roster has no subagent for {env}"
        if baseline.policy_for(name) is None:
            return f"baseline {baseline.name} gives no policy to {name} (the subagent {bench} needs)"
    return None


def run_bench(
    bench: str,
    bench_roster: BenchRoster,
    out: Path,
    *,
    orchestrator: str = "expert",
    baselines: list[str] | None = None,
    n_tasks: int | None = None,
    backend: str = "auto",
    concurrency: int = 4,
    seed: int = 0,
    codebase: str | None = None,
    router_min_score: float | None = 0.0,
    on_stage: Callable[[str, str], None] | None = None,
    progress: Callable[[str, Any], None] | None = None,
) -> BenchRun:
    """Run (or resume) ``bench`` for every selected baseline.

    Args:
        bench: An offline suite (:data:`~skillgym.benchmarks.suites.OFFLINE_SUITES`).
        bench_roster: The roster and its baselines.
        out: The output folder (see the module docstring).
        orchestrator: The orchestrator's policy spec (``expert``: the scripted router).
        baselines: ``--baseline`` names (None: every baseline in the roster).
        n_tasks: Tasks per baseline (the suite's first N).
        backend: Sandbox backend.
        concurrency: Orchestrator episodes in flight.
        seed: Rollout seed and the mixed shuffle.
        codebase: ``codebase-qa``/``mixed``: the held-out package or folder (None: chosen).
        router_min_score: The scripted router's delegation threshold (see
            :func:`~skillgym.benchmarks.suites.make_bench_env`).
        on_stage: Called with (baseline, message) as each baseline starts, is skipped or ends.
        progress: Called with (baseline, rollout progress) after every episode.

    Returns:
        The run record, also written to ``out/<bench>/bench.json``.

    Raises:
        ValueError: an unknown bench, a baseline that matches nothing, or a run directory that
            holds a different run (the rollout manifest's message says which field differs).
    """
    if bench not in OFFLINE_SUITES:
        raise ValueError(
            f"bench {bench!r} is not an offline suite ({', '.join(OFFLINE_SUITES)}); "
            "humaneval and bfcl-* run with `skillgym bench model` against a real endpoint"
        )
    chosen = bench_roster.select(baselines)
    held_out = choose_codebase(codebase) if bench in ("codebase-qa", "mixed") else None
    roster = _prepare_roster(bench, bench_roster.roster, held_out, backend)
    record_path = out / bench / "bench.json"
    previous = BenchRun.model_validate_json(record_path.read_text()) if record_path.is_file() else None
    record = BenchRun(
        bench=bench,
        orchestrator=orchestrator,
        tasks=n_tasks,
        seed=seed,
        roster=roster.model_dump(mode="json"),
        baselines=chosen,
        suite=suite_info(bench, roster, held_out),
    )
    if previous is not None:  # resuming or adding baselines: keep what earlier runs recorded
        known = {b.name for b in chosen}
        record.baselines = [b for b in previous.baselines if b.name not in known] + chosen
        record.stages = list(previous.stages)
        record.skipped = {k: v for k, v in previous.skipped.items() if k not in known}
    # Written before any baseline runs: a run stopped half-way (a time limit, kill -9) still
    # has a record that says what its folders hold, and the report can read them.
    record_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(record_path, record.model_dump_json(indent=2) + "\n")
    for baseline in chosen:
        reason = _why_not(bench, baseline, roster, orchestrator)
        if reason is not None:
            record.skipped[baseline.name] = reason
            if on_stage:
                on_stage(baseline.name, f"skipped: {reason}")
            continue
        played = baseline.apply(roster)
        config = RolloutConfig(
            env=BENCH_ENV,
            env_kwargs={
                "suite": bench,
                "roster": played.model_dump(mode="json"),
                "backend": backend,
                "n_tasks": n_tasks,
                "seed": seed,
                "router_min_score": router_min_score,
            },
            policy=orchestrator,
            split="test",
            n_tasks=n_tasks,
            concurrency=concurrency,
            seed=seed,
            max_attempts=1,  # a failed episode is a result (a subagent that crashed), not a retry
            out=baseline_dir(out, bench, baseline.name),
        )
        if on_stage:
            on_stage(baseline.name, "started")
        started = time.perf_counter()
        summary = run_rollouts(config, (lambda p, b=baseline.name: progress(b, p)) if progress else None)
        stage = StageTime(
            baseline=baseline.name,
            seconds=round(time.perf_counter() - started, 2),
            records=summary.records,
            ran=summary.completed + summary.failed,
            failed=summary.failed_records,
        )
        record.stages.append(stage)
        atomic_write_text(record_path, record.model_dump_json(indent=2) + "\n")
        if on_stage:
            on_stage(baseline.name, f"done: {stage.records} records ({stage.ran} run now) in {stage.seconds:.1f} s")
    record_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(record_path, record.model_dump_json(indent=2) + "\n")
    return record


def read_bench_runs(paths: list[Path]) -> list[tuple[Path, BenchRun]]:
    """Every ``bench.json`` under the given folders (a ``--out`` folder or one bench's folder)."""
    found: list[tuple[Path, BenchRun]] = []
    for path in paths:
        candidates = [path / "bench.json"] if (path / "bench.json").is_file() else sorted(path.glob("*/bench.json"))
        if not candidates:
            raise FileNotFoundError(f"{path}: no bench.json here or one level down; is it a `bench run --out` folder?")
        for file in candidates:
            try:
                found.append((file.parent, BenchRun.model_validate(json.loads(file.read_text(encoding="utf-8")))))
            except (ValueError, OSError) as exc:
                raise ValueError(f"{file}: not a bench record: {exc}") from None
    return found
