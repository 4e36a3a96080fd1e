"""``skillgym distill``: teacher rollouts → filter → export → SFT → side-by-side eval → report.

Every stage writes its typed result to ``OUT/stages/<stage>.json`` together with a
fingerprint of its inputs. A re-run skips a stage whose fingerprint still matches, so a
killed run picks up where it stopped (the rollout and eval stages also resume inside
themselves, episode by episode; SFT resumes from its last checkpoint). ``stages`` forces a
subset to run again. The evaluation knows which policy is the teacher, the untrained and the
trained student (:data:`~skillgym.rollouts.evaluate.Role`), so the report reads cells by role.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError

from skillgym.io import atomic_write_text
from skillgym.models import is_known_model
from skillgym.registry import make_spec
from skillgym.rollouts import RolloutConfig, RolloutSummary, iter_trajectories, run_rollouts
from skillgym.rollouts.config import EnvSelection, RunOptions
from skillgym.rollouts.evaluate import EvalConfig, EvalReport, Role, run_eval
from skillgym.rollouts.export import ExportConfig, ExportReport, export_dataset
from skillgym.rollouts.metrics import PolicyMetrics
from skillgym.training.recipes import SFTRecipe, bundled_recipe_path, load_recipe
from skillgym.training.sft import SFTResult

STAGES = ("rollout", "export", "sft", "eval", "report")

Log = Callable[[str], None]
R = TypeVar("R", bound=BaseModel)


class DistillConfig(RunOptions, EnvSelection):
    """Everything one ``skillgym distill`` needs (the env, run options, teacher, student, sizes)."""

    teacher: str = "expert"
    student: str = Field(default="tiny", description="'tiny' (embedded default), a HF model id, or a local folder.")
    recipe: Path | None = Field(
        default=None, description="SFT recipe; default tiny-cpu.yaml for 'tiny', else qwen3-4b-lora.yaml."
    )
    recipe_overrides: list[str] = Field(default_factory=list, description="--set key=value for the recipe.")
    train_tasks: int | None = Field(
        default=None, ge=1, description="Teacher episodes on the train split (None: every train task)."
    )
    test_tasks: int = Field(default=200, ge=1)
    min_reward: float = 1.0
    # The in-process students batch the turns of concurrent episodes (skillgym/policies/hf_batching.py):
    # more episodes in flight means fuller batches, at ~a few MB of KV cache each for the tiny student.
    concurrency: int = Field(default=16, ge=1, description="Episodes in flight at once.")
    untrained_tasks: int = Field(
        default=50,
        ge=1,
        description="Test tasks for the untrained student (the first N of the same list): it fills every turn up to "
        "max_new_tokens until the turn limit, so it costs several times the others, and it scores ~0.",
    )
    max_new_tokens: int = Field(
        default=96,
        ge=8,
        description="Generation cap per student turn in evaluation (the expert's longest turn is ~60 tokens with the tiny student's tokenizer).",
    )
    matmul_dtype: Literal["bfloat16", "auto"] | None = Field(
        default=None,
        description="The students' matrix products in evaluation (hf: option matmul_dtype; auto: bfloat16 where "
        "the CPU has it natively; None: the model's dtype).",
    )
    stages: list[str] | None = Field(
        default=None, description="Stages to force; others run only when missing or stale."
    )


class StageRecord(BaseModel, Generic[R]):
    """What ``OUT/stages/<stage>.json`` holds: the stage's typed result and the fingerprint of its inputs."""

    stage: str
    fingerprint: str
    seconds: float
    result: R


class SFTSummary(BaseModel):
    """The training numbers the report shows (a subset of :class:`~skillgym.training.sft.SFTResult`)."""

    train_examples: int
    steps: int
    epochs: float
    train_loss: float | None
    eval_loss: float | None
    tokens_per_second: float
    train_tokens: int
    peak_rss_mb: float
    parameters: int
    vocab_size: int
    wall_seconds: float


class ExportSummary(BaseModel):
    """The export numbers the report shows (a subset of :class:`~skillgym.rollouts.export.ExportReport`)."""

    records: int
    kept: int
    rows: dict[str, int]
    rejected: dict[str, int]


class DistillReport(BaseModel):
    """The result of a distillation, also written to ``OUT/report.json`` (and, for people, ``report.md``)."""

    env: str
    teacher: str
    student: str
    success: dict[Role, float] = Field(description="Success rate per role.")
    success_ci95: dict[Role, tuple[float, float]]
    trained_vs_teacher: float | None = Field(
        description="Trained student's success over the teacher's (None: the teacher solved nothing)."
    )
    test_tasks: int
    stage_seconds: dict[str, float]
    total_seconds: float
    sft: SFTSummary
    export: ExportSummary
    metrics: dict[Role, PolicyMetrics]
    reward_components: dict[Role, dict[str, float]] = Field(
        default_factory=dict,
        description="Mean of each reward component the grader reports (e.g. f1, citation), per role, over its "
        "episodes that ran (an ungraded one counts 0; failed episodes are left out).",
    )
    artifacts: dict[str, str]


class ReportResult(BaseModel):
    """The report stage's record: where the report is."""

    report: str
    trained_vs_teacher: float | None


def fingerprint(payload: Any) -> str:
    """A short stable hash of a stage's inputs."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _stage_path(out: Path, stage: str) -> Path:
    return out / "stages" / f"{stage}.json"


def _cached(config: DistillConfig, stage: str, result_type: type[R], print_: str) -> StageRecord[R] | None:
    path = _stage_path(config.out, stage)
    if config.stages and stage in config.stages:
        return None
    if path.exists():
        try:
            record = StageRecord[result_type].model_validate_json(path.read_text())  # type: ignore[valid-type]
        except ValidationError:
            return None  # written by an older version, or damaged: run the stage again
        if record.fingerprint == print_:
            return record
    return None


def _run_stage(
    config: DistillConfig,
    stage: str,
    result_type: type[R],
    inputs: Any,
    work: Callable[[], R],
    log: Log,
    outputs: list[Path],
) -> StageRecord[R]:
    """Run ``stage`` unless its record matches ``inputs``. A stage killed midway resumes from
    what it wrote (its ``.started`` marker carries the same fingerprint); a stage whose inputs
    changed, or that --stages forces, first clears ``outputs``, so that nothing it left for
    other inputs (a finished checkpoint, a rollout of the old model) is mistaken for new work."""
    print_ = fingerprint(inputs)
    cached = _cached(config, stage, result_type, print_)
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
    record = StageRecord[result_type](  # type: ignore[valid-type]
        stage=stage, fingerprint=print_, seconds=round(time.perf_counter() - started, 1), result=result
    )
    atomic_write_text(_stage_path(config.out, stage), record.model_dump_json(indent=2) + "\n")
    log(f"{stage}: done in {record.seconds:.0f} s")
    return record


# Envs whose traces need their own tiny recipe (longer sequences, another vocabulary): env id -> bundled recipe.
TINY_RECIPES = {"web-research-v0": "web-research-tiny", "frontend-design-v0": "frontend-design-tiny"}

# Envs whose student turns are long (frontend-design-v0 writes a whole page, ~1,700 tokens, in
# one call): DistillConfig fields used where the caller set none. The untrained student fills
# every turn up to max_new_tokens, so it gets few tasks there.
ENV_DEFAULTS: dict[str, dict[str, Any]] = {
    "frontend-design-v0": {"max_new_tokens": 2048, "untrained_tasks": 3},
    # web_search copies the whole question: up to ~130 tokens of arguments with the tiny tokenizer.
    "web-research-v0": {"max_new_tokens": 160},
}


# Named pretrained students: DistillConfig fields used where the caller set none.
# - max_new_tokens: in SmolLM2's tokenizer the expert's longest codebase-explorer turn (the `default`
#   question's ast script) is ~300 tokens, not ~60, so the 96-token cap would cut every such command.
# - untrained_tasks: untrained SmolLM2 answers in prose in one turn (~25-170 tokens, measured), so it
#   is cheap enough to run on the same 200 test tasks as the others (the tiny one runs 10 full turns).
# - train_tasks: the recipe trains on a few hundred traces (max_train_examples); 1,000 teacher
#   episodes leave plenty to sample from without rolling out all ~4,900.
# - matmul_dtype: decoding a 135M model on CPU is bound by reading its weights; bfloat16 products
#   read half the bytes (the recipe trains under bfloat16 autocast too), where the CPU has native
#   bfloat16 ("auto"; emulated, a product is several times slower). EXPERIMENTS.md §18.
# - concurrency: with the system block read once per decode step for every episode, 32 episodes in
#   flight decode faster than 16 (200 test tasks of the distilled student: 18 min, not 29). §19.
STUDENT_DEFAULTS: dict[str, dict[str, Any]] = {
    "smollm2-135m": {
        "max_new_tokens": 320,
        "untrained_tasks": 200,
        "train_tasks": 1000,
        "matmul_dtype": "auto",
        "concurrency": 32,
    }
}


def with_student_defaults(config: DistillConfig) -> DistillConfig:
    """``config`` with :data:`STUDENT_DEFAULTS` for its student filled into the fields the caller did not
    set (or set to None: the CLI passes ``train_tasks=None`` when ``--train-tasks`` is not given)."""
    defaults = STUDENT_DEFAULTS.get(config.student, {})
    unset = {k: v for k, v in defaults.items() if k not in config.model_fields_set or getattr(config, k) is None}
    return config.model_copy(update=unset) if unset else config


def with_env_defaults(config: DistillConfig) -> DistillConfig:
    """``config`` with :data:`ENV_DEFAULTS` for its env filled into the fields the caller did not set."""
    unset = {k: v for k, v in ENV_DEFAULTS.get(config.env, {}).items() if k not in config.model_fields_set}
    return config.model_copy(update=unset) if unset else config


def default_recipe_name(student: str, env: str | None = None) -> str:
    """The bundled recipe for a student: the CPU recipes for the tiny (per env where
    :data:`TINY_RECIPES` names one) and the named pretrained models (``smollm2-135m`` ->
    ``smollm2-135m-lora``), the Qwen3-4B LoRA recipe for any other."""
    if student == "tiny":
        return TINY_RECIPES.get(env or "", "tiny-cpu")
    if is_known_model(student):
        return f"{student}-lora"
    return "qwen3-4b-lora"


def recipe_for(config: DistillConfig) -> SFTRecipe:
    """The SFT recipe: the bundled one for the student (or ``config.recipe``), pointed at this run's folders."""
    path = config.recipe or bundled_recipe_path(default_recipe_name(config.student, config.env))
    base_overrides = [f"dataset={config.out / 'dataset'}", f"output_dir={config.out / 'student'}"]
    if config.student != "tiny":
        base_overrides.append(f"model={config.student}")
    recipe = load_recipe(path, base_overrides + list(config.recipe_overrides))
    if recipe.warmup is not None and not recipe.warmup.exclude:
        # Warm up on code the env does not ask about: never on the env's own codebase.
        subject = subject_dir(config)
        if subject:
            recipe.warmup.exclude = [subject]
    return recipe


def subject_dir(config: DistillConfig) -> str | None:
    """The folder the env's tasks are about (``EnvSpec.subject_dir``), read from the spec alone:
    no env is built and no sandbox starts."""
    spec = make_spec(config.env, **config.env_kwargs)
    return str(spec.subject_dir) if spec.subject_dir else None


def run_distill(config: DistillConfig, log: Log | None = None) -> DistillReport:
    """Run (or resume) the whole pipeline.

    Args:
        config: What to distill, into what, and where.
        log: Receives one line per stage event (running, resuming, cached, done).

    Returns:
        The report, also saved as ``report.json`` and ``report.md`` under ``config.out``.

    Raises:
        ValueError: ``config.stages`` names an unknown stage.
    """
    say = log or (lambda message: None)
    unknown = set(config.stages or []) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stage(s) {sorted(unknown)}; stages are {', '.join(STAGES)}")
    config = with_env_defaults(with_student_defaults(config))
    config.out.mkdir(parents=True, exist_ok=True)
    recipe = recipe_for(config)
    train_tasks = config.train_tasks

    rollout_inputs = {
        "env": config.env,
        "env_kwargs": config.env_kwargs,
        "teacher": config.teacher,
        "n": train_tasks,
        "seed": config.seed,
    }
    rollout = _run_stage(
        config,
        "rollout",
        RolloutSummary,
        rollout_inputs,
        lambda: _rollout(config, train_tasks),
        say,
        [config.out / "teacher"],
    )

    export_inputs = {"rollout": rollout.fingerprint, "min_reward": config.min_reward}
    export = _run_stage(
        config, "export", ExportReport, export_inputs, lambda: _export(config), say, [config.out / "dataset"]
    )

    sft_inputs = {"export": export.fingerprint, "recipe": json.loads(recipe.model_dump_json())}
    sft = _run_stage(config, "sft", SFTResult, sft_inputs, lambda: _sft(recipe), say, [config.out / "student"])

    eval_inputs = {
        "sft": sft.fingerprint,
        "teacher": config.teacher,
        "n": config.test_tasks,
        "max_new_tokens": config.max_new_tokens,
        "matmul_dtype": config.matmul_dtype,  # another dtype can change greedy tokens
        "env_kwargs": config.env_kwargs,
        "untrained_tasks": config.untrained_tasks,
    }
    evaluation = _run_stage(
        config,
        "eval",
        EvalReport,
        eval_inputs,
        lambda: _eval(config, recipe),
        say,
        [config.out / "eval", config.out / "student-untrained"],
    )

    records: dict[str, StageRecord[Any]] = {"rollout": rollout, "export": export, "sft": sft, "eval": evaluation}
    report_inputs = {k: r.fingerprint for k, r in records.items()}
    _run_stage(config, "report", ReportResult, report_inputs, lambda: write_report(config, records), say, [])
    return DistillReport.model_validate_json((config.out / "report.json").read_text())


# -- stages ------------------------------------------------------------------------------------------
def _rollout(config: DistillConfig, n_tasks: int | None) -> RolloutSummary:
    return run_rollouts(
        RolloutConfig(
            env=config.env,
            env_kwargs=config.env_kwargs,
            policy=config.teacher,
            split="train",
            n_tasks=n_tasks,
            concurrency=config.concurrency,
            backend=config.backend,
            out=config.out / "teacher",
            seed=config.seed,
        )
    )


def _export(config: DistillConfig) -> ExportReport:
    return export_dataset(
        ExportConfig(
            run_dir=config.out / "teacher",
            out=config.out / "dataset",
            min_reward=config.min_reward,
            overwrite=True,
            seed=config.seed,
        )
    )


def _sft(recipe: SFTRecipe) -> SFTResult:
    from skillgym.training import train_sft

    return train_sft(recipe)


def untrained_student(config: DistillConfig, recipe: SFTRecipe) -> str:
    """The policy spec of the student before training: the same architecture and tokenizer
    with fresh weights (tiny), or the pretrained base model."""
    if config.student != "tiny":
        return f"hf:{config.student}"
    # transformers and torch load only when a tiny student is actually built.
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
    """The policy spec of the trained student (its merged weights when a LoRA run merged them)."""
    merged = config.out / "student" / "merged"
    return f"hf:{merged if merged.exists() else config.out / 'student'}"


def _eval(config: DistillConfig, recipe: SFTRecipe) -> EvalReport:
    generation = f"?max_new_tokens={config.max_new_tokens}"
    if config.matmul_dtype is not None:
        generation += f"&matmul_dtype={config.matmul_dtype}"
    untrained = untrained_student(config, recipe) + generation
    roles: dict[str, Role] = {
        config.teacher: "teacher",
        untrained: "untrained",
        trained_student(config) + generation: "trained",
    }
    return run_eval(
        EvalConfig(
            env=config.env,
            env_kwargs=config.env_kwargs,
            policies=list(roles),
            roles=roles,
            split="test",
            n_tasks=config.test_tasks,
            policy_tasks={untrained: min(config.untrained_tasks, config.test_tasks)},
            concurrency=config.concurrency,
            backend=config.backend,
            out=config.out / "eval",
            seed=config.seed,
        )
    )


def mean_components(run_dir: Path) -> dict[str, float]:
    """The mean of each reward component over a run's episodes that ran (the score alone says
    little on graders with several parts: web-research's F1 vs its citations); an episode that
    ended ungraded (the turn limit before an answer) counts 0 in each."""
    totals: dict[str, float] = {}
    graded = 0
    for trajectory in iter_trajectories(run_dir):
        if trajectory.status != "ok":
            continue
        graded += 1
        for name, value in trajectory.reward_components.items():
            totals[name] = totals.get(name, 0.0) + float(value)
    return {name: round(total / graded, 4) for name, total in totals.items()} if graded else {}


def write_report(config: DistillConfig, records: dict[str, StageRecord[Any]]) -> ReportResult:
    """Write report.json (everything measured) and report.md (the same, for people)."""
    evaluation: EvalReport = records["eval"].result
    cells = evaluation.by_role()
    missing = sorted({"teacher", "untrained", "trained"} - set(cells))
    if missing:
        raise ValueError(
            f"{config.out / 'eval' / 'eval.json'} has no cell for role(s) {missing}; run with --stages eval"
        )
    roles = {role: cells[role].metrics for role in ("teacher", "untrained", "trained")}
    teacher_success = roles["teacher"].success_rate
    trained_success = roles["trained"].success_rate
    sft: SFTResult = records["sft"].result
    export: ExportReport = records["export"].result
    stage_seconds = {name: r.seconds for name, r in records.items()}
    report = DistillReport(
        env=config.env,
        teacher=config.teacher,
        student=config.student,
        success={role: m.success_rate for role, m in roles.items()},
        success_ci95={role: m.success_ci95 for role, m in roles.items()},
        trained_vs_teacher=round(trained_success / teacher_success, 4) if teacher_success else None,
        test_tasks=roles["teacher"].tasks,
        stage_seconds=stage_seconds,
        total_seconds=round(sum(stage_seconds.values()), 1),
        sft=SFTSummary.model_validate(sft.model_dump(include=set(SFTSummary.model_fields))),
        export=ExportSummary.model_validate(export.model_dump(include=set(ExportSummary.model_fields))),
        metrics=roles,
        reward_components={role: mean_components(Path(cells[role].run_dir)) for role in roles},
        artifacts={
            "student": str(config.out / "student"),
            "eval_chart": str(config.out / "eval" / "eval.png"),
            "training_curve": str(config.out / "student" / "training_curve.png"),
        },
    )
    atomic_write_text(config.out / "report.json", report.model_dump_json(indent=2) + "\n")
    lines = [
        f"# Distillation report: {config.env}",
        "",
        f"Teacher `{config.teacher}` → student `{config.student}`, evaluated on {report.test_tasks} held-out test tasks.",
        "",
        "| policy | tasks | success | 95% CI | mean reward | turns | answer/trace chars |",
        "|---|---|---|---|---|---|---|",
    ]
    for role, m in roles.items():
        lo, hi = m.success_ci95
        lines.append(
            f"| {role} | {m.tasks} | {m.success_rate:.3f} | [{lo:.2f}, {hi:.2f}] | {m.mean_reward:.3f} | {m.mean_turns:.2f} | {m.answer_chars:.0f}/{m.trace_chars:.0f} |"
        )
    names = sorted({name for parts in report.reward_components.values() for name in parts})
    if names:
        lines += ["", "| policy | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for role, parts in report.reward_components.items():
            lines.append(f"| {role} | " + " | ".join(f"{parts.get(n, 0.0):.3f}" for n in names) + " |")
    for role, cell in cells.items():
        if cell.errors:
            # Episodes that did not run score 0 but measure nothing: say so next to the numbers.
            lines.append(
                f"\n**{role}: {cell.metrics.failed_episodes} of {cell.metrics.episodes} episodes failed to run**"
                f" ({cell.errors[0]}); its success rate is not a measurement of the model."
            )
    ratio = report.trained_vs_teacher
    lines += [
        "",
        f"Trained student reaches **{ratio:.1%}** of the teacher's success rate."
        if ratio is not None
        else "The teacher solved nothing.",
        "",
        "## Time per stage",
        "",
        *[f"- {name}: {sec:.0f} s" for name, sec in report.stage_seconds.items()],
        f"- total: {report.total_seconds:.0f} s",
        "",
        "## Training",
        "",
        *[f"- {k}: {v}" for k, v in report.sft.model_dump().items()],
        "",
        "![eval](eval/eval.png)",
        "![training curve](student/training_curve.png)",
        "",
    ]
    atomic_write_text(config.out / "report.md", "\n".join(lines))
    return ReportResult(report=str(config.out / "report.json"), trained_vs_teacher=ratio)
