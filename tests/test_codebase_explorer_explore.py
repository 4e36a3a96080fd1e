"""The codebase-explorer expert's ``explore`` style (``expert?style=explore``): it explores as a
capable model would (grep, read the relevant lines, answer), solves the questions, and writes
nothing a student could not have copied: every word in its tool calls and answers is in the
question, in an earlier tool result, or in the style's fixed templates.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import pytest

from skillgym.envs.codebase_explorer.expert import (
    COUNT_METHODS_COMMAND,
    OUTLINE_PATTERN,
    REPO,
    SIGNATURE_LINES,
    TOP_LEVEL_PATTERN,
    ExpertPolicy,
)
from skillgym.policies.spec import make_policy, parse_policy_spec
from skillgym.registry import make
from skillgym.rollouts import RolloutConfig, run_rollouts
from skillgym.rollouts.store import iter_trajectories
from skillgym.types import Message

ENV = "codebase-explorer-v0"
N_TASKS = 100  # the first 100 test tasks hold ~20 of each question type
_WORD = re.compile(r"[A-Za-z_]+|\d+")
# The fixed parts of explore's calls: search patterns, the count command, the repository path,
# the page length. Placeholders are not words the expert writes.
_TEMPLATES = " ".join(
    [
        OUTLINE_PATTERN,
        TOP_LEVEL_PATTERN,
        re.sub(r"\{\w+\}", " ", COUNT_METHODS_COMMAND),
        REPO,
        r"(def|class) \b ^\s*= *.py",
        str(SIGNATURE_LINES),
    ]
)
TEMPLATE_WORDS = frozenset(_WORD.findall(_TEMPLATES))


def _rollout(policy: str, out: Path, n_tasks: int = N_TASKS, env_kwargs: dict | None = None) -> list:
    summary = run_rollouts(
        RolloutConfig(
            env=ENV,
            env_kwargs={"backend": "local", **(env_kwargs or {})},
            policy=policy,
            split="test",
            n_tasks=n_tasks,
            concurrency=4,
            out=out,
        )
    )
    assert summary.records == n_tasks and summary.failed_records == 0, summary.errors
    return list(iter_trajectories(out))


def unseen_words(messages: list[Message]) -> list[str]:
    """Words the assistant wrote (tool-call arguments, the answer included) that appear neither
    in the user's question, nor in a tool result before that turn, nor in the templates."""
    seen = set(TEMPLATE_WORDS)
    unseen = []
    for message in messages:
        role = message.get("role")
        if role in ("user", "tool"):
            seen.update(_WORD.findall(message.get("content") or ""))
        elif role == "assistant":
            for call in message.get("tool_calls") or []:
                arguments = json.loads(call["function"]["arguments"])
                # A regex escape (\b, \s) is template syntax, not part of the word it touches.
                written = re.sub(r"\\[A-Za-z]", " ", " ".join(str(v) for v in arguments.values()))
                unseen += [w for w in _WORD.findall(written) if w not in seen]
    return unseen


@pytest.fixture(scope="module")
def explore_runs(tmp_path_factory: pytest.TempPathFactory) -> list:
    return _rollout("expert?style=explore", tmp_path_factory.mktemp("explore") / "run")


def test_explore_expert_solves_the_default_codebase(explore_runs: list):
    by_type: dict[str, list[float]] = defaultdict(list)
    for trajectory in explore_runs:
        by_type[trajectory.task_id.split("-")[0]].append(trajectory.reward or 0.0)
    assert set(by_type) == {"where", "default", "callers", "methods", "constant"}
    rewards = [r for values in by_type.values() for r in values]
    assert sum(rewards) / len(rewards) >= 0.99, {k: sum(v) / len(v) for k, v in by_type.items()}


def test_explore_expert_writes_only_what_it_has_seen(explore_runs: list):
    offenders = {t.task_id: unseen_words(t.messages) for t in explore_runs}
    assert not {k: v for k, v in offenders.items() if v}


def test_explore_expert_reads_before_it_answers(explore_runs: list):
    """It explores with the file tools: searches first; a default is read off the source lines;
    a method count is printed by a command, never counted by the expert itself."""
    for trajectory in explore_runs:
        calls = [c["function"] for m in trajectory.messages if m.get("role") == "assistant" for c in m["tool_calls"]]
        names = [c["name"] for c in calls]
        qtype = trajectory.task_id.split("-")[0]
        assert names[0] == "grep" and names[-1] == "submit", (trajectory.task_id, names)
        if qtype == "default":
            assert "read_file" in names, names
        if qtype == "methods":
            assert names[-2] == "bash" and "grep -cE" in json.loads(calls[-2]["arguments"])["command"]
        if qtype == "constant":
            # The module as grep printed its file (the grader reads a path as the module).
            assert ".py: " in (trajectory.final_answer or ""), trajectory.final_answer


def test_the_seen_words_check_catches_a_computed_answer(tmp_path: Path):
    """The check can fail: the search style counts methods itself, and the count it submits is
    (for most classes) a number no tool printed."""
    trajectories = _rollout("expert?style=search", tmp_path / "search", n_tasks=50)
    methods = [t for t in trajectories if t.task_id.startswith("methods-")]
    assert methods and all(t.reward == 1.0 for t in methods)
    assert sum(bool(unseen_words(t.messages)) for t in methods) > len(methods) // 2


def test_expert_spec_options_reach_the_expert():
    env = make(ENV, backend="local")
    try:
        assert parse_policy_spec("expert").options == {}
        assert str(parse_policy_spec("expert?style=explore")) == "expert?style=explore"
        policy = make_policy("expert?style=explore", env)
        assert isinstance(policy, ExpertPolicy) and policy.style == "explore"
        assert make_policy("expert", env).style == "oneliner"  # the default stays the SFT teacher
        with pytest.raises(ValueError, match="unknown expert style 'wander'"):
            make_policy("expert?style=wander", env)
        with pytest.raises(ValueError, match="expert does not take these options"):
            make_policy("expert?speed=3", env)
    finally:
        env.close()
