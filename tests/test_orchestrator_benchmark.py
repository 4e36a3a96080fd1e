"""The orchestrator benchmark runs end to end at a tiny scale (the full runs are for a quiet machine:
``python -m skillgym.benchmarks.orchestrator --json``)."""

from __future__ import annotations

import json

import pytest

from skillgym.benchmarks.orchestrator import main


def test_benchmark_tiny_run_reports_both_parts(capsys):
    assert (
        main(
            [
                "--json",
                "--tasks",
                "2",
                "--policies",
                "expert",
                "--episodes",
                "2",
                "--calls",
                "3",
                "--delay",
                "0.05",
                "--rounds",
                "1",
                "--sandbox",
                "local",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    (row,) = report["accuracy"]
    assert row["policy"] == "expert" and row["tasks"] == 2
    assert row["standalone"]["mean_reward"] == row["orchestrated"]["mean_reward"] == 1.0
    assert row["same_outcome"] == 2 and row["rollup_sums_ok"] and row["routing"]["accuracy"] == 1.0
    assert row["subagent_cost_usd"] > 0 and "+ subagent codebase-explorer [expert] ok" in row["example_tree"]
    throughput = report["throughput"]
    tree = throughput["orchestrator"]
    assert tree["episodes"] == tree["episodes_ok"] == 2 and tree["subagent_calls"] == 6
    assert tree["requests"] == 2 * (2 + 3)  # two orchestrator turns and three subagent turns per episode
    assert 0 < tree["efficiency"] <= 1.0 and tree["ideal_s"] == 0.15
    flat = throughput["baseline_flat_subagents"]
    assert flat["episodes"] == flat["episodes_ok"] == 6 and 0 < flat["efficiency"] <= 1.0


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory):
    """A fresh tiny Qwen3 student with a tokenizer trained on a few expert conversations."""
    import skillgym
    from skillgym.chat_template import render
    from skillgym.training import build_tiny_model, train_tokenizer
    from skillgym.training.tiny import TinyModelSpec
    from skillgym.training.tokenizer import save_tokenizer

    env = skillgym.make("codebase-explorer-v0", backend="local")
    try:
        texts = []
        for task in env.env_spec.tasks.tasks("train")[:8]:
            trajectory = skillgym.run_episode(env, env.env_spec.expert(), task_id=task.id)
            texts.append(render(trajectory.messages, tools=trajectory.tools, training=True))
    finally:
        env.close()
    tokenizer = train_tokenizer(texts, vocab_size=400, boilerplate_min_fraction=0.5)
    path = tmp_path_factory.mktemp("student")
    spec = TinyModelSpec(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, intermediate_size=128
    )
    build_tiny_model(spec, tokenizer, seed=0).save_pretrained(str(path))
    save_tokenizer(tokenizer, path)
    return path


def test_served_policy_runs_the_student_behind_http(tiny_student, capsys):
    """``served:hf:PATH``: the student served by the CPU student server for the run, standalone
    and as the roster's subagent; nothing lost, the server stopped afterwards."""
    import psutil

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    policy = f"served:hf:{tiny_student}?max_new_tokens=8"
    assert main(["--json", "--part", "accuracy", "--tasks", "2", "--policies", policy, "--sandbox", "local"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["accuracy"]
    assert row["policy"] == policy and row["served_as"].startswith(f"openai:{tiny_student.name}@http://127.0.0.1:")
    assert row["served_as"].endswith("?max_tokens=8&temperature=0")
    assert row["lost_episodes"] == 0 and row["failed_standalone"] == 0 and row["rollup_sums_ok"]
    assert row["subagent_tokens"] > 0 and row["same_outcome"] == 2
    left = {p.pid for p in psutil.Process().children(recursive=True)} - before
    assert not [p for p in left if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
