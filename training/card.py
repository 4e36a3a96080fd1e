"""The model card (README.md) and the training-curve PNG written next to a trained model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skillgym.io import atomic_write, atomic_write_text

if TYPE_CHECKING:
    from .recipes import SFTRecipe
    from .sft import SFTResult


def plot_curve(history: list[dict[str, Any]], path: Path, title: str = "SFT") -> None:
    """Training loss per logged step and validation loss per evaluation, on one axis."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt

    train = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
    evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h and "step" in h]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    if train:
        ax.plot(*zip(*train), label="train loss", lw=1.2)
    if evals:
        ax.plot(*zip(*evals), "o-", label="validation loss", lw=1.2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (assistant tokens)")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png"), binary=True)
    plt.close(fig)


def write_card(path: Path, recipe: SFTRecipe, result: SFTResult, history: list[dict[str, Any]]) -> None:
    base = "tiny Qwen3-architecture model, initialized from a config" if recipe.model == "tiny" else recipe.model
    method = (
        "full fine-tuning"
        if recipe.lora is None
        else f"LoRA r={recipe.lora.r}, alpha={recipe.lora.alpha}, targets {recipe.lora.target_modules}"
    )
    evals = [h for h in history if "eval_loss" in h]
    lines = [
        "---",
        "library_name: transformers",
        "tags: [skillgym, sft, trl, tool-use]",
        "---",
        f"# {Path(result.output_dir).name}",
        "",
        "A student model trained by skillgym's SFT (TRL `SFTTrainer`, assistant-only loss through the",
        "Qwen3 training template). It speaks the Qwen3 chat format with `<tool_call>` markup.",
        "",
        "## Data",
        f"- dataset: `{recipe.dataset}`" + "".join(f" + `{extra}`" for extra in recipe.extra_datasets),
        f"- conversations: {result.train_examples} train, {result.eval_examples} validation",
        f"- skill hash(es): {', '.join(f'`{h}`' for h in result.skill_hashes) or 'not recorded'}",
        "",
        "## Recipe",
        f"- base: {base}",
        f"- method: {method}",
        f"- parameters: {result.parameters:,} ({result.trainable_parameters:,} trainable); vocabulary {result.vocab_size}",
        "",
        "```yaml",
        json.dumps(json.loads(recipe.model_dump_json()), indent=2),
        "```",
        "",
        "## Metrics",
        "| metric | value |",
        "|---|---|",
        f"| optimizer steps | {result.steps} |",
        f"| epochs | {result.epochs} |",
        f"| final train loss | {_fmt(result.train_loss)} |",
        f"| validation loss | {_fmt(result.eval_loss)} |",
        f"| wall time (s) | {result.wall_seconds} |",
        f"| training tokens | {result.train_tokens:,} |",
        f"| tokens / s | {result.tokens_per_second} |",
        f"| peak RSS (MB) | {result.peak_rss_mb} |",
        "",
        "![training curve](training_curve.png)",
        "",
    ]
    if evals:
        lines += ["Validation loss by step: " + ", ".join(f"{h['step']}: {h['eval_loss']:.4f}" for h in evals), ""]
    if result.resumed_from:
        lines += [f"Resumed from `{result.resumed_from}`.", ""]
    atomic_write_text(path, "\n".join(lines))


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
