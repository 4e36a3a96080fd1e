"""The orchestrator benchmark runs end to end at a tiny scale (the full runs are for a quiet machine:
``python -m skillgym.benchmarks.orchestrator --json``)."""

from __future__ import annotations

import json

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
