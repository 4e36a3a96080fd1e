"""Graders: matchers, composites from config, checks in a real sandbox, the rubric judge over HTTP."""

from __future__ import annotations

import json

import pytest

from skillgym.graders import (
    CommandChecks,
    Compactness,
    Composite,
    GraderConfigError,
    Part,
    TaskReferenceGrader,
    grader_from_config,
)
from skillgym.graders.match import AnswerMatch
from skillgym.graders.rubric import RubricJudge
from skillgym.llm import StructuredOutputError
from skillgym.sandbox import make_sandbox
from skillgym.sandbox.base import SandboxConfig
from skillgym.testing import ErrorReply, ScriptedOpenAIServer
from skillgym.types import Grade, SkillSpec, Task

SKILL = SkillSpec(
    name="sum-helper", description="Adds numbers carefully.", instructions="Add the numbers; answer with the sum."
)


def task(**reference) -> Task:
    return Task(id="t1", prompt="What is 2 + 2?", reference=reference)


@pytest.mark.parametrize(
    ("mode", "answer", "gold", "expected"),
    [
        ("exact", "4", "4", 1.0),
        ("exact", " 4", "4.0", 0.0),
        ("normalized", "`Hello World.`", "hello   world", 1.0),
        ("numeric", "The total is 1,000.0000001", "1000", 1.0),
        ("numeric", "about 12", "13", 0.0),
        ("regex", "the bug is in parse_date()", r"parse_?date", 1.0),
        ("f1", "the quick brown fox", "quick brown dog", pytest.approx(4 / 7)),
    ],
)
def test_matchers_from_config(mode, answer, gold, expected):
    grader = grader_from_config({"type": "match", "mode": mode})
    assert grader.grade(task(answer=gold), answer, [], None).score == expected


def test_composite_weights_and_components():
    config = {
        "type": "composite",
        "parts": [
            {"type": "match", "mode": "numeric", "weight": 2},
            {"type": "match", "mode": "exact", "weight": 1, "name": "strict"},
            {"type": "compactness", "budget_chars": 10, "weight": 1},
        ],
    }
    grader = grader_from_config(config)
    # numeric right (2), exact wrong (0), compactness: 16 chars over a 10 budget -> 1 - 6/30 = 0.8
    grade = grader.grade(task(answer="4"), "it is 4, I think", [], None)
    assert grade.components == {"match": 1.0, "strict": 0.0, "compactness": 0.8}
    assert grade.score == pytest.approx((2 * 1.0 + 0 + 0.8) / 4)
    assert grade.details["match"]["weight"] == 2


def test_composite_names_repeated_parts_and_rejects_bad_weights():
    both = Composite([Part(AnswerMatch("exact")), Part(AnswerMatch("normalized"))])
    assert both.names == ["answermatch_1", "answermatch_2"]
    with pytest.raises(ValueError):
        Composite([Part(AnswerMatch(), 0.0)])
    with pytest.raises(GraderConfigError, match=r"grader\.parts\[1\]\.weight"):
        grader_from_config({"type": "composite", "parts": [{"type": "match"}, {"type": "match", "weight": -1}]})


def test_config_errors_name_the_path(monkeypatch):
    monkeypatch.delenv("SKILLGYM_JUDGE", raising=False)
    with pytest.raises(GraderConfigError, match=r"grader\.parts\[0\]\.type: unknown grader type 'nope'"):
        grader_from_config({"type": "composite", "parts": [{"type": "nope"}]})
    with pytest.raises(GraderConfigError, match="unknown match mode"):
        grader_from_config({"type": "match", "mode": "fuzzy"})
    with pytest.raises(GraderConfigError, match="needs a judge model"):
        grader_from_config({"type": "rubric"})


def test_compactness_grader_halves_an_answer_longer_than_its_trace():
    messages = [{"role": "assistant", "content": "ok"}]
    assert Compactness(200).grade(task(), "short", messages, None).score == 0.5
    assert Compactness(200).grade(task(), "short", [{"role": "tool", "content": "x" * 50}], None).score == 1.0


@pytest.fixture(params=["local", pytest.param("docker", marks=pytest.mark.docker)])
def sandbox(request):
    if request.param == "docker":
        request.getfixturevalue("docker_base_image")
    with make_sandbox(SandboxConfig(backend=request.param)) as sb:
        yield sb


def test_checks_run_in_the_sandbox(sandbox):
    sandbox.write_file("out.txt", "total=42\n")
    grader = grader_from_config(
        {
            "type": "composite",
            "parts": [
                {"type": "check", "command": "test -f out.txt"},
                {"type": "check", "command": "cat out.txt", "output_regex": r"total=4[0-9]"},
                {"type": "checks"},  # the task's own checks
            ],
        }
    )
    t = task(checks=["grep -q 42 out.txt", {"command": "exit 3", "exit_code": 3}, {"command": "false", "weight": 2}])
    grade = grader.grade(t, "done", [], sandbox)
    assert grade.components["check_1"] == 1.0 and grade.components["check_2"] == 1.0
    # task checks: 1 + 1 pass, weight-2 check fails -> 2/4
    assert grade.components["checks"] == 0.5
    failed = [r for r in grade.details["checks"]["checks"] if not r["passed"]]
    assert failed[0]["check"] == "false" and "exit code 1, expected 0" in failed[0]["problem"]


def test_checks_need_a_sandbox_and_checks():
    with pytest.raises(RuntimeError, match="need the episode's sandbox"):
        CommandChecks(["true"]).grade(task(), "x", [], None)
    with pytest.raises(ValueError, match="has no checks"):
        CommandChecks().grade(task(), "x", [], None)
    with pytest.raises(ValueError, match=r"reference.checks\[0\]: field 'timeout'"):
        CommandChecks().grade(task(checks=[{"command": "true", "timeout": -1}]), "x", [], None)


def test_task_reference_grader_infers_parts(sandbox, monkeypatch):
    monkeypatch.delenv("SKILLGYM_JUDGE", raising=False)
    sandbox.write_file("a.txt", "x")
    grader = TaskReferenceGrader()
    both = Task(id="t", prompt="p", reference={"answer": "4", "checks": ["test -f a.txt"], "rubric": ["nice"]})
    grade = grader.grade(both, "4", [], sandbox)
    assert grade.score == 1.0 and set(grade.components) == {"match", "checks"}
    assert "rubric_skipped" in grade.details
    explicit = Task(id="u", prompt="p", reference={"answer": "4.0", "grader": {"type": "match", "mode": "numeric"}})
    assert grader.grade(explicit, "4", [], sandbox).score == 1.0
    with pytest.raises(GraderConfigError, match="nothing to grade with"):
        grader.grade(Task(id="v", prompt="p"), "4", [], sandbox)


# -- rubric judge over a real loopback HTTP server -------------------------------------------


def _verdict(ids, score=1.0):
    return json.dumps({"scores": [{"id": i, "score": score, "reason": "looks right"} for i in ids]})


def test_rubric_judge_repairs_malformed_and_invalid_replies():
    replies = iter(
        [
            "Sure! Here is my grading: {scores: [oops",  # not JSON
            json.dumps({"scores": [{"id": "skill_followed", "score": 3, "reason": "x"}]}),  # score > 1
            "```json\n" + _verdict(["skill_followed"]) + "\n```",  # criteria missing
            _verdict(["skill_followed", "request_fulfilled", "task_1", "task_2"], 0.5),
        ]
    )
    with ScriptedOpenAIServer(lambda req: {"role": "assistant", "content": next(replies)}) as server:
        judge = RubricJudge(f"openai:judge-model@{server.base_url}", skill=SKILL, max_repairs=3)
        t = task(rubric=["States the sum", {"text": "Shows the working", "weight": 2}])
        grade = judge.grade(
            t, "4", [{"role": "user", "content": t.prompt}, {"role": "assistant", "content": "4"}], None
        )
        requests = list(server.requests)
    assert grade.score == 0.5
    assert grade.details["judge_model"] == "judge-model" and grade.details["judge_attempts"] == 4
    assert [c["id"] for c in grade.details["rubric"]] == ["skill_followed", "request_fulfilled", "task_1", "task_2"]
    assert grade.details["rubric"][3]["weight"] == 2
    assert all(s["reason"] for s in grade.details["scores"])
    # each repair shows the model its own reply and the precise problem
    repair_texts = [r["messages"][-1]["content"] for r in requests[1:]]
    assert "not valid JSON" in repair_texts[0]
    assert "field scores.0.score" in repair_texts[1]
    assert "missing ['request_fulfilled', 'task_1', 'task_2']" in repair_texts[2]
    assert requests[1]["messages"][-2] == {"role": "assistant", "content": "Sure! Here is my grading: {scores: [oops"}


def test_rubric_judge_fails_precisely_after_retries():
    with ScriptedOpenAIServer(lambda req: {"role": "assistant", "content": "I refuse to use JSON."}) as server:
        judge = RubricJudge(f"openai:judge@{server.base_url}", criteria=["Is correct"], max_repairs=1)
        with pytest.raises(
            StructuredOutputError,
            match=r"no reply fit JudgeVerdict after 2 attempts; last problem: the reply is not valid JSON",
        ):
            judge.grade(task(), "4", [], None)
        assert server.request_count == 2


def test_rubric_judge_retries_transport_errors_then_reports_them():
    calls = {"n": 0}

    def respond(req):
        calls["n"] += 1
        if calls["n"] == 1:
            return ErrorReply(503, "busy")
        return {"role": "assistant", "content": _verdict(["fixed_1"])}

    with ScriptedOpenAIServer(respond) as server:
        judge = RubricJudge(f"openai:judge@{server.base_url}", criteria=["Is correct"])
        judge.client.backoff_base = 0.01
        assert judge.grade(task(), "4", [], None).score == 1.0
    with ScriptedOpenAIServer(lambda req: ErrorReply(401, "bad key")) as server:
        judge = RubricJudge(f"openai:judge@{server.base_url}", criteria=["Is correct"])
        with pytest.raises(Exception, match="HTTP 401"):
            judge.grade(task(), "4", [], None)


def test_rubric_in_a_composite_from_config():
    with ScriptedOpenAIServer(lambda req: {"role": "assistant", "content": _verdict(["fixed_1"], 0.5)}) as server:
        grader = grader_from_config(
            {
                "type": "composite",
                "parts": [{"type": "match", "weight": 1}, {"type": "rubric", "criteria": ["Polite"], "weight": 1}],
            },
            judge=f"openai:j@{server.base_url}",
        )
        grade = grader.grade(task(answer="4"), "4", [], None)
    assert isinstance(grade, Grade) and grade.score == 0.75
    assert grade.details["rubric"]["judge_model"] == "j"


# -- bounded, linear grading (issue 9, major 6) ----------------------------------------------------
HOSTILE_ANSWERS = {
    "letters": "a",
    "paths": "a/",
    "dots": "x.",
    "digits": "1",
    "minus": "-1.",
    "parens": "(",
    "attrs": "a.",
    "py-ish": ".py",
    "dashes": "-",
    "spaces": " ",
    "equals": "x=",
    "colons": "m:",
    "commas": "a, ",
}


@pytest.mark.timeout(120)
def test_every_matcher_is_fast_on_hostile_answers_of_the_graded_size():
    """Every answer shape that made a backtracking regex or a recursive parser blow up, at the
    largest size a grader sees (the env cuts answers to MAX_ANSWER_CHARS before grading)."""
    from skillgym.envs.codebase_explorer.grader import CodebaseGrader
    from skillgym.graders.base import MAX_ANSWER_CHARS

    codebase = CodebaseGrader()
    golds = {"where": "pkg/mod.py", "default": "1", "callers": "f, g", "methods": "3", "constant": "pkg.mod: 1"}
    for name, unit in HOSTILE_ANSWERS.items():
        answer = unit * (MAX_ANSWER_CHARS // len(unit))
        for mode in ("exact", "normalized", "numeric", "f1"):
            grade = AnswerMatch(mode).grade(Task(id="t", prompt="p", reference={"answer": "42"}), answer, [], None)
            assert grade.score < 1.0, (name, mode)
        for qtype, gold in golds.items():
            task = Task(
                id="t", prompt="p", reference={"qtype": qtype, "answer": gold}, metadata={"param": "x", "symbol": "X"}
            )
            assert codebase.grade(task, answer, [], None).score == 0.0, (name, qtype)


def test_path_tokens_find_what_the_old_regex_found_in_linear_time():
    """The codebase grader's path finder agrees with ``[\\w./-]+\\.py\\b`` (which is quadratic on
    long runs of path characters) on every short string over the characters that matter."""
    import random
    import re

    from skillgym.envs.codebase_explorer.grader import path_tokens

    reference = re.compile(r"[\w./-]+\.py\b")
    rng = random.Random(0)
    alphabet = ["a", ".", "py", "/", "-", " ", "x", ".py", "é", ",", "_", "1", "p", "y", "\n"]
    for _ in range(50_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14)))
        assert path_tokens(text) == reference.findall(text), text
