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


def test_play_shows_an_orchestrators_subagent_calls_as_a_tree():
    args = ["play", "orchestrator-v0", "--policy", "expert", "--backend", "local"]
    collapsed = runner.invoke(app, [*args, "--depth", "0"], terminal_width=400)
    assert collapsed.exit_code == 0, collapsed.output
    assert "+ subagent codebase-explorer [expert] ok" in collapsed.output
    assert "    = " in collapsed.output  # the call collapsed to its answer
    opened = runner.invoke(app, [*args, "--depth", "1"], terminal_width=400)
    assert opened.exit_code == 0, opened.output
    # Opened, the call's own turns appear indented under it (the subagent's grep/submit calls).
    assert "        [assistant]" in opened.output and "    = " not in opened.output


def test_play_unknown_policy_is_a_clear_error():
    result = runner.invoke(app, ["play", "codebase-explorer-v0", "--policy", "nonsense", "--backend", "local"])
    assert result.exit_code != 0
    assert "unknown policy spec" in str(result.exception) or "unknown policy spec" in result.output


def test_doctor_json():
    result = runner.invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert {"docker engine", "bubblewrap", "gpu", "torch"} <= set(report)


def test_the_installed_cli_has_every_documented_command():
    """The core app holds only core commands; the full app (the entry point) adds the stages'."""
    from skillgym.pipeline.cli import app as full_app

    core = {"envs", "play", "doctor", "sandbox", "skills", "tasks"}
    stages = {"rollout", "export", "eval", "train", "serve", "distill"}
    for command in sorted(core | stages):
        result = runner.invoke(full_app, [command, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output, (command, result.output)
    for command in sorted(stages):
        assert runner.invoke(app, [command, "--help"]).exit_code != 0, command
    for group, sub in [
        ("train", "sft"),
        ("train", "grpo"),
        ("sandbox", "gc"),
        ("skills", "search"),
        ("tasks", "generate"),
    ]:
        assert runner.invoke(full_app, [group, sub, "--help"]).exit_code == 0, (group, sub)


def test_env_arg_errors_name_the_option():
    from skillgym.pipeline.cli import app as full_app

    result = runner.invoke(
        full_app, ["eval", "codebase-explorer-v0", "--policy", "expert", "--out", "x", "--env-arg", "novalue"]
    )
    assert result.exit_code == 2 and "--env-arg" in result.output
    result = runner.invoke(
        full_app, ["eval", "codebase-explorer-v0", "--policy", "expert", "--out", "x", "--backend", "slurm"]
    )
    assert result.exit_code == 2 and "backend" in result.output
