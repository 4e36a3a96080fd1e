"""`skillgym distill` end to end at toy scale, stage caching, and GRPO on its student.

The sizes here prove the wiring (every stage runs, is cached, resumes); how well the tiny
student learns at full scale is measured by `python -m skillgym.benchmarks.distill`.
"""

from __future__ import annotations

import json

import pytest

from skillgym.pipeline.distill import DistillConfig, run_distill

SMALL = dict(
    env="codebase-explorer-v0",
    env_kwargs={"backend": "local"},
    train_tasks=40,
    test_tasks=6,
    concurrency=2,
    recipe_overrides=[
        "training.max_steps=4",
        "training.eval_steps=2",
        "training.logging_steps=1",
        "tokenizer.vocab_size=512",
    ],
    max_new_tokens=24,
    untrained_tasks=3,
)


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    out = tmp_path_factory.mktemp("distill")
    messages: list[str] = []
    report = run_distill(DistillConfig(out=out, **SMALL), messages.append)
    return out, report, messages


def test_distill_runs_every_stage_and_reports(distilled):
    out, report, messages = distilled
    assert [m.split(":")[0] for m in messages if m.endswith("running")] == [
        "rollout",
        "export",
        "sft",
        "eval",
        "report",
    ]
    assert set(report.success) == {"teacher", "untrained", "trained"}
    assert report.success["teacher"] >= 0.95 and report.test_tasks == 6
    assert report.metrics["trained"].tasks == 6 and report.metrics["untrained"].tasks == 3
    assert report.sft.steps == 4 and report.sft.parameters > 0
    for path in [
        "report.md",
        "report.json",
        "eval/eval.png",
        "student/training_curve.png",
        "student/README.md",
        "student/config.json",
    ]:
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
    assert [m for m in messages if m.endswith(("running", "resuming"))] == [
        "sft: running",
        "eval: running",
        "report: running",
    ]
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


def test_another_matmul_dtype_re_evaluates_without_retraining(distilled):
    """bfloat16 products can change greedy tokens, so an eval cached under float32 is not reused.
    (In the fixture's own folder: a copy elsewhere would retrain, as the student's path moves.)"""
    out, report, _ = distilled
    messages: list[str] = []
    run_distill(DistillConfig(out=out, matmul_dtype="bfloat16", **SMALL), messages.append)
    assert [m for m in messages if m.endswith(("running", "resuming"))] == ["eval: running", "report: running"]
    evaluation = json.loads((out / "stages" / "eval.json").read_text())["result"]
    students = [c["policy"] for c in evaluation["cells"] if c["role"] != "teacher"]
    assert students and all(p.endswith("&matmul_dtype=bfloat16") for p in students)
    restored: list[str] = []  # leave the fixture as the other tests found it
    assert run_distill(DistillConfig(out=out, **SMALL), restored.append).success == report.success
    assert [m for m in restored if m.endswith("running")] == ["eval: running", "report: running"]


def test_grpo_on_the_tiny_student_with_the_env_reward(distilled, tmp_path):
    from skillgym.training.grpo import GRPORecipe, train_grpo

    out, _, _ = distilled
    recipe = GRPORecipe(
        model=str(out / "student"),
        env="codebase-explorer-v0",
        env_kwargs={"backend": "local"},
        n_tasks=12,
        output_dir=tmp_path / "grpo",
        grpo={
            "max_steps": 5,
            "num_generations": 2,
            "per_device_train_batch_size": 2,
            "max_completion_length": 24,
            "max_tool_calling_iterations": 2,
            "gradient_checkpointing": False,
        },
    )
    result = train_grpo(recipe)
    assert result.steps == 5 and len(result.rewards) == 5
    assert all(0.0 <= r <= 1.0 for r in result.rewards)
    assert (tmp_path / "grpo" / "config.json").exists() and (tmp_path / "grpo" / "model.safetensors").exists()
    history = json.loads((tmp_path / "grpo" / "grpo_metrics.json").read_text())["log_history"]
    assert any("rewards/CodebaseExplorerV0TRLEnv/mean" in entry for entry in history)


def test_report_reads_eval_cells_by_role_not_by_label(tmp_path):
    """The report finds teacher, untrained and trained by the role their cells carry (any order,
    any label), and says when a role's episodes failed to run."""
    from skillgym.pipeline.distill import DistillReport, StageRecord, write_report
    from skillgym.rollouts.evaluate import EvalCell, EvalReport
    from skillgym.rollouts.export import ExportReport
    from skillgym.rollouts.metrics import policy_metrics
    from skillgym.training.sft import SFTResult
    from skillgym.types import Trajectory

    def cell(role, reward, failed=False):
        traj = Trajectory(
            env_id="e-v0",
            env_version=0,
            task_id="t",
            reward=None if failed else reward,
            status="failed" if failed else "ok",
            error="server down" if failed else None,
        )
        return EvalCell(
            variant="default",
            policy=f"hf:{role}-model",
            label=f"cell {role}",
            role=role,
            run_dir="r",
            metrics=policy_metrics(role, [traj]),
            errors=["server down"] if failed else [],
        )

    evaluation = EvalReport(
        env="e-v0",
        split="test",
        n_tasks=1,
        samples=1,
        cells=[cell("trained", 0.5), cell("untrained", 0.0, failed=True), cell("teacher", 1.0)],
    )
    sft = SFTResult(
        output_dir="o",
        model_dir="o",
        train_examples=1,
        eval_examples=0,
        steps=1,
        epochs=1.0,
        wall_seconds=1.0,
        train_tokens=1,
        tokens_per_second=1.0,
        peak_rss_mb=1.0,
        parameters=1,
        trainable_parameters=1,
        vocab_size=1,
    )
    export = ExportReport(
        out="d",
        records=1,
        kept=1,
        rows={"train": 1},
        tasks={"train": 1},
        rejected={},
        stats_path="d/stats.json",
        histogram_path=None,
    )
    records = {
        name: StageRecord(stage=name, fingerprint=name, seconds=1.0, result=result)
        for name, result in [("rollout", export), ("export", export), ("sft", sft), ("eval", evaluation)]
    }
    write_report(DistillConfig(env="e-v0", out=tmp_path), records)
    report = DistillReport.model_validate_json((tmp_path / "report.json").read_text())
    assert report.success == {"teacher": 1.0, "untrained": 0.0, "trained": 1.0}
    assert {role: m.mean_reward for role, m in report.metrics.items()} == {
        "teacher": 1.0,
        "untrained": 0.0,
        "trained": 0.5,
    }
    assert list(report.metrics) == ["teacher", "untrained", "trained"]
    assert "untrained: 1 of 1 episodes failed to run" in (tmp_path / "report.md").read_text()
    evaluation.cells = evaluation.cells[:1]
    with pytest.raises(ValueError, match=r"no cell for role\(s\) \['teacher', 'untrained'\]"):
        write_report(DistillConfig(env="e-v0", out=tmp_path), records)
