"""The full ``skillgym`` command line (the installed script's entry point).

It mounts the core's commands (``envs``, ``play``, ``doctor``, ``sandbox``, ``skills``,
``tasks``: :mod:`skillgym.cli`), each stage's own (``rollout``, ``export``, ``eval`` from
:mod:`skillgym.rollouts.cli`; ``train`` and ``serve`` from :mod:`skillgym.training.cli`) and
the pipeline's ``distill``. The core knows nothing of the stages; this module, on top of
them all, is where they meet.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from skillgym.cli import app as core_app
from skillgym.cli_options import parse_env_args, validated

app = typer.Typer(
    help="Turn agent skills and subagents into environments, data and small models.", no_args_is_help=True
)
app.add_typer(core_app)  # no name: the core's commands and groups join this app at the top level
console = Console()


def _mount(module: str, name: str, help: str, command: str | None = None) -> None:
    """Attach a stage's sub-app (or one of its commands, ``command``) as ``name``; a stage whose
    optional dependencies are missing shows up as unavailable instead of breaking the CLI."""
    try:
        loaded = importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on optional extras
        app.add_typer(typer.Typer(help=f"{help} (unavailable: {exc})"), name=name, help=help)
        return
    if command is None:
        app.add_typer(loaded.app, name=name, help=help)
    else:
        app.command(name)(getattr(loaded, command))


_mount("skillgym.rollouts.cli", "rollout", "Run a policy on an env's tasks.", command="rollout")
_mount("skillgym.rollouts.cli", "export", "Trajectories to an SFT dataset.", command="export")
_mount("skillgym.rollouts.cli", "eval", "Policies side by side on held-out tasks.", command="eval_command")
_mount("skillgym.training.cli", "train", "Train students: SFT and GRPO on TRL.")
_mount("skillgym.training.cli", "serve", "Serve a model behind an OpenAI-compatible endpoint.", command="serve")
_mount("skillgym.orchestrator.cli", "orchestrate", "Orchestrator episodes with subagent calls (Part 2).")
_mount("skillgym.benchmarks.bench.cli", "bench", "Part 2 benchmarks: baselines side by side under one orchestrator.")
_mount("skillgym.adapters.cli", "serve-env", "Serve an env to other RL stacks (OpenEnv, MCP).", command="serve_env")


@app.command()
def distill(
    env_id: str = typer.Argument(..., help="Env id, skill:<name>, or module:function."),
    teacher: str = typer.Option("expert", help="Teacher policy spec (expert, openai:MODEL@URL, ...)."),
    student: str = typer.Option("tiny", help="'tiny' (embedded default, CPU) or a HF model id / folder (LoRA recipe)."),
    out: Path = typer.Option(Path("runs/distill"), "--out", help="Run folder; re-run the same command to resume."),
    recipe: Path | None = typer.Option(None, help="SFT recipe YAML (default: tiny-cpu.yaml or qwen3-4b-lora.yaml)."),
    set_: list[str] = typer.Option(
        [], "--set", help="Recipe override key=value (repeatable), e.g. training.num_train_epochs=3."
    ),
    train_tasks: int | None = typer.Option(None, "--train-tasks", min=1, help="Teacher episodes on the train split."),
    test_tasks: int = typer.Option(200, "--test-tasks", min=1, help="Held-out test tasks for the evaluation."),
    min_reward: float = typer.Option(1.0, "--min-reward", help="Keep teacher episodes scoring at least this."),
    concurrency: int | None = typer.Option(
        None, min=1, help="Episodes in flight at once (students batch their turns; default 16, SmolLM2: 32)."
    ),
    backend: str = typer.Option("local", help="Rollout backend: local or ray."),
    env_arg: list[str] = typer.Option([], "--env-arg", help="key=value for the env (repeatable)."),
    stages: str | None = typer.Option(
        None, help="Comma-separated stages to run again: rollout,export,sft,eval,report."
    ),
    seed: int = typer.Option(0),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Teacher rollouts → filter → export → SFT → eval of teacher, untrained and trained student → report."""
    from skillgym.pipeline.distill import DistillConfig, run_distill

    config = validated(
        DistillConfig,
        env=env_id,
        env_kwargs=parse_env_args(env_arg),
        teacher=teacher,
        student=student,
        recipe=recipe,
        recipe_overrides=set_,
        out=out,
        train_tasks=train_tasks,
        test_tasks=test_tasks,
        min_reward=min_reward,
        **({} if concurrency is None else {"concurrency": concurrency}),
        backend=backend,
        seed=seed,
        stages=[s for s in (stages or "").split(",") if s] or None,
    )
    started = time.perf_counter()
    err = Console(stderr=True)
    with err.status("distilling") as status, contextlib.redirect_stdout(sys.stderr):
        # Trainers print progress to stdout; keep stdout for the result (and --json) alone.
        def log(message: str) -> None:
            status.update(message)
            err.log(message)

        report = run_distill(config, log)
    if as_json:
        print(report.model_dump_json(indent=2))
        return
    table = Table(
        "policy", "success", "95% CI", "mean reward", "turns", title=f"distill {env_id}: {report.test_tasks} test tasks"
    )
    for role, m in report.metrics.items():
        table.add_row(
            role,
            f"{m.success_rate:.3f}",
            f"[{m.success_ci95[0]:.2f}, {m.success_ci95[1]:.2f}]",
            f"{m.mean_reward:.3f}",
            f"{m.mean_turns:.2f}",
        )
    console.print(table)
    ratio = report.trained_vs_teacher
    console.print(
        f"trained student / teacher success: [bold]{ratio:.1%}[/bold]"
        if ratio is not None
        else "teacher solved nothing"
    )
    console.print(
        " · ".join(f"{k} {v:.0f}s" for k, v in report.stage_seconds.items())
        + f" · this run {time.perf_counter() - started:.0f}s"
    )
    console.print(f"report: {out / 'report.md'}")


if __name__ == "__main__":  # pragma: no cover
    app()
