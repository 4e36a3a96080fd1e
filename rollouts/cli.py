"""The ``skillgym rollout`` and ``skillgym export`` commands (the lead mounts them on the main
app with ``app.command("rollout")(rollout)``; ``python -m skillgym.rollouts`` runs them alone).
Everything shown to the user is printed here, never in the library."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


def _env_args(pairs: list[str]) -> dict[str, object]:
    """``key=value`` pairs; values read as JSON when they parse (``3``, ``true``), else text."""
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r}: expected key=value, e.g. --env-arg backend=local", param_hint="--env-arg")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _validated(model: type[BaseModel], **fields: Any) -> Any:
    """Build a config, turning a validation error into a usage error that names the option."""
    try:
        return model(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise typer.BadParameter(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def rollout(
    env: str = typer.Argument(..., help="Env id (codebase-explorer-v0), skill:<name>, or module:function."),
    policy: str = typer.Option("expert", "--policy", help="Policy spec: expert, random[:SEED], hf:PATH, openai:MODEL[@URL]."),
    split: str = typer.Option("train", "--split", help="Task split to draw from."),
    tasks: int | None = typer.Option(None, "--tasks", min=1, help="The first N tasks of the split (default: all)."),
    samples: int = typer.Option(1, "--samples", min=1, help="Episodes per task."),
    concurrency: int = typer.Option(8, "--concurrency", min=1, help="Episodes in flight at once."),
    backend: str = typer.Option("local", "--backend", help="Rollout backend: local (one process) or ray (actors)."),
    actors: int = typer.Option(2, "--actors", min=1, help="Ray actors (with --backend ray)."),
    out: Path = typer.Option(..., "--out", help="Run directory: trajectories, manifest, summary. Re-run to resume."),
    seed: int = typer.Option(0, "--seed", help="Run seed; each episode's seed derives from (seed, task, sample)."),
    max_attempts: int = typer.Option(2, "--max-attempts", min=1, help="Tries per episode before it is recorded as failed."),
    timeout: float = typer.Option(900.0, "--timeout", min=1, help="Seconds one episode attempt may take."),
    env_arg: list[str] = typer.Option([], "--env-arg", help="key=value for the env factory (repeatable), e.g. backend=local."),
    force: bool = typer.Option(False, "--force", help="Resume into a run directory made with another config."),
    as_json: bool = typer.Option(False, "--json", help="No progress bar; print the summary as JSON."),
) -> None:
    """Run a policy on an env's tasks and store every trajectory (resumable: run it again)."""
    from skillgym.rollouts import ManifestMismatch, RolloutConfig, RolloutProgress, StoreError, run_rollouts

    config = _validated(
        RolloutConfig, env=env, env_kwargs=_env_args(env_arg), policy=policy, split=split, n_tasks=tasks,
        samples=samples, concurrency=concurrency, backend=backend, num_actors=actors, out=out, seed=seed,
        max_attempts=max_attempts, episode_timeout_s=timeout,
    )

    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=err_console, disable=as_json,
    )
    bar = progress.add_task("rollout", total=None, stats="starting")

    def on_progress(p: RolloutProgress) -> None:
        mean = "-" if p.mean_reward is None else f"{p.mean_reward:.3f}"
        stats = f"{p.episodes_per_s:.1f} ep/s  reward {mean}  tokens {p.tokens:,}  failed {p.failed}"
        progress.update(bar, total=p.total, completed=p.already_done + p.finished, stats=stats)

    try:
        with progress:
            summary = run_rollouts(config, on_progress, force=force)
    except (ManifestMismatch, StoreError, ValueError, KeyError) as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    if as_json:
        print(summary.model_dump_json(indent=2))
        return
    table = Table("", "", title=f"rollout {summary.env_id} · {summary.policy} · {summary.backend}", show_header=False)
    rows = [
        ("run directory", summary.out),
        ("episodes stored", f"{summary.records} / {summary.total}" + (f" ({summary.already_done} from before)" if summary.already_done else "")),
        ("this run", f"{summary.completed} ok, {summary.failed} failed, {summary.retries} retries"),
        ("failed records", str(summary.failed_records)),
        ("mean reward", "-" if summary.mean_reward is None else f"{summary.mean_reward:.4f}"),
        ("throughput", f"{summary.episodes_per_s:.2f} episodes/s, {summary.turns_per_s:.2f} turns/s over {summary.wall_s:.1f} s"),
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
    val_fraction: float = typer.Option(0.0, "--val-fraction", min=0.0, max=0.99, help="Share of tasks held out for validation."),
    tools: str = typer.Option("all", "--tools", help="Tool schemas per row: all (every tool) or used (those called)."),
    keep_truncated: bool = typer.Option(False, "--keep-truncated", help="Keep episodes cut off by a budget."),
    seed: int = typer.Option(0, "--seed", help="Seed of the train/validation task split."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing dataset directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Turn a run's trajectories into an SFT dataset (messages + tools) with a stats report."""
    from skillgym.rollouts.export import ExportConfig, export_dataset

    config = _validated(
        ExportConfig, run_dir=run_dir, out=out, min_reward=min_reward, max_turns=max_turns, dedupe=dedupe,
        dedupe_threshold=dedupe_threshold, val_fraction=val_fraction, tools=tools,
        keep_truncated=keep_truncated, seed=seed, overwrite=overwrite,
    )
    try:
        with err_console.status("exporting", spinner="dots") if not as_json else contextlib.nullcontext():
            report = export_dataset(config)
    except (FileExistsError, FileNotFoundError) as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    if as_json:
        print(report.model_dump_json(indent=2))
        return
    table = Table("split", "rows", "tasks", title=f"export → {report.out}")
    for name, count in report.rows.items():
        table.add_row(name, str(count), str(report.tasks[name]))
    console.print(table)
    rejected = ", ".join(f"{k}: {v}" for k, v in sorted(report.rejected.items())) or "none"
    console.print(f"kept {report.kept} of {report.records} records; rejected: {rejected}")
    console.print(f"stats: {report.stats_path}" + (f"  histogram: {report.histogram_path}" if report.histogram_path else ""))


app = typer.Typer(help="Rollouts and dataset export.", no_args_is_help=True)
app.command("rollout")(rollout)
app.command("export")(export)
