"""The tiny-student learning experiment: expert rollouts -> SFT dataset -> tiny SFT -> evaluation.

    python -m skillgym.training.experiments --out runs/exp --train-tasks 5000 --test-tasks 200 \\
        --set training.max_train_minutes=10

Prints one JSON object: expert / untrained / trained success on the same held-out test tasks
(per question type), stage wall times, training tokens per second and peak RSS. It is the
evidence behind ``tiny-cpu.yaml`` (see ``EXPERIMENTS.md``); ``skillgym distill`` is the
product path for the same pipeline.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from collections import Counter
from pathlib import Path
from typing import Any

ENV_ID = "codebase-explorer-v0"


def expert_dataset(out: Path, train_tasks: int, backend: str = "local") -> dict[str, Any]:
    """Roll the env's expert over the first ``train_tasks`` train tasks; keep correct episodes."""
    from datasets import Dataset, DatasetDict

    import skillgym
    from skillgym.episode import run_episode
    from skillgym.rollouts.export import to_row

    env = skillgym.make(ENV_ID, split="train", backend=backend)
    try:
        policy = env.env_spec.expert()
        tasks = env.env_spec.tasks.tasks("train")[:train_tasks]
        rows = []
        for task in tasks:
            trajectory = run_episode(env, policy, task_id=task.id)
            if trajectory.reward_components.get("correct") == 1.0:
                rows.append(to_row(trajectory, "all"))
    finally:
        env.close()
    DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(str(out))
    return {"episodes": len(tasks), "kept": len(rows)}


def evaluate(policy: Any, test_tasks: int, backend: str = "local") -> dict[str, Any]:
    """Success (grader's ``correct``) of ``policy`` on the first ``test_tasks`` test tasks."""
    import skillgym
    from skillgym.episode import run_episode

    env = skillgym.make(ENV_ID, split="test", backend=backend)
    correct: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    started = time.perf_counter()
    try:
        for task in env.env_spec.tasks.tasks("test")[:test_tasks]:
            trajectory = run_episode(env, policy, task_id=task.id)
            qtype = task.metadata["qtype"]
            seen[qtype] += 1
            correct[qtype] += int(trajectory.reward_components.get("correct") == 1.0)
    finally:
        env.close()
    total = sum(seen.values())
    return {
        "tasks": total,
        "success": round(sum(correct.values()) / total, 4) if total else 0.0,
        "per_type": {q: f"{correct[q]}/{seen[q]}" for q in seen},
        "seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from skillgym.policies.hf_policy import HFPolicy

    from .recipes import bundled_recipe_path, load_recipe
    from .sft import train_sft
    from .tiny import build_tiny_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--train-tasks", type=int, default=5000)
    parser.add_argument("--test-tasks", type=int, default=200)
    parser.add_argument("--recipe", default="tiny-cpu")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--max-new-tokens", type=int, default=384)
    parser.add_argument("--skip-untrained", action="store_true")
    args = parser.parse_args(argv)

    report: dict[str, Any] = {"stages": {}}
    data = args.out / "data"
    started = time.perf_counter()
    if not data.exists():
        report["rollouts"] = expert_dataset(data, args.train_tasks)
    report["stages"]["rollouts_s"] = round(time.perf_counter() - started, 1)

    recipe = load_recipe(
        bundled_recipe_path(args.recipe), [f"dataset={data}", f"output_dir={args.out / 'student'}", *args.overrides]
    )
    started = time.perf_counter()
    result = train_sft(recipe)
    report["stages"]["sft_s"] = round(time.perf_counter() - started, 1)
    report["sft"] = result.model_dump(
        include={
            "steps",
            "epochs",
            "train_loss",
            "eval_loss",
            "train_tokens",
            "tokens_per_second",
            "parameters",
            "vocab_size",
        }
    )

    import skillgym

    expert = skillgym.make(ENV_ID, split="test", backend="local").env_spec.expert()
    report["expert"] = evaluate(expert, args.test_tasks)
    report["trained"] = evaluate(HFPolicy(result.model_dir, max_new_tokens=args.max_new_tokens), args.test_tasks)
    if not args.skip_untrained:
        trained = HFPolicy(result.model_dir, max_new_tokens=args.max_new_tokens)
        untrained = build_tiny_model(recipe.tiny, trained.tokenizer, seed=recipe.training.seed + 1)
        report["untrained"] = evaluate(
            HFPolicy(untrained, trained.tokenizer, max_new_tokens=args.max_new_tokens), args.test_tasks
        )
    expert_success = report["expert"]["success"]
    report["trained_over_expert"] = round(report["trained"]["success"] / expert_success, 4) if expert_success else None
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))  # noqa: T201 - this module is a script
    return report


if __name__ == "__main__":
    main()
