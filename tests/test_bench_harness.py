"""skillgym bench: bench rosters and baselines, a real offline run with its report, and a run
killed with kill -9 that resumes without losing or repeating a task."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from skillgym.benchmarks.bench import load_bench_roster, run_bench
from skillgym.benchmarks.bench.cli import DEFAULT_ROSTER
from skillgym.benchmarks.bench.report import write_report
from skillgym.orchestrator import RosterError
from skillgym.pipeline.cli import app
from skillgym.rollouts.store import shard_paths

ROSTER = load_bench_roster(DEFAULT_ROSTER)


def test_baselines_select_and_apply():
    large = ROSTER.select(["large"])
    assert [b.name for b in large] == ["large"]
    assert {b.name for b in ROSTER.select(["small-base"])} == {"small-base/tiny", "small-base/smollm2"}
    played = large[0].apply(ROSTER.roster)
    assert {s.policy for s in played.subagents} == {"expert"}
    assert all(s.prices.input_per_million == 3.0 for s in played.subagents)
    tuned = ROSTER.select(["small-tuned"])[0].apply(ROSTER.roster)
    policies = {s.name: s.policy for s in tuned.subagents}
    assert policies["codebase-explorer"].startswith("hf:runs/distill/student?")
    assert policies["web-research"] == "expert"  # no policy in the baseline: the roster's own
    with pytest.raises(ValueError, match="no such baseline"):
        ROSTER.select(["huge"])


def test_bad_bench_rosters_name_the_problem(tmp_path: Path):
    base = {"subagents": [{"name": "a", "description": "d", "env": "codebase-explorer-v0"}]}
    with pytest.raises(RosterError, match="names b, not in the roster"):
        load_bench_roster({**base, "baselines": [{"name": "large", "policies": {"b": "expert"}}]})
    with pytest.raises(RosterError, match="baseline 'large', a"):
        load_bench_roster({**base, "baselines": [{"name": "large", "policies": {"a": "gpt:x"}}]})
    with pytest.raises(RosterError, match="does not exist"):
        load_bench_roster(tmp_path / "missing.yaml")


def test_no_subagents_needs_a_real_orchestrator(tmp_path: Path):
    result = CliRunner().invoke(
        app, ["bench", "run", "codebase-qa", "--baseline", "no-subagents", "--tasks", "2", "--out", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert "no-subagents needs a real orchestrator model" in result.output


def test_unknown_bench_is_refused(tmp_path: Path):
    result = CliRunner().invoke(app, ["bench", "run", "tau2-retail", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "not an offline suite" in result.output


def test_codebase_qa_run_and_report(tmp_path: Path):
    record = run_bench("codebase-qa", ROSTER, tmp_path, baselines=["large"], n_tasks=4, backend="local", concurrency=2)
    held = record.suite["held_out_codebase"]
    assert held["name"] and held["content_hash"] and Path(held["path"]).is_dir()
    assert [s.records for s in record.stages] == [4]
    written = write_report([tmp_path], tmp_path / "report")
    tables = json.loads(written["report.json"].read_text())
    row = tables[0]["rows"][0]
    assert row["tasks"] == 4 and row["score"] == 1.0 and row["routing_accuracy"] == 1.0
    assert row["subagent_calls_per_task"] == 1.0
    # The scripted router and expert report no tokens: counted with the reference tokenizer, priced.
    sub = next(m for label, m in row["models"].items() if label.startswith("codebase-explorer"))
    assert sub["counted"] and sub["prompt_tokens"] > 0 and sub["cost_usd"] > 0
    assert abs(sub["cost_usd"] - (sub["prompt_tokens"] * 3.0 + sub["completion_tokens"] * 15.0) / 1e6) < 1e-12
    md = written["report.md"].read_text()
    assert "| large | 4 | 1.000 |" in md and "Held-out codebase" in md
    assert (tmp_path / "report" / "codebase-qa.png").stat().st_size > 1000


def _lines(run_dir: Path) -> list[str]:
    out: list[str] = []
    for shard in shard_paths(run_dir):
        # Only whole lines: the writer may be half-way through one while we poll.
        out += [
            json.loads(line)["task_id"] for line in shard.read_text().splitlines(keepends=True) if line.endswith("\n")
        ]
    return out


def test_kill_9_then_resume_loses_and_repeats_nothing(tmp_path: Path):
    n = 20
    cmd = [
        sys.executable, "-m", "skillgym.pipeline.cli", "bench", "run", "codebase-qa", "--baseline", "large",
        "--tasks", str(n), "--concurrency", "1", "--backend", "local", "--quiet", "--out", str(tmp_path),
    ]  # fmt: skip
    run_dir = tmp_path / "codebase-qa" / "large"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(_lines(run_dir)) < 2 and proc.poll() is None:
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _lines(run_dir)
    assert 2 <= len(before) < n
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, timeout=300)
    after = _lines(run_dir)
    assert len(after) == n and len(set(after)) == n  # every task once: none lost, none repeated
    assert after[: len(before)] == before
    record = json.loads((tmp_path / "codebase-qa" / "bench.json").read_text())
    assert record["stages"][-1]["ran"] == n - len(before)


def test_no_subagents_with_a_model_orchestrator(tmp_path: Path):
    """The orchestrator alone, played by an OpenAI-compatible model (a scripted loopback server):
    it runs, its tokens are the server's (not counted), and no subagent is called."""
    from skillgym.testing.openai_server import ScriptedOpenAIServer, assistant_message, tool_call

    def respond(request):
        return assistant_message(tool_calls=[tool_call("submit", {"answer": "42"})])

    with ScriptedOpenAIServer(respond) as server:
        record = run_bench(
            "codebase-qa",
            ROSTER,
            tmp_path,
            orchestrator=f"openai:scripted@{server.base_url}",
            baselines=["no-subagents"],
            n_tasks=2,
            backend="local",
        )
    assert record.skipped == {} and record.stages[0].records == 2
    row = json.loads(write_report([tmp_path], tmp_path / "r")["report.json"].read_text())[0]["rows"][0]
    assert row["subagent_calls_per_task"] == 0 and row["routing_accuracy"] is None  # no subagent to route to
    ((label, usage),) = row["models"].items()
    assert label.startswith("orchestrator: openai:scripted@") and not usage["counted"] and usage["prompt_tokens"] > 0


def test_mixed_set_is_balanced_shuffled_and_graded_by_each_source():
    from skillgym.benchmarks.bench.run import _prepare_roster
    from skillgym.benchmarks.suites import choose_codebase, suite_tasks

    roster = _prepare_roster("mixed", ROSTER.roster, choose_codebase(), "local")
    source, grader = suite_tasks("mixed", roster, n_tasks=9, seed=0)
    tasks = source.tasks("test")
    expected = {t.metadata["expected_subagent"] for t in tasks}
    assert len(tasks) == 9 and expected == {"codebase-explorer", "web-research", "frontend-design"}
    assert [t.metadata["source_env"] for t in tasks] != sorted(t.metadata["source_env"] for t in tasks)
    again, _ = suite_tasks("mixed", roster, n_tasks=9, seed=0)
    assert [t.id for t in again.tasks("test")] == [t.id for t in tasks]  # the shuffle is seeded
    research = next(t for t in tasks if t.metadata["source_env"] == "web-research-v0")
    gold = research.reference["answer"] + "\nSources: " + " ".join(research.reference["sources"])
    assert grader.grade(research, gold, [], None).components["exact_match"] == 1.0
    design = next(t for t in tasks if t.metadata["source_env"] == "frontend-design-v0")
    with pytest.raises(RuntimeError, match="not bound"):
        grader.grade(design, "index.html", [], None)  # graded from the episode's subagent calls
