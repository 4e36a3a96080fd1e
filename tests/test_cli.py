"""The command line, through Typer's runner (the same code path as the installed script)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from skillgym.cli import app

runner = CliRunner()


def test_envs_lists_builtin_env():
    result = runner.invoke(app, ["envs", "--json"])
    assert result.exit_code == 0, result.output
    assert "codebase-explorer-v0" in [row["id"] for row in json.loads(result.output)]


def test_play_expert_prints_trajectory_and_score():
    result = runner.invoke(app, ["play", "codebase-explorer-v0", "--policy", "expert", "--backend", "local", "--json"])
    assert result.exit_code == 0, result.output
    traj = json.loads(result.output.strip().splitlines()[-1])
    assert traj["reward"] >= 0.9 and traj["policy_id"] == "expert"
    text = runner.invoke(app, ["play", "codebase-explorer-v0", "--policy", "random:1", "--backend", "local"])
    assert text.exit_code == 0 and "reward" in text.output


def test_play_unknown_policy_is_a_clear_error():
    result = runner.invoke(app, ["play", "codebase-explorer-v0", "--policy", "nonsense", "--backend", "local"])
    assert result.exit_code != 0
    assert "unknown policy spec" in str(result.exception) or "unknown policy spec" in result.output


def test_doctor_json():
    result = runner.invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert {"docker engine", "bubblewrap", "gpu", "torch"} <= set(report)
