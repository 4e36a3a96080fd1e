"""``skillgym bench``: Part 2 benchmarks, baselines side by side under one orchestrator.

skillgym bench run codebase-qa --roster benchmarks/bench/rosters/offline.yaml --baseline large --tasks 200 --out runs/bench
skillgym bench report runs/bench --out runs/bench/report
skillgym bench list
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

app = typer.Typer(help="Part 2 benchmarks: baselines side by side under one orchestrator.", no_args_is_help=True)

DEFAULT_ROSTER = Path(__file__).with_name("rosters") / "offline.yaml"


def _fail(message: str) -> None:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(1)


@app.command("list")
def list_command() -> None:
    """List the benchmarks and what each needs."""
    from ..suites import OFFLINE_SUITES, SUITE_NOTES

    for name in OFFLINE_SUITES:
        typer.echo(f"{name}: {SUITE_NOTES[name]} (offline)")
    typer.echo("humaneval, bfcl-<category>: need a real model: skillgym bench model BENCH --policy openai:MODEL@URL")
    typer.echo("tau2-retail, tau2-airline: scorer and user simulator in skillgym.benchmarks.suites.tau2 (README)")


@app.command()
def run(
    bench: str = typer.Argument(..., help="hotpotqa, codebase-qa, frontend or mixed."),
    orchestrator: str = typer.Option(
        "expert", help="The orchestrator's policy: expert (scripted router) or openai:..."
    ),
    roster: Path = typer.Option(DEFAULT_ROSTER, help="Bench roster YAML (subagents + baselines)."),
    baseline: list[str] = typer.Option(
        [], "--baseline", help="large, small-base, small-tuned, no-subagents, or a name in the roster (repeatable)."
    ),
    tasks: int | None = typer.Option(None, "--tasks", min=1, help="The suite's first N tasks (default: all)."),
    out: Path = typer.Option(Path("runs/bench"), "--out", help="Output folder; the same command again resumes."),
    backend: str = typer.Option("auto", help="Sandbox backend: auto, docker, local."),
    concurrency: int = typer.Option(4, min=1, help="Orchestrator episodes in flight."),
    seed: int = typer.Option(0, help="Rollout seed and the mixed set's shuffle."),
    codebase: str | None = typer.Option(None, help="codebase-qa: the held-out package or folder (default: chosen)."),
    router_min_score: float = typer.Option(
        0.0, help="Scripted router: least description match to delegate (0: always its best match)."
    ),
    quiet: bool = typer.Option(False, help="No progress bar."),
) -> None:
    """Run (or resume) one benchmark for every selected baseline, then print its table."""
    from rich.progress import Progress

    from skillgym.orchestrator import RosterError
    from skillgym.rollouts.manifest import ManifestMismatch
    from skillgym.rollouts.store import StoreError

    from .report import _markdown, bench_table
    from .roster import load_bench_roster
    from .run import run_bench

    try:
        bench_roster = load_bench_roster(roster)
    except RosterError as exc:
        _fail(str(exc))
    started = time.perf_counter()
    with Progress(disable=quiet, transient=True) as bar:
        bars: dict[str, int] = {}

        def on_stage(name: str, message: str) -> None:
            bar.console.print(f"[{bench}] {name}: {message} (t={time.perf_counter() - started:.0f} s)", markup=False)

        def progress(name: str, p) -> None:
            if name not in bars:
                bars[name] = bar.add_task(f"{bench} {name}", total=p.total)
            bar.update(bars[name], completed=p.already_done + p.finished)

        try:
            record = run_bench(
                bench,
                bench_roster,
                out,
                orchestrator=orchestrator,
                baselines=baseline,
                n_tasks=tasks,
                backend=backend,
                concurrency=concurrency,
                seed=seed,
                codebase=codebase,
                router_min_score=router_min_score,
                on_stage=on_stage,
                progress=progress,
            )
        except (ValueError, ManifestMismatch, StoreError) as exc:
            _fail(str(exc))
    ran = [b for b in record.baselines if b.name not in record.skipped]
    if not ran and baseline:
        _fail("; ".join(f"{k}: {v}" for k, v in record.skipped.items()))
    typer.echo(_markdown(bench_table(out / bench, record)))
    typer.echo(f"total {time.perf_counter() - started:.1f} s; report: skillgym bench report {out}")


@app.command()
def report(
    dirs: list[Path] = typer.Argument(..., help="`bench run --out` folders (or one bench's folder)."),
    out: Path | None = typer.Option(None, "--out", help="Where to write report.md/json and PNGs (default: first DIR)."),
) -> None:
    """Write the tables (Markdown, JSON) and score-vs-cost plots of finished bench runs."""
    from .report import write_report

    try:
        written = write_report(dirs, out or dirs[0])
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    typer.echo((written["report.md"]).read_text(encoding="utf-8"))
    typer.echo("wrote " + ", ".join(str(p) for p in written.values()))


@app.command()
def model(
    bench: str = typer.Argument(..., help="humaneval or bfcl-<category> (bfcl-multi_turn_base, ...)."),
    policy: str = typer.Option(..., help="The model: openai:MODEL@URL (or hf:PATH, expert = the scripted reference)."),
    tasks: int = typer.Option(20, "--tasks", min=1, help="The first N problems or entries."),
    samples: int = typer.Option(
        1, "--samples", min=1, help="HumanEval: samples per problem (pass@k for k <= samples)."
    ),
    backend: str = typer.Option("auto", help="Sandbox backend (code and BFCL's APIs run there)."),
    out: Path = typer.Option(Path("runs/bench-model"), "--out", help="Folder for per-task results (JSONL)."),
) -> None:
    """Score a model on HumanEval or a BFCL v4 multi-turn category (a real endpoint; `expert`
    plays the scripted reference that must score 1)."""
    import json

    import skillgym
    from skillgym.policies.spec import make_policy
    from skillgym.sandbox import make_sandbox
    from skillgym.sandbox.base import SandboxConfig

    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows: list[dict] = []
    if bench == "humaneval":
        from ..suites.humaneval import pass_at_k

        env = skillgym.make("skillgym.benchmarks.suites.humaneval:make_spec", backend=backend, split="test")
        try:
            agent = make_policy(policy, env)
            for task in env.env_spec.tasks.tasks("test")[:tasks]:
                passed = [
                    (skillgym.run_episode(env, agent, task_id=task.id).reward or 0.0) == 1.0 for _ in range(samples)
                ]
                rows.append({"task_id": task.id, "passed": passed})
        finally:
            env.close()
        ks = [k for k in (1, 5, 10) if k <= samples]
        scores = {f"pass@{k}": sum(pass_at_k(samples, sum(r["passed"]), k) for r in rows) / len(rows) for k in ks}
    elif bench.startswith("bfcl-"):
        from ..suites import bfcl

        category = bench.removeprefix("bfcl-")
        try:
            entries = bfcl.load_entries(category)[:tasks]
        except ValueError as exc:
            _fail(str(exc))
        with make_sandbox(SandboxConfig(backend=backend)) as sandbox:
            for entry in entries:
                agent = bfcl.GoldPolicy(entry) if policy == "expert" else make_policy(policy, None)  # type: ignore[arg-type]
                outcome = bfcl.run_entry(entry, agent, sandbox)
                rows.append({"task_id": entry.id, "passed": [outcome.passed], "turns": outcome.turns})
        scores = {"accuracy": sum(r["passed"][0] for r in rows) / len(rows)}
    else:
        _fail(f"bench model {bench!r}: use humaneval or bfcl-<category> (tau2: see README 'Part 2 benchmarks')")
    path = out / f"{bench}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    summary = {
        "bench": bench,
        "policy": policy,
        "tasks": len(rows),
        **scores,
        "seconds": round(time.perf_counter() - started, 1),
    }
    typer.echo(json.dumps(summary))
