"""Distill benchmark: ``python -m skillgym.benchmarks.distill [--json] [--out DIR]``.

Runs the README's main job (``skillgym distill codebase-explorer-v0 --teacher expert
--student tiny``) and reports, from that one run: teacher / untrained / trained success on
the held-out test tasks (the untrained student is the baseline the training must beat, the
teacher the ceiling), wall time per stage, peak memory (this process and its children) and
training tokens per second.

Targets (issue 4): the whole job <= 20 minutes on 2 CPU cores; trained success >= 80% of the
teacher's on >= 200 test tasks.
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

TARGET_TOTAL_S = 20 * 60
TARGET_RATIO = 0.8


def peak_rss_mb() -> dict[str, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"self": round(own, 1), "largest_child": round(children, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.add_argument(
        "--out", type=Path, default=None, help="run folder (default: a fresh temp folder, so nothing is cached)"
    )
    parser.add_argument("--env-arg", action="append", default=[], help="key=value for the env, e.g. backend=local")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override key=value")
    parser.add_argument("--test-tasks", type=int, default=200)
    args = parser.parse_args(argv)

    from skillgym.cli_options import parse_key_values
    from skillgym.pipeline import DistillConfig, run_distill

    out = args.out or Path(tempfile.mkdtemp(prefix="skillgym-distill-bench-"))
    log = (lambda m: None) if args.json else (lambda m: print(m, file=sys.stderr))
    started = time.perf_counter()
    # Trainers print their logs to stdout; stdout is for the JSON result alone.
    with contextlib.redirect_stdout(sys.stderr):
        report = run_distill(
            DistillConfig(
                env="codebase-explorer-v0",
                env_kwargs=parse_key_values(args.env_arg),
                teacher="expert",
                student="tiny",
                out=out,
                test_tasks=args.test_tasks,
                recipe_overrides=args.overrides,
            ),
            log,
        )
    wall = time.perf_counter() - started
    result = {
        "benchmark": "distill",
        "out": str(out),
        "test_tasks": report.test_tasks,
        "success": report.success,
        "success_ci95": report.success_ci95,
        "trained_vs_teacher": report.trained_vs_teacher,
        "stage_seconds": report.stage_seconds,
        "total_seconds": round(wall, 1),
        "peak_rss_mb": peak_rss_mb(),
        "train_tokens_per_second": report.sft.tokens_per_second,
        "sft": report.sft.model_dump(),
        "targets": {
            "total_seconds_max": TARGET_TOTAL_S,
            "trained_vs_teacher_min": TARGET_RATIO,
            "met": bool(
                wall <= TARGET_TOTAL_S and (report.trained_vs_teacher or 0) >= TARGET_RATIO and report.test_tasks >= 200
            ),
        },
    }
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
