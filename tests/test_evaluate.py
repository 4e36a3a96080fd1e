"""`skillgym eval`: several policies and env variants on the same held-out tasks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from skillgym.pipeline.cli import app
from skillgym.rollouts import iter_trajectories
from skillgym.tasks import save_tasks_jsonl
from skillgym.types import Task

runner = CliRunner()
CORPUS = Path(os.environ.get("SKILLGYM_CORPUS", Path(__file__).resolve().parents[2] / "shared" / "skills-corpus"))


def test_eval_compares_policies_on_the_same_tasks(tmp_path):
    out = tmp_path / "eval"
    args = [
        "eval",
        "codebase-explorer-v0",
        "--policy",
        "expert",
        "--policy",
        "random:3",
        "--tasks",
        "12",
        "--out",
        str(out),
        "--env-arg",
        "backend=local",
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{") :])
    cells = {c["label"]: c["metrics"] for c in report["cells"]}
    assert cells["expert"]["success_rate"] >= 0.95 and cells["random:3"]["success_rate"] <= 0.05
    assert cells["expert"]["tasks"] == cells["random:3"]["tasks"] == 12
    lo, hi = cells["expert"]["success_ci95"]
    assert lo <= cells["expert"]["success_rate"] <= hi
    assert (out / "eval.json").exists() and (out / "eval.png").stat().st_size > 1000
    runs = sorted((out / "runs").iterdir())
    task_sets = [{t.task_id for t in iter_trajectories(r)} for r in runs]
    assert task_sets[0] == task_sets[1] and len(task_sets[0]) == 12
    # Resumable: a second run finds every episode stored and runs none.
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and json.loads(again.output[again.output.index("{") :])["cells"] == report["cells"]
    # More tasks into the same folder: refused, with the option the message names; with it, the
    # stored episodes are kept and the two new tasks run, each once.
    more = [*args[: args.index("12")], "14", *args[args.index("12") + 1 :]]
    refused = runner.invoke(app, more)
    assert refused.exit_code != 0 and "n_tasks: 12 in the directory, 14 now" in refused.output
    assert "--force" in refused.output
    extended = runner.invoke(app, [*more, "--force"])
    assert extended.exit_code == 0, extended.output
    grown = {
        c["label"]: c["metrics"]["tasks"] for c in json.loads(extended.output[extended.output.index("{") :])["cells"]
    }
    assert grown == {"expert": 14, "random:3": 14}
    for run in runs:
        episodes = list(iter_trajectories(run))
        assert len(episodes) == 14 and len({t.task_id for t in episodes}) == 14


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"skills corpus not found at {CORPUS} (set SKILLGYM_CORPUS)")
def test_skill_ablation_runs_through_eval(tmp_path, monkeypatch):
    """With-skill vs no-skill: same tasks, the skill text present in one variant only."""
    tasks = tmp_path / "tasks.jsonl"
    save_tasks_jsonl(
        [
            Task(
                id=f"t{i}",
                prompt=f"Why does step {i} of the build fail?",
                reference={"answer": "missing", "match": "regex"},
                split="test",
            )
            for i in range(3)
        ],
        tasks,
    )
    monkeypatch.setenv("SKILLGYM_SKILLS_PATH", str(CORPUS / "obra-superpowers"))
    out = tmp_path / "ablation"
    result = runner.invoke(
        app,
        [
            "eval",
            "skill:systematic-debugging",
            "--policy",
            "random:0",
            "--tasks",
            "3",
            "--out",
            str(out),
            "--env-arg",
            f"tasks={tasks}",
            "--env-arg",
            "backend=local",
            "--variant",
            "with-skill:instruction_mode=system",
            "--variant",
            "no-skill:instruction_mode=none",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{") :])
    assert [c["variant"] for c in report["cells"]] == ["with-skill", "no-skill"]
    with_skill = list(iter_trajectories(out / "runs" / "with-skill-random_0"))
    no_skill = list(iter_trajectories(out / "runs" / "no-skill-random_0"))
    assert {t.task_id for t in with_skill} == {t.task_id for t in no_skill} == {"t0", "t1", "t2"}
    system_with = with_skill[0].messages[0]
    assert system_with["role"] == "system" and "debug" in system_with["content"].lower()
    assert all(
        "systematic" not in (t.messages[0]["content"] if t.messages[0]["role"] == "system" else "").lower()
        for t in no_skill
    )
