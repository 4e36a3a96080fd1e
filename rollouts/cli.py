"""The ``skillgym rollout``, ``skillgym export`` and ``skillgym eval`` commands.

The full CLI (``skillgym.pipeline.cli``) mounts them as top-level commands;
``python -m skillgym.rollouts`` runs them alone. Everything shown to the user is printed
here, never in the library."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from skillgym.cli_options import (
    check_out_dir,
    check_policy_specs,
    error_message,
    fail,
    parse_env_args,
    parse_variants,
    user_errors,
    validated,
)

console = Console()
err_console = Console(stderr=True)


def rollout(
    env: str = typer.Argument(..., help="Env id (codebase-explorer-v0), skill:<name>, or module:function."),
    policy: str = typer.Option(
        "expert", "--policy", help="Policy spec: expert, random[:SEED], hf:PATH, openai:MODEL[@URL]."
    ),
    split: str = typer.Option("train", "--split", help="Task split to draw from."),
    tasks: int | None = typer.Option(None, "--tasks", min=1, help="The first N tasks of the split (default: all)."),
    samples: int = typer.Option(1, "--samples", min=1, help="Episodes per task."),
    concurrency: int = typer.Option(8, "--concurrency", min=1, help="Episodes in flight at once."),
    backend: str = typer.Option("local", "--backend", help="Rollout backend: local (one process) or ray (actors)."),
    actors: int = typer.Option(2, "--actors", min=1, help="Ray actors (with --backend ray)."),
    ray_address: str | None = typer.Option(
        None, "--ray-address", envvar="RAY_ADDRESS", help="Ray cluster to join (with --backend ray)."
    ),
    out: Path = typer.Option(..., "--out", help="Run directory: trajectories, manifest, summary. Re-run to resume."),
    seed: int = typer.Option(0, "--seed", help="Run seed; each episode's seed derives from (seed, task, sample)."),
    max_attempts: int = typer.Option(
        2, "--max-attempts", min=1, help="Tries per episode before it is recorded as failed."
    ),
    timeout: float = typer.Option(900.0, "--timeout", min=1, help="Seconds one episode attempt may take."),
    env_arg: list[str] = typer.Option(
        [], "--env-arg", help="key=value for the env factory (repeatable), e.g. backend=local."
    ),
    force: bool = typer.Option(False, "--force", help="Resume into a run directory made with another config."),
    as_json: bool = typer.Option(False, "--json", help="No progress bar; print the summary as JSON."),
) -> None:
    """Run a policy on an env's tasks and store every trajectory (resumable: run it again)."""
    from skillgym.rollouts import ManifestMismatch, RolloutConfig, RolloutProgress, StoreError, run_rollouts

    check_policy_specs([policy])
    check_out_dir(out)
    config = validated(
        RolloutConfig,
        env=env,
        env_kwargs=parse_env_args(env_arg),
        policy=policy,
        split=split,
        n_tasks=tasks,
        samples=samples,
        concurrency=concurrency,
        backend=backend,
        num_actors=actors,
        out=out,
        seed=seed,
        max_attempts=max_attempts,
        episode_timeout_s=timeout,
        ray_address=ray_address,
    )

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err_console,
        disable=as_json,
    )
    bar = progress.add_task("rollout", total=None, stats="starting")

    def on_progress(p: RolloutProgress) -> None:
        mean = "-" if p.mean_reward is None else f"{p.mean_reward:.3f}"
        stats = f"{p.episodes_per_s:.1f} ep/s  reward {mean}  tokens {p.tokens:,}  failed {p.failed}"
        progress.update(bar, total=p.total, completed=p.already_done + p.finished, stats=stats)

    try:
        with progress:
            summary = run_rollouts(config, on_progress, force=force)
    except (ManifestMismatch, StoreError, ValueError, KeyError, OSError) as exc:
        fail(error_message(exc))
    if as_json:
        print(summary.model_dump_json(indent=2))
        return
    table = Table("", "", title=f"rollout {summary.env_id} · {summary.policy} · {summary.backend}", show_header=False)
    rows = [
        ("run directory", summary.out),
        (
            "episodes stored",
            f"{summary.records} / {summary.total}"
            + (f" ({summary.already_done} from before)" if summary.already_done else ""),
        ),
        ("this run", f"{summary.completed} ok, {summary.failed} failed, {summary.retries} retries"),
        ("failed records", str(summary.failed_records)),
        ("mean reward", "-" if summary.mean_reward is None else f"{summary.mean_reward:.4f}"),
        (
            "throughput",
            f"{summary.episodes_per_s:.2f} episodes/s, {summary.turns_per_s:.2f} turns/s over {summary.wall_s:.1f} s",
        ),
        ("tokens", f"{summary.tokens:,}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    for error in summary.errors:
        console.print(f"[yellow]failed:[/yellow] {escape(error)}")


def export(
    run_dir: Path = typer.Argument(..., help="A run directory written by `skillgym rollout`."),
    out: Path = typer.Option(..., "--out", help="Dataset directory (datasets.save_to_disk)."),
    min_reward: float = typer.Option(1.0, "--min-reward", help="Keep episodes whose reward is at least this."),
    max_turns: int | None = typer.Option(None, "--max-turns", min=1, help="Drop episodes with more assistant turns."),
    dedupe: bool = typer.Option(False, "--dedupe", help="Drop near-duplicate conversations (MinHash)."),
    dedupe_threshold: float = typer.Option(0.9, "--dedupe-threshold", help="Similarity that counts as a duplicate."),
    val_fraction: float = typer.Option(
        0.0, "--val-fraction", min=0.0, max=0.99, help="Share of tasks held out for validation."
    ),
    tools: str = typer.Option("all", "--tools", help="Tool schemas per row: all (every tool) or used (those called)."),
    keep_truncated: bool = typer.Option(False, "--keep-truncated", help="Keep episodes cut off by a budget."),
    children: str | None = typer.Option(
        None, "--children", help="Export the calls orchestrator episodes made to this subagent (roster name)."
    ),
    ungraded: str = typer.Option(
        "parent", "--ungraded", help="With --children, calls with no grade: parent (episode's reward) or drop."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the train/validation task split."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing dataset directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Turn a run's trajectories into an SFT dataset (messages + tools) with a stats report."""
    from skillgym.rollouts.export import ExportConfig, export_dataset

    check_out_dir(out)
    config = validated(
        ExportConfig,
        run_dir=run_dir,
        out=out,
        min_reward=min_reward,
        max_turns=max_turns,
        dedupe=dedupe,
        dedupe_threshold=dedupe_threshold,
        val_fraction=val_fraction,
        tools=tools,
        keep_truncated=keep_truncated,
        children=children,
        ungraded=ungraded,
        seed=seed,
        overwrite=overwrite,
    )
    try:
        with err_console.status("exporting", spinner="dots") if not as_json else contextlib.nullcontext():
            report = export_dataset(config)
    except (OSError, ValueError, KeyError) as exc:  # a missing run, an existing --out, an unreadable manifest
        fail(error_message(exc))
    if as_json:
        print(report.model_dump_json(indent=2))
        return
    table = Table("split", "rows", "tasks", title=f"export → {report.out}")
    for name, count in report.rows.items():
        table.add_row(name, str(count), str(report.tasks[name]))
    console.print(table)
    rejected = ", ".join(f"{k}: {v}" for k, v in sorted(report.rejected.items())) or "none"
    console.print(f"kept {report.kept} of {report.records} records; rejected: {rejected}")
    console.print(
        f"stats: {report.stats_path}" + (f"  histogram: {report.histogram_path}" if report.histogram_path else "")
    )


def eval_command(
    env_id: str = typer.Argument(..., help="Env id, skill:<name>, or module:function."),
    policy: list[str] = typer.Option(..., "--policy", help="Policy spec (repeat to compare several)."),
    split: str = typer.Option("test", help="Held-out split."),
    tasks: int | None = typer.Option(200, "--tasks", min=1, help="The first N tasks of the split."),
    samples: int = typer.Option(1, "--samples", min=1, help="Episodes per task (k > 1 gives pass^k)."),
    concurrency: int = typer.Option(8, "--concurrency", min=1),
    backend: str = typer.Option("local", "--backend", help="Rollout backend: local or ray."),
    ray_address: str | None = typer.Option(
        None, "--ray-address", envvar="RAY_ADDRESS", help="Ray cluster to join (with --backend ray)."
    ),
    out: Path = typer.Option(..., "--out", help="Output folder (resumable)."),
    seed: int = typer.Option(0, "--seed"),
    env_arg: list[str] = typer.Option([], "--env-arg", help="key=value for the env (repeatable)."),
    variant: list[str] = typer.Option(
        [],
        "--variant",
        help="NAME:key=value[,key=value] env variant, e.g. no-skill:instruction_mode=none (repeatable).",
    ),
    threshold: float = typer.Option(
        0.5, "--threshold", help="Reward at or above which an episode counts as a success."
    ),
    force: bool = typer.Option(
        False, "--force", help="Resume into run directories made with another config (e.g. more --tasks)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Evaluate policies side by side on the same held-out tasks: success (95% CI), pass^k,
    reward, turns, tokens, answer vs trace length, latency; writes eval.json and eval.png."""
    from skillgym.rollouts.evaluate import EvalConfig, run_eval

    check_policy_specs(policy)
    check_out_dir(out)
    config = validated(
        EvalConfig,
        env=env_id,
        env_kwargs=parse_env_args(env_arg),
        policies=policy,
        variants=parse_variants(variant),
        split=split,
        n_tasks=tasks,
        samples=samples,
        concurrency=concurrency,
        backend=backend,
        out=out,
        seed=seed,
        success_threshold=threshold,
        ray_address=ray_address,
    )
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        disable=as_json,
    )
    bars: dict[str, Any] = {}

    def on_cell(label: str, p: Any) -> None:
        if label not in bars:
            bars[label] = progress.add_task(label, total=p.total)
        progress.update(bars[label], completed=p.already_done + p.finished)

    from skillgym.rollouts import ManifestMismatch, StoreError

    with user_errors(ManifestMismatch, StoreError), progress:
        report = run_eval(config, on_cell, force=force)
    errored = [cell for cell in report.cells if cell.errors]
    if as_json:
        print(report.model_dump_json(indent=2))
        if errored:
            raise typer.Exit(1)
        return
    table = Table(
        "policy",
        "success (95% CI)",
        "pass^k",
        "reward",
        "turns",
        "tokens/ep",
        "answer/trace",
        "latency p50",
        title=f"{report.env} · {report.split} · {report.cells[0].metrics.tasks} tasks × {report.samples}",
    )
    for cell in report.cells:
        m = cell.metrics
        passk = " ".join(f"{k}:{v:.2f}" for k, v in m.pass_k.items())
        success = f"{m.success_rate:.3f} [{m.success_ci95[0]:.2f}, {m.success_ci95[1]:.2f}]"
        if cell.errors:
            success = f"[red]errored[/red] ({m.failed_episodes}/{m.episodes} did not run)"
        table.add_row(
            cell.label,
            success,
            passk,
            f"{m.mean_reward:.3f}",
            f"{m.mean_turns:.2f}",
            f"{m.tokens_per_episode:.0f}",
            f"{m.answer_chars:.0f}/{m.trace_chars:.0f}",
            f"{m.latency_p50_s:.2f}s",
        )
    console.print(table)
    console.print(f"report: {out / 'eval.json'} · chart: {out / 'eval.png'}")
    for cell in errored:
        # A server that is down or a policy that cannot run is not a model that answered wrong.
        err_console.print(
            f"[red]error:[/red] {escape(cell.label)}: {cell.metrics.failed_episodes} of {cell.metrics.episodes} episodes "
            f"failed to run, so its success is not a measurement: {escape(cell.errors[0])} "
            f"(fix the cause, remove {escape(cell.run_dir)} and run again)",
            soft_wrap=True,
        )
    if errored:
        raise typer.Exit(1)


app = typer.Typer(help="Rollouts, dataset export and side-by-side evaluation.", no_args_is_help=True)
app.command("rollout")(rollout)
app.command("export")(export)
app.command("eval")(eval_command)
