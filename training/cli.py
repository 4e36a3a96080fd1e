"""``skillgym train sft|grpo`` (the Typer sub-app the full CLI mounts as ``skillgym train``) and
``skillgym serve`` (a top-level command it mounts on its own).

All printing happens here; the library reports through return values and a log callback.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import typer
from rich.console import Console
from rich.table import Table

from .recipes import RecipeError, bundled_recipe_path, load_recipe

R = TypeVar("R")

app = typer.Typer(help="Train students: SFT on TRL (LoRA or full fine-tuning).", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)


def _recipe_path(config: str) -> Path:
    """A path, or the name of a bundled recipe (``tiny-cpu``, ``qwen3-4b-lora.yaml``)."""
    path = Path(config)
    return path if path.exists() or "/" in config else bundled_recipe_path(config)


def _recipe(load: Callable[[Path, list[str]], R], config: str, overrides: list[str]) -> R:
    """Load a recipe; a bad one is a usage error (exit 2) that says what is wrong."""
    try:
        return load(_recipe_path(config), overrides)
    except RecipeError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


def _log(as_json: bool) -> Callable[[str], None]:
    """Progress lines for people; none with --json (stdout is the result's)."""
    return (lambda message: None) if as_json else (lambda message: console.print(f"[dim]{message}[/dim]"))


@app.command()
def sft(
    config: str = typer.Option(..., "--config", "-c", help="Recipe YAML, or a bundled name: tiny-cpu, qwen3-4b-lora."),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override a recipe key, e.g. --set training.learning_rate=1e-3."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Supervised fine-tuning of a student on an exported dataset."""
    from .sft import train_sft

    recipe = _recipe(load_recipe, config, overrides)
    try:
        result = train_sft(recipe, log=_log(as_json))
    except (ValueError, FileNotFoundError) as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(result.model_dump(), indent=2))
        return
    table = Table("metric", "value", title=f"SFT -> {result.output_dir}")
    for key in (
        "train_examples",
        "steps",
        "epochs",
        "train_loss",
        "eval_loss",
        "wall_seconds",
        "train_tokens",
        "tokens_per_second",
        "peak_rss_mb",
        "parameters",
    ):
        table.add_row(key, str(getattr(result, key)))
    console.print(table)


@app.command()
def grpo(
    config: str = typer.Option(
        ..., "--config", "-c", help="GRPO recipe YAML, or a bundled name: grpo-tiny-cpu, grpo-qwen3-4b-vllm."
    ),
    overrides: list[str] = typer.Option([], "--set", help="Override a recipe key, e.g. --set grpo.max_steps=20."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """GRPO with a skillgym env: its tools as the model's tools, its grader as the reward."""
    from .grpo import load_grpo_recipe, train_grpo

    result = train_grpo(_recipe(load_grpo_recipe, config, overrides), log=_log(as_json))
    if as_json:
        print(result.model_dump_json(indent=2))
        return
    rewards = ", ".join(f"{r:.2f}" for r in result.rewards)
    console.print(
        f"GRPO -> {result.output_dir}: {result.steps} steps in {result.wall_seconds:.0f} s; mean reward per step: {rewards}"
    )


def serve(
    model: str = typer.Argument(..., help="Model folder (full weights or a LoRA adapter) or hub id."),
    backend: str = typer.Option(
        "auto",
        help="skillgym (the project's server, CPU), vllm (GPU), transformers (transformers serve), "
        "or auto (vllm when installed with a GPU, else skillgym).",
    ),
    host: str = typer.Option("127.0.0.1", help="Listen address."),
    port: int | None = typer.Option(None, help="Port (default: a free one)."),
    timeout: float = typer.Option(600.0, help="Seconds to wait until the server answers."),
    batch_size: int | None = typer.Option(None, help="skillgym backend: most turns generated together."),
    max_new_tokens: int | None = typer.Option(None, help="skillgym backend: tokens per turn when a request sets none."),
) -> None:
    """Serve a model behind an OpenAI-compatible endpoint and print the policy spec to use.

    Ctrl-C or SIGTERM stops the server it started."""
    from .serving import ServerError, interrupt_on_sigterm, pick_backend, start_server, wait_for_exit

    extra: list[str] = []
    if batch_size is not None:
        extra += ["--batch-size", str(batch_size)]
    if max_new_tokens is not None:
        extra += ["--max-new-tokens", str(max_new_tokens)]
    with interrupt_on_sigterm():
        try:
            if extra and pick_backend(backend) != "skillgym":
                raise ServerError("--batch-size and --max-new-tokens are options of the skillgym backend")
            handle = start_server(model, backend=backend, host=host, port=port, timeout=timeout, extra_args=extra)
        except ServerError as exc:
            err_console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        console.print(
            f"[green]serving[/green] {model} with {handle.backend} at {handle.base_url} (log: {handle.log_path})"
        )
        console.print(f"policy spec: [bold]{handle.policy_spec}[/bold]")
        if wait_for_exit([handle]) is not None:
            err_console.print(f"[red]server exited with code {handle.process.returncode}[/red]\n{handle.log_tail()}")
            raise typer.Exit(1)
