"""Distill benchmark: ``python -m skillgym.benchmarks.distill [--json] [--out DIR] [--student NAME]``.

Two parts:

* ``--part distill`` (default) runs the README's main job (``skillgym distill codebase-explorer-v0
  --teacher expert --student tiny``, or ``--student smollm2-135m``) and reports, from that one run:
  teacher / untrained / trained success on the held-out test tasks (the untrained student is the
  baseline the training must beat, the teacher the ceiling), wall time per stage, peak memory
  (this process and its children) and training tokens per second.
* ``--part throughput`` trains each SFT recipe (the tiny student's, SmolLM2-135M with LoRA and
  with full fine-tuning) for a few optimizer steps on the same expert traces and reports their
  training tokens per second side by side: a comparison of recipes, not of finished models.

Targets: the tiny student's job <= 20 minutes on 2 CPU cores (issue 4), SmolLM2's <= 45 minutes
(issue 12); trained success >= 80% of the teacher's on >= 200 test tasks.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_TOTAL_S = {"tiny": 20 * 60, "smollm2-135m": 45 * 60}
TARGET_RATIO = 0.8
ENV = "codebase-explorer-v0"
THROUGHPUT_RECIPES = ("tiny-cpu", "smollm2-135m-lora", "smollm2-135m-full")


def peak_rss_mb() -> dict[str, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"self": round(own, 1), "largest_child": round(children, 1)}


def distill_part(args: argparse.Namespace, out: Path, log: Any) -> dict[str, Any]:
    """The whole pipeline once; the JSON the README quotes."""
    from skillgym.cli_options import parse_key_values
    from skillgym.pipeline import DistillConfig, run_distill

    options: dict[str, Any] = {}
    if args.train_tasks:
        options["train_tasks"] = args.train_tasks
    if args.untrained_tasks:
        options["untrained_tasks"] = args.untrained_tasks
    started = time.perf_counter()
    report = run_distill(
        DistillConfig(
            env=ENV,
            env_kwargs=parse_key_values(args.env_arg),
            teacher="expert",
            student=args.student,
            recipe=args.recipe,
            out=out,
            test_tasks=args.test_tasks,
            recipe_overrides=args.overrides,
            **options,
        ),
        log,
    )
    wall = time.perf_counter() - started
    limit = TARGET_TOTAL_S.get(args.student, TARGET_TOTAL_S["smollm2-135m"])
    return {
        "benchmark": "distill",
        "student": args.student,
        "out": str(out),
        "test_tasks": report.test_tasks,
        "success": report.success,
        "success_ci95": report.success_ci95,
        "tasks_per_role": {role: m.tasks for role, m in report.metrics.items()},
        "trained_vs_teacher": report.trained_vs_teacher,
        "stage_seconds": report.stage_seconds,
        "total_seconds": round(wall, 1),
        "peak_rss_mb": peak_rss_mb(),
        "train_tokens_per_second": report.sft.tokens_per_second,
        "sft": report.sft.model_dump(),
        "targets": {
            "total_seconds_max": limit,
            "trained_vs_teacher_min": TARGET_RATIO,
            "met": bool(
                wall <= limit and (report.trained_vs_teacher or 0) >= TARGET_RATIO and report.test_tasks >= 200
            ),
        },
    }


def expert_dataset(out: Path, tasks: int) -> Path:
    """Expert traces on the first ``tasks`` train tasks, exported as an SFT dataset (cached in ``out``)."""
    from skillgym.rollouts import RolloutConfig, run_rollouts
    from skillgym.rollouts.export import ExportConfig, export_dataset

    dataset = out / "dataset"
    if not (dataset / "dataset_dict.json").is_file():
        run_rollouts(RolloutConfig(env=ENV, policy="expert", split="train", n_tasks=tasks, out=out / "teacher"))
        export_dataset(ExportConfig(run_dir=out / "teacher", out=dataset, min_reward=1.0, overwrite=True))
    return dataset


def throughput_part(args: argparse.Namespace, out: Path, log: Any) -> dict[str, Any]:
    """Each recipe for ``--steps`` optimizer steps on the same traces: training tokens/s side by side."""
    from skillgym.training import load_recipe, train_sft
    from skillgym.training.recipes import bundled_recipe_path

    dataset = args.dataset or expert_dataset(out, args.train_tasks or 96)
    rows: dict[str, Any] = {}
    for name in args.recipes.split(","):
        log(f"throughput: {name}, {args.steps} steps")
        recipe = load_recipe(
            bundled_recipe_path(name),
            [
                f"dataset={dataset}",
                f"output_dir={out / 'sft' / name}",
                f"training.max_steps={args.steps}",
                "training.eval_steps=null",
                "training.save_steps=null",
                "val_fraction=0",
                "resume=false",
                *args.overrides,
            ],
        )
        if recipe.lora is not None:
            recipe.lora.merge = False  # merging measures nothing about training speed
        result = train_sft(recipe)
        rows[name] = {
            "tokens_per_second": result.tokens_per_second,
            "train_tokens": result.train_tokens,
            "steps": result.steps,
            "batch": recipe.training.per_device_train_batch_size * recipe.training.gradient_accumulation_steps,
            "tokens_per_example": round(
                result.train_tokens / max(1, result.steps * recipe.training.per_device_train_batch_size)
            ),
            "trainable_parameters": result.trainable_parameters,
            "parameters": result.parameters,
            "peak_rss_mb": result.peak_rss_mb,
            "wall_seconds": result.wall_seconds,
            "shared_prefix": recipe.training.shared_prefix,
            "bf16": recipe.training.bf16,
            "threads": recipe.training.torch_threads,
        }
    return {"benchmark": "distill-throughput", "dataset": str(dataset), "steps": args.steps, "recipes": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("distill", "throughput"), default="distill")
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.add_argument(
        "--out", type=Path, default=None, help="run folder (default: a fresh temp folder, so nothing is cached)"
    )
    parser.add_argument("--student", default="tiny", help="distill part: tiny (the main job) or smollm2-135m")
    parser.add_argument("--recipe", type=Path, default=None, help="distill part: SFT recipe (default: the student's)")
    parser.add_argument("--env-arg", action="append", default=[], help="key=value for the env, e.g. backend=local")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override key=value")
    parser.add_argument("--test-tasks", type=int, default=200)
    parser.add_argument("--train-tasks", type=int, default=None, help="teacher episodes (default: the pipeline's)")
    parser.add_argument("--untrained-tasks", type=int, default=None, help="distill part: untrained student's tasks")
    parser.add_argument("--recipes", default=",".join(THROUGHPUT_RECIPES), help="throughput part: bundled recipes")
    parser.add_argument("--steps", type=int, default=4, help="throughput part: optimizer steps per recipe")
    parser.add_argument("--dataset", type=Path, default=None, help="throughput part: an export folder to train on")
    args = parser.parse_args(argv)

    out = args.out or Path(tempfile.mkdtemp(prefix="skillgym-distill-bench-"))
    log = (lambda m: None) if args.json else (lambda m: print(m, file=sys.stderr))
    # Trainers print their logs to stdout; stdout is for the JSON result alone.
    with contextlib.redirect_stdout(sys.stderr):
        part = throughput_part if args.part == "throughput" else distill_part
        result = part(args, out, log)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
