"""A clumsy user's inputs get one clear error line and a non-zero exit, never a traceback; an
evaluation whose server is down fails loudly instead of reporting a model that scored 0."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from skillgym.pipeline.cli import app

runner = CliRunner()
ENV = "codebase-explorer-v0"


def _invoke(args: list[str]) -> tuple[int, str]:
    """Exit code and the output with rich's box borders and line wrapping folded to spaces."""
    result = runner.invoke(app, args)
    # The runner catches exceptions; anything but the CLI's own exit is a traceback a user would see.
    assert result.exception is None or isinstance(result.exception, SystemExit), (args, result.exception)
    assert "Traceback" not in result.output, result.output
    return result.exit_code, re.sub(r"[\s│╭╮╰╯─]+", " ", result.output)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["play", "nope-v0"], "no environment 'nope-v0' is registered; known environments: codebase-explorer-v0"),
        (["play", ENV, "--policy", "wizard", "--backend", "local"], "unknown policy spec 'wizard'"),
        (["play", ENV, "--policy", "random:x", "--backend", "local"], "the seed after 'random:' must be an integer"),
        (["play", ENV, "--task", "no-such-task", "--backend", "local"], "no task with id 'no-such-task'"),
        (
            ["play", ENV, "--split", "validation", "--backend", "local"],
            "unknown split 'validation'; codebase-explorer has 'train', 'test'",
        ),
        (["play", ENV, "--backend", "slurm"], "backend: Input should be 'auto', 'docker' or 'local' (got 'slurm')"),
    ],
)
def test_play_input_errors_are_one_line(args: list[str], message: str):
    code, text = _invoke(args)
    assert code == 2 and message in text, text


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ("wizard", "unknown policy spec 'wizard'"),
        ("", "unknown policy spec ''"),
        ("random:x", "the seed after 'random:' must be an integer"),
        ("hf:/nonexistent", "'hf:/nonexistent': no model folder at /nonexistent"),
    ],
)
def test_eval_rejects_bad_policy_specs_before_any_work(tmp_path: Path, policy: str, message: str):
    out = tmp_path / "eval"
    code, text = _invoke(["eval", ENV, "--policy", "expert", "--policy", policy, "--tasks", "2", "--out", str(out)])
    assert code == 2 and "Invalid value for --policy" in text and message in text, text
    assert not out.exists()  # nothing ran, not even the valid policy's cell


def test_rollout_and_eval_refuse_a_file_as_out(tmp_path: Path):
    target = tmp_path / "a-file"
    target.write_text("not a folder\n")
    for command in (["rollout", ENV], ["eval", ENV, "--policy", "expert"]):
        code, text = _invoke([*command, "--tasks", "2", "--env-arg", "backend=local", "--out", str(target)])
        assert code == 2 and f"{target} exists and is not a folder" in text, text
    assert target.read_text() == "not a folder\n"


def test_garbage_manifest_is_a_clear_error_and_force_keeps_the_records(tmp_path: Path):
    out = tmp_path / "run"
    args = ["rollout", ENV, "--tasks", "2", "--env-arg", "backend=local", "--out", str(out), "--json"]
    assert _invoke(args)[0] == 0
    (out / "manifest.json").write_text("garbage {\n")
    code, text = _invoke(args)
    assert code == 2 and f"{out / 'manifest.json'} is not a skillgym run manifest (Invalid JSON" in text, text
    assert "--force to keep its records" in text

    result = runner.invoke(app, [*args, "--force"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{") :])
    assert summary["records"] == 2 and summary["already_done"] == 2  # the records were resumed, not re-run
    kept = list(out.glob("manifest.json.unreadable-*"))
    assert len(kept) == 1 and kept[0].read_text() == "garbage {\n"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["env_id"] == ENV and manifest["history"][0]["unreadable_manifest"] == kept[0].name

    (out / "manifest.json").write_text('{"format_version": 1}')  # valid JSON, not a manifest
    code, text = _invoke(args)
    assert code == 2 and "is not a skillgym run manifest (env_id: Field required)" in text, text


def _closed_port() -> int:
    """A loopback port that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_eval_against_an_unreachable_server_fails_loudly(tmp_path: Path):
    out = tmp_path / "eval"
    policy = f"openai:student@http://127.0.0.1:{_closed_port()}/v1?max_retries=0"
    result = runner.invoke(
        app,
        [
            "eval",
            ENV,
            "--policy",
            policy,
            "--policy",
            "expert",
            "--tasks",
            "2",
            "--env-arg",
            "backend=local",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 1, result.output
    text = re.sub(r"\s+", " ", result.output)
    assert f"error: {policy}: 2 of 2 episodes failed to run, so its success is not a measurement" in text
    assert "ConnectError" in text and "errored" in text
    cells = {c["policy"]: c for c in json.loads((out / "eval.json").read_text())["cells"]}
    assert cells[policy]["errors"] and "ConnectError" in cells[policy]["errors"][0]
    assert cells["expert"]["errors"] == [] and cells["expert"]["metrics"]["success_rate"] == 1.0

    as_json = runner.invoke(
        app,
        ["eval", ENV, "--policy", policy, "--tasks", "2", "--env-arg", "backend=local", "--out", str(out), "--json"],
    )
    assert as_json.exit_code == 1  # resumed from the stored failed records: still an error, also with --json


def test_doctor_says_whether_each_serving_backend_can_start(monkeypatch: pytest.MonkeyPatch):
    import skillgym.cli as core_cli

    code, text = _invoke(["doctor", "--json"])
    report = json.loads(runner.invoke(app, ["doctor", "--json"]).output)
    # scripts/setup.sh installs the `serve` extra, so on a set-up machine both can start.
    assert code == 0 and report["skillgym serve (CPU student server)"] == {
        "ok": True,
        "detail": "can start (transformers, torch, fastapi, uvicorn installed)",
    }
    assert report["transformers serve (optional backend)"]["ok"]
    check = core_cli._serve_check((*core_cli._STUDENT_SERVER_MODULES, "skillgym_no_such_module"))
    assert not check["ok"] and "missing skillgym_no_such_module" in check["detail"]
    assert "pip install 'skillgym[serve]'" in check["detail"]


def test_serving_without_its_extra_says_how_to_fix_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    import importlib.util

    from skillgym.training.serving import ServerError, start_server

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a))
    with pytest.raises(ServerError, match=r"fastapi not installed; pip install 'skillgym\[serve\]'"):
        start_server(tmp_path, backend="transformers", log_dir=tmp_path)
    assert not list(tmp_path.glob("serve-*.log"))  # refused before any process started


@pytest.mark.parametrize(
    "command",
    [
        ["train", "sft", "--config", "{file}"],
        ["train", "grpo", "--config", "{file}"],
        ["orchestrate", "roster", "{file}"],
    ],
)
def test_broken_config_yaml_names_the_file_and_line(tmp_path: Path, command: list[str]):
    """Recipes, GRPO recipes and rosters share one YAML reader: a syntax error names file and
    line, a list where a mapping belongs says so, in one line each."""
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: tiny\ntraining: {lr: 1\n")
    result = CliRunner().invoke(app, [a.replace("{file}", str(broken)) for a in command])
    assert result.exit_code != 0
    assert f"{broken}:3: not valid YAML" in " ".join(result.output.split()), result.output
    listed = tmp_path / "list.yaml"
    listed.write_text("- model: tiny\n")
    result = CliRunner().invoke(app, [a.replace("{file}", str(listed)) for a in command])
    assert result.exit_code != 0 and "is a mapping of keys to values, got list" in " ".join(result.output.split())
