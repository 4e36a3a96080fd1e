"""`skillgym distill` end to end at toy scale, stage caching, and GRPO on its student.

The sizes here prove the wiring (every stage runs, is cached, resumes); how well the tiny
student learns at full scale is measured by `python -m skillgym.benchmarks.distill`.
"""

from __future__ import annotations

import json

import pytest

from skillgym.pipeline.distill import DistillConfig, run_distill

SMALL = dict(
    env="codebase-explorer-v0", env_kwargs={"backend": "local"}, train_tasks=40, test_tasks=6, concurrency=2,
    recipe_overrides=["training.max_steps=4", "training.eval_steps=2", "training.logging_steps=1", "tokenizer.vocab_size=512"],
    max_new_tokens=24, untrained_tasks=3,
)


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    out = tmp_path_factory.mktemp("distill")
    messages: list[str] = []
    report = run_distill(DistillConfig(out=out, **SMALL), messages.append)
    return out, report, messages


def test_distill_runs_every_stage_and_reports(distilled):
    out, report, messages = distilled
    assert [m.split(":")[0] for m in messages if m.endswith("running")] == ["rollout", "export", "sft", "eval", "report"]
    assert set(report.success) == {"teacher", "untrained", "trained"}
    assert report.success["teacher"] >= 0.95 and report.test_tasks == 6
    assert report.metrics["trained"].tasks == 6 and report.metrics["untrained"].tasks == 3
    assert report.sft.steps == 4 and report.sft.parameters > 0
    for path in ["report.md", "report.json", "eval/eval.png", "student/training_curve.png", "student/README.md", "student/config.json"]:
        assert (out / path).exists(), path
    assert "Distillation report" in (out / "report.md").read_text()
    # The stage records are typed and the eval cells carry their roles explicitly.
    evaluation = json.loads((out / "stages" / "eval.json").read_text())["result"]
    assert [c["role"] for c in evaluation["cells"]] == ["teacher", "untrained", "trained"]
    assert json.loads((out / "report.json").read_text())["success"] == report.success


def test_distill_rerun_is_cached_and_stages_can_be_forced(distilled):
    out, report, _ = distilled
    messages: list[str] = []
    again = run_distill(DistillConfig(out=out, **SMALL), messages.append)
    assert all("cached" in m for m in messages), messages
    assert again.success == report.success
    forced: list[str] = []
    run_distill(DistillConfig(out=out, stages=["report"], **SMALL), forced.append)
    assert [m for m in forced if m.endswith("running")] == ["report: running"]
    with pytest.raises(ValueError, match="unknown stage"):
        run_distill(DistillConfig(out=out, stages=["nope"], **SMALL))


def test_changed_recipe_retrains_from_scratch_and_re_evaluates(distilled, tmp_path):
    """A finished checkpoint of the old recipe must not be resumed, nor old eval rollouts reused."""
    import shutil

    source, report, _ = distilled
    out = tmp_path / "copy"
    shutil.copytree(source, out)
    changed = dict(SMALL, recipe_overrides=[*SMALL["recipe_overrides"], "training.max_steps=3"])
    messages: list[str] = []
    again = run_distill(DistillConfig(out=out, **changed), messages.append)
    assert [m for m in messages if m.endswith(("running", "resuming"))] == ["sft: running", "eval: running", "report: running"]
    assert again.sft.steps == 3
    assert not (out / "student" / "checkpoints" / "checkpoint-4").exists()
    from skillgym.rollouts import iter_trajectories
    from skillgym.rollouts.evaluate import EvalReport, slug

    evaluation = EvalReport.model_validate(json.loads((out / "stages" / "eval.json").read_text())["result"])
    trained_run = out / "eval" / "runs" / slug(evaluation.by_role()["trained"].policy)
    assert len(list(iter_trajectories(trained_run))) == 6
    # rolled out after the new student was saved, not left over from the old one
    newest_model = (out / "student" / "model.safetensors").stat().st_mtime
    assert all(shard.stat().st_mtime >= newest_model for shard in (trained_run / "trajectories").glob("*.jsonl"))


def test_grpo_on_the_tiny_student_with_the_env_reward(distilled, tmp_path):
    from skillgym.training.grpo import GRPORecipe, train_grpo

    out, _, _ = distilled
    recipe = GRPORecipe(
        model=str(out / "student"), env="codebase-explorer-v0", env_kwargs={"backend": "local"}, n_tasks=12,
        output_dir=tmp_path / "grpo",
        grpo={"max_steps": 5, "num_generations": 2, "per_device_train_batch_size": 2, "max_completion_length": 24,
              "max_tool_calling_iterations": 2, "gradient_checkpointing": False},
    )
    result = train_grpo(recipe)
    assert result.steps == 5 and len(result.rewards) == 5
    assert all(0.0 <= r <= 1.0 for r in result.rewards)
    assert (tmp_path / "grpo" / "config.json").exists() and (tmp_path / "grpo" / "model.safetensors").exists()
    history = json.loads((tmp_path / "grpo" / "grpo_metrics.json").read_text())["log_history"]
    assert any("rewards/CodebaseExplorerV0TRLEnv/mean" in entry for entry in history)
