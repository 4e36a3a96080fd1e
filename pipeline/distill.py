"""``skillgym distill``: teacher rollouts → filter → export → SFT → side-by-side eval → report.

Every stage writes its result to ``OUT/stages/<stage>.json`` together with a fingerprint of
its inputs. A re-run skips a stage whose fingerprint still matches, so a killed run picks
up where it stopped (the rollout and eval stages also resume inside themselves, episode by
episode; SFT resumes from its last checkpoint). ``stages`` forces a subset to run again.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

STAGES = ("rollout", "export", "sft", "eval", "report")

Log = Callable[[str], None]


class DistillConfig(BaseModel):
    env: str
    env_kwargs: dict[str, Any] = Field(default_factory=dict)
    teacher: str = "expert"
    student: str = Field(default="tiny", description="'tiny' (embedded default), a HF model id, or a local folder.")
    recipe: Path | None = Field(default=None, description="SFT recipe; default tiny-cpu.yaml for 'tiny', else qwen3-4b-lora.yaml.")
    recipe_overrides: list[str] = Field(default_factory=list, description="--set key=value for the recipe.")
    out: Path
    train_tasks: int | None = Field(default=None, ge=1, description="Teacher episodes on the train split (None: every train task).")
    test_tasks: int = Field(default=200, ge=1)
    min_reward: float = 1.0
    concurrency: int = Field(default=4, ge=1)
    backend: str = "local"
    seed: int = 0
    untrained_tasks: int = Field(
        default=50, ge=1,
        description="Test tasks for the untrained student (the first N of the same list): it fills every turn up to "
        "max_new_tokens until the turn limit, so it costs several times the others, and it scores ~0.",
    )
    max_new_tokens: int = Field(default=96, ge=8, description="Generation cap per student turn in evaluation (the expert's longest turn is ~60 tokens with the tiny student's tokenizer).")
    stages: list[str] | None = Field(default=None, description="Stages to force; others run only when missing or stale.")


class StageRecord(BaseModel):
    stage: str
    fingerprint: str
    seconds: float
    result: dict[str, Any]


def fingerprint(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _stage_path(out: Path, stage: str) -> Path:
    return out / "stages" / f"{stage}.json"


def _cached(config: DistillConfig, stage: str, print_: str) -> StageRecord | None:
    path = _stage_path(config.out, stage)
    if config.stages and stage in config.stages:
        return None
    if path.exists():
        record = StageRecord.model_validate_json(path.read_text())
        if record.fingerprint == print_:
            return record
    return None


def _save(config: DistillConfig, record: StageRecord) -> None:
    from skillgym.rollouts.store import atomic_write_text

    path = _stage_path(config.out, record.stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, record.model_dump_json(indent=2) + "\n")


def _run_stage(
    config: DistillConfig, stage: str, inputs: Any, work: Callable[[], dict[str, Any]], log: Log, outputs: list[Path]
) -> StageRecord:
    """Run ``stage`` unless its record matches ``inputs``. A stage killed midway resumes from
    what it wrote (its ``.started`` marker carries the same fingerprint); a stage whose inputs
    changed, or that --stages forces, first clears ``outputs``, so that nothing it left for
    other inputs (a finished checkpoint, a rollout of the old model) is mistaken for new work."""
    import shutil

    from skillgym.rollouts.store import atomic_write_text

    print_ = fingerprint(inputs)
    cached = _cached(config, stage, print_)
    if cached is not None:
        log(f"{stage}: cached ({cached.seconds:.0f} s when it ran)")
        return cached
    marker = _stage_path(config.out, stage).with_suffix(".started")
    forced = bool(config.stages and stage in config.stages)
    if forced or not marker.exists() or marker.read_text().strip() != print_:
        for path in outputs:
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        log(f"{stage}: running")
    else:
        log(f"{stage}: resuming")
    marker.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(marker, print_ + "\n")
    started = time.perf_counter()
    result = work()
    record = StageRecord(stage=stage, fingerprint=print_, seconds=round(time.perf_counter() - started, 1), result=result)
    _save(config, record)
    log(f"{stage}: done in {record.seconds:.0f} s")
    return record


def recipe_for(config: DistillConfig) -> Any:
    from skillgym.training import bundled_recipe_path, load_recipe

    path = config.recipe or bundled_recipe_path("tiny-cpu" if config.student == "tiny" else "qwen3-4b-lora")
    base_overrides = [f"dataset={config.out / 'dataset'}", f"output_dir={config.out / 'student'}"]
    if config.student != "tiny":
        base_overrides.append(f"model={config.student}")
    recipe = load_recipe(path, base_overrides + list(config.recipe_overrides))
    if recipe.warmup is not None and not recipe.warmup.exclude:
        # Warm up on code the env does not ask about: never on the env's own codebase.
        codebase = env_codebase(config)
        if codebase:
            recipe.warmup.exclude = [codebase]
    return recipe


def env_codebase(config: DistillConfig) -> str | None:
    """The folder of source the env's tasks are about, when the env says (metadata 'codebase')."""
    import skillgym

    env = skillgym.make(config.env, **config.env_kwargs)
    try:
        return env.env_spec.metadata.get("codebase")
    finally:
        env.close()


def run_distill(config: DistillConfig, log: Log | None = None) -> dict[str, Any]:
    """Run (or resume) the whole pipeline; returns the report dict also saved as report.json."""
    say = log or (lambda message: None)
    unknown = set(config.stages or []) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stage(s) {sorted(unknown)}; stages are {', '.join(STAGES)}")
    config.out.mkdir(parents=True, exist_ok=True)
    recipe = recipe_for(config)
    train_tasks = config.train_tasks
    records: dict[str, StageRecord] = {}

    rollout_inputs = {"env": config.env, "env_kwargs": config.env_kwargs, "teacher": config.teacher, "n": train_tasks, "seed": config.seed}
    records["rollout"] = _run_stage(config, "rollout", rollout_inputs, lambda: _rollout(config, train_tasks), say,
                                   [config.out / "teacher"])

    export_inputs = {"rollout": records["rollout"].fingerprint, "min_reward": config.min_reward}
    records["export"] = _run_stage(config, "export", export_inputs, lambda: _export(config), say, [config.out / "dataset"])

    sft_inputs = {"export": records["export"].fingerprint, "recipe": json.loads(recipe.model_dump_json())}
    records["sft"] = _run_stage(config, "sft", sft_inputs, lambda: _sft(recipe), say, [config.out / "student"])

    eval_inputs = {"sft": records["sft"].fingerprint, "teacher": config.teacher, "n": config.test_tasks,
                   "max_new_tokens": config.max_new_tokens, "env_kwargs": config.env_kwargs,
                   "untrained_tasks": config.untrained_tasks}
    records["eval"] = _run_stage(config, "eval", eval_inputs, lambda: _eval(config, recipe), say,
                                [config.out / "eval", config.out / "student-untrained"])

    report_inputs = {k: r.fingerprint for k, r in records.items()}
    records["report"] = _run_stage(config, "report", report_inputs, lambda: write_report(config, records), say, [])
    return json.loads((config.out / "report.json").read_text())


# -- stages ------------------------------------------------------------------------------------------
def _rollout(config: DistillConfig, n_tasks: int | None) -> dict[str, Any]:
    from skillgym.rollouts import RolloutConfig, run_rollouts

    summary = run_rollouts(RolloutConfig(
        env=config.env, env_kwargs=config.env_kwargs, policy=config.teacher, split="train", n_tasks=n_tasks,
        concurrency=config.concurrency, backend=config.backend, out=config.out / "teacher", seed=config.seed,
    ))
    return json.loads(summary.model_dump_json())


def _export(config: DistillConfig) -> dict[str, Any]:
    from skillgym.rollouts.export import ExportConfig, export_dataset

    report = export_dataset(ExportConfig(run_dir=config.out / "teacher", out=config.out / "dataset",
                                         min_reward=config.min_reward, overwrite=True, seed=config.seed))
    return json.loads(report.model_dump_json())


def _sft(recipe: Any) -> dict[str, Any]:
    from skillgym.training import train_sft

    return json.loads(train_sft(recipe).model_dump_json())


def untrained_student(config: DistillConfig, recipe: Any) -> str:
    """The policy spec of the student before training: the same architecture and tokenizer
    with fresh weights (tiny), or the pretrained base model."""
    if config.student != "tiny":
        return f"hf:{config.student}"
    from transformers import AutoTokenizer

    from skillgym.training import build_tiny_model
    from skillgym.training.tokenizer import save_tokenizer

    target = config.out / "student-untrained"
    if not (target / "config.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(str(config.out / "student"))
        build_tiny_model(recipe.tiny, tokenizer, seed=recipe.training.seed).save_pretrained(str(target))
        save_tokenizer(tokenizer, target)
    return f"hf:{target}"


def trained_student(config: DistillConfig) -> str:
    merged = config.out / "student" / "merged"
    return f"hf:{merged if merged.exists() else config.out / 'student'}"


def _eval(config: DistillConfig, recipe: Any) -> dict[str, Any]:
    from skillgym.evaluate import EvalConfig, run_eval

    generation = f"?max_new_tokens={config.max_new_tokens}"
    untrained = untrained_student(config, recipe) + generation
    policies = [config.teacher, untrained, trained_student(config) + generation]
    report = run_eval(EvalConfig(
        env=config.env, env_kwargs=config.env_kwargs, policies=policies, split="test", n_tasks=config.test_tasks,
        policy_tasks={untrained: min(config.untrained_tasks, config.test_tasks)},
        concurrency=config.concurrency, backend=config.backend, out=config.out / "eval", seed=config.seed,
    ))
    return {**json.loads(report.model_dump_json()), "roles": dict(zip(["teacher", "untrained", "trained"], policies))}


def write_report(config: DistillConfig, records: dict[str, StageRecord]) -> dict[str, Any]:
    """report.json (everything measured) and report.md (the same, for people)."""
    from skillgym.rollouts.store import atomic_write_text

    eval_result = records["eval"].result
    by_label = {c["label"]: c["metrics"] for c in eval_result["cells"]}
    roles = {role: by_label[spec] for role, spec in eval_result["roles"].items()}
    teacher_success = roles["teacher"]["success_rate"]
    trained_success = roles["trained"]["success_rate"]
    sft = records["sft"].result
    report = {
        "env": config.env,
        "teacher": config.teacher,
        "student": config.student,
        "success": {role: m["success_rate"] for role, m in roles.items()},
        "success_ci95": {role: m["success_ci95"] for role, m in roles.items()},
        "trained_vs_teacher": round(trained_success / teacher_success, 4) if teacher_success else None,
        "test_tasks": roles["teacher"]["tasks"],
        "stage_seconds": {name: r.seconds for name, r in records.items() if name != "report"},
        "total_seconds": round(sum(r.seconds for name, r in records.items() if name != "report"), 1),
        "sft": {k: sft.get(k) for k in ("train_examples", "steps", "epochs", "train_loss", "eval_loss", "tokens_per_second",
                                        "train_tokens", "peak_rss_mb", "parameters", "vocab_size", "wall_seconds")},
        "export": {k: records["export"].result.get(k) for k in ("records", "kept", "rows", "rejected")},
        "metrics": roles,
        "artifacts": {"student": str(config.out / "student"), "eval_chart": str(config.out / "eval" / "eval.png"),
                      "training_curve": str(config.out / "student" / "training_curve.png")},
    }
    atomic_write_text(config.out / "report.json", json.dumps(report, indent=2) + "\n")
    lines = [
        f"# Distillation report: {config.env}",
        "",
        f"Teacher `{config.teacher}` → student `{config.student}`, evaluated on {report['test_tasks']} held-out test tasks.",
        "",
        "| policy | tasks | success | 95% CI | mean reward | turns | answer/trace chars |",
        "|---|---|---|---|---|---|---|",
    ]
    for role, m in roles.items():
        lo, hi = m["success_ci95"]
        lines.append(f"| {role} | {m['tasks']} | {m['success_rate']:.3f} | [{lo:.2f}, {hi:.2f}] | {m['mean_reward']:.3f} | {m['mean_turns']:.2f} | {m['answer_chars']:.0f}/{m['trace_chars']:.0f} |")
    ratio = report["trained_vs_teacher"]
    lines += [
        "",
        f"Trained student reaches **{ratio:.1%}** of the teacher's success rate." if ratio is not None else "The teacher solved nothing.",
        "",
        "## Time per stage",
        "",
        *[f"- {name}: {sec:.0f} s" for name, sec in report["stage_seconds"].items()],
        f"- total: {report['total_seconds']:.0f} s",
        "",
        "## Training",
        "",
        *[f"- {k}: {v}" for k, v in report["sft"].items()],
        "",
        "![eval](eval/eval.png)",
        "![training curve](student/training_curve.png)",
        "",
    ]
    atomic_write_text(config.out / "report.md", "\n".join(lines))
    return {"report": str(config.out / "report.json"), "trained_vs_teacher": ratio}
