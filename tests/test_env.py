"""The SkillEnv contract on a small env, against every sandbox backend."""

from __future__ import annotations

import json
import random
import string

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

import skillgym
from skillgym.env import SkillEnv
from skillgym.graders import AnswerMatch
from skillgym.sandbox.base import SandboxConfig
from skillgym.spec import EnvSpec
from skillgym.tasks import TaskList
from skillgym.toolcalls import render_tool_call_text as call
from skillgym.types import SkillSpec, Task

SKILL = SkillSpec(
    name="number-finder",
    description="Finds numbers in files.",
    instructions="Read the file, then answer with the number only.",
)


def make_tasks() -> TaskList:
    tasks = []
    for i in range(20):
        tasks.append(
            Task(
                id=f"t{i}",
                prompt=f"What number is written in notes/n{i}.txt? Answer with the number only.",
                files={f"notes/n{i}.txt": f"the number is {i * 7}\n"},
                reference={"answer": str(i * 7)},
                split="test" if i % 4 == 0 else "train",
            )
        )
    return TaskList(tasks)


def make_env(backend: str, **overrides) -> SkillEnv:
    fields = dict(
        id="number-finder-v0",
        skill=SKILL,
        tools=["bash", "read_file", "write_file", "edit_file", "glob", "grep", "list_dir", "submit"],
        sandbox=SandboxConfig(backend=backend),
        tasks=make_tasks(),
        grader=AnswerMatch("normalized"),
        max_turns=6,
    )
    fields.update(overrides)
    return SkillEnv(EnvSpec(**fields))


@pytest.fixture(params=["local", "docker"])
def backend(request):
    if request.param == "docker":
        request.getfixturevalue("docker_required")
    return request.param


@pytest.fixture
def env(backend):
    env = make_env(backend)
    yield env
    env.close()


def test_check_env(env):
    check_env(env, skip_render_check=True)


def test_reset_observation_and_info(env):
    obs, info = env.reset(seed=3, options={"task_id": "t1"})
    assert obs[0] == {"role": "system", "content": SKILL.instructions}
    assert obs[1]["role"] == "user" and "notes/n1.txt" in obs[1]["content"]
    assert [t["function"]["name"] for t in info["tools"]][:2] == ["bash", "read_file"]
    assert env.observation_space.contains(obs)


def test_solving_episode_with_text_actions(env):
    env.reset(options={"task_id": "t3"})
    obs, reward, term, trunc, info = env.step("I'll read it.\n" + call("read_file", {"path": "notes/n3.txt"}))
    assert (reward, term, trunc) == (0.0, False, False)
    assert obs[-1]["role"] == "tool" and "the number is 21" in obs[-1]["content"]
    assert obs[-2]["tool_calls"][0]["function"]["name"] == "read_file"
    obs, reward, term, trunc, info = env.step(call("submit", {"answer": "21"}))
    assert term and not trunc and reward == 1.0
    assert info["reward_components"] == {"normalized": 1.0}
    traj = env.trajectory
    assert traj.final_answer == "21" and traj.reward == 1.0 and traj.num_turns == 2
    assert traj.skill_hash == SKILL.content_hash


def test_openai_dict_action_and_parallel_calls(env):
    env.reset(options={"task_id": "t2"})
    action = {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "a",
                "type": "function",
                "function": {"name": "write_file", "arguments": json.dumps({"path": "x.txt", "content": "hi"})},
            },
            {
                "id": "b",
                "type": "function",
                "function": {"name": "bash", "arguments": json.dumps({"command": "cat x.txt"})},
            },
        ],
    }
    obs, *_ = env.step(action)
    assert [m["tool_call_id"] for m in obs[-2:]] == ["a", "b"]
    assert "hi" in obs[-1]["content"] and "[exit code 0]" in obs[-1]["content"]


def test_plain_text_answer_ends_episode(env):
    env.reset(options={"task_id": "t4"})
    _, reward, term, _, info = env.step("28")
    assert term and reward == 1.0


def test_wrong_answer_scores_zero(env):
    env.reset(options={"task_id": "t4"})
    _, reward, term, _, _ = env.step(call("submit", {"answer": "29"}))
    assert term and reward == 0.0


def test_turn_budget_truncates(env):
    env.reset(options={"task_id": "t1"})
    for turn in range(6):
        _, reward, term, trunc, info = env.step(call("bash", {"command": f"echo {turn}"}))
    assert trunc and not term and reward == 0.0 and "turn budget" in info["truncation_reason"]
    assert env.trajectory.metadata["truncation_reason"] == info["truncation_reason"]
    with pytest.raises(RuntimeError, match="reset"):
        env.step("more")


def test_identical_turns_truncate_as_stuck(env):
    env.reset(options={"task_id": "t1"})
    broken = '<tool_call>{"name": "bash", "arguments": {"command": "ls'  # never closed
    _, _, _, trunc, _ = env.step(broken)
    _, _, _, trunc2, _ = env.step(broken)
    assert not trunc and not trunc2
    # A different turn in between starts the count again.
    env.step(call("list_dir", {}))
    for _ in range(2):
        _, reward, term, trunc, info = env.step(broken)
        assert not trunc
    _, reward, term, trunc, info = env.step(broken)
    assert trunc and not term and reward == 0.0 and env.trajectory.reward == 0.0
    assert info["truncation_reason"].startswith("stuck: the same turn met the same tool results 3 times in a row")
    assert env.trajectory.metadata["truncation_reason"] == info["truncation_reason"]
    assert len(env.trajectory.timings) == 6


def test_identical_calls_with_other_results_are_not_stuck(backend):
    env = make_env(backend, max_turns=8)
    try:
        env.reset(options={"task_id": "t1"})
        env.step(call("bash", {"command": "echo 1 >> notes/log; wc -l < notes/log"}))
        for _ in range(4):  # the same call, a new result each time: progress, however slow
            _, _, _, trunc, _ = env.step(call("bash", {"command": "echo 1 >> notes/log; wc -l < notes/log"}))
            assert not trunc
    finally:
        env.close()


def test_stuck_check_can_be_turned_off(backend):
    env = make_env(backend, max_identical_turns=None)
    try:
        env.reset(options={"task_id": "t1"})
        for _ in range(6):
            _, _, _, trunc, info = env.step(call("list_dir", {}))
        assert trunc and "turn budget" in info["truncation_reason"]
    finally:
        env.close()


def test_token_budget_truncates(backend):
    env = make_env(backend, max_tokens=300, max_turns=50)
    try:
        env.reset(options={"task_id": "t1"})
        trunc = False
        for turn in range(20):  # a new command each turn: repeating one would be stuck first
            _, _, _, trunc, info = env.step(call("bash", {"command": f"seq {turn} 200"}))
            if trunc:
                break
        assert trunc and "token budget" in info["truncation_reason"]
    finally:
        env.close()


def test_tool_errors_come_back_as_tool_messages(env):
    env.reset(options={"task_id": "t1"})
    cases = [
        (call("nope", {}), "unknown tool 'nope'; available tools: bash"),
        (call("read_file", {}), "missing required argument 'path'"),
        (call("read_file", {"path": "a", "bogus": 1}), "unexpected argument 'bogus'"),
        (call("read_file", {"path": "../../etc/passwd"}), "outside the workspace"),
        (call("read_file", {"path": "missing.txt"}), "does not exist"),
        (call("edit_file", {"path": "notes/n1.txt", "old_string": "zzz", "new_string": "y"}), "was not found"),
        (call("grep", {"pattern": "("}), "invalid regular expression"),
        ('<tool_call>{"name": "grep", </tool_call>', "could not be parsed"),
    ]
    for action, expected in cases:
        obs, reward, term, trunc, info = env.step(action)
        assert not term and reward == 0.0
        assert obs[-1]["role"] == "tool" and expected in obs[-1]["content"], obs[-1]["content"]
        assert info["tool_errors"]
        if trunc:
            env.reset(options={"task_id": "t1"})
    assert env.trajectory.tool_errors


def test_bash_timeout_and_output_truncation(backend):
    env = make_env(backend, max_tool_output=500)
    try:
        env.reset(options={"task_id": "t1"})
        obs, *_ = env.step(call("bash", {"command": "sleep 5", "timeout": 0.5}))
        assert "timed out after 0.5 s" in obs[-1]["content"]
        obs, *_ = env.step(call("bash", {"command": "seq 1 5000"}))
        assert "output truncated" in obs[-1]["content"] and len(obs[-1]["content"]) < 700
    finally:
        env.close()


def test_reset_clears_workspace(env):
    env.reset(options={"task_id": "t1"})
    env.step(call("write_file", {"path": "leftover.txt", "content": "x"}))
    env.reset(options={"task_id": "t2"})
    obs, *_ = env.step(call("list_dir", {}))
    assert "leftover" not in obs[-1]["content"] and "notes/" in obs[-1]["content"]


def test_load_skill_and_no_skill_modes():
    lazy = make_env("local", instruction_mode="load_skill")
    bare = make_env("local", instruction_mode="none")
    try:
        obs, info = lazy.reset(options={"task_id": "t1"})
        assert SKILL.instructions not in obs[0]["content"] and "load_skill" in obs[0]["content"]
        assert info["tools"][0]["function"]["name"] == "load_skill"
        obs, *_ = lazy.step(call("load_skill", {}))
        assert SKILL.instructions in obs[-1]["content"]
        obs, info = bare.reset(options={"task_id": "t1"})
        assert obs[0]["role"] == "user" and all(t["function"]["name"] != "load_skill" for t in info["tools"])
    finally:
        lazy.close()
        bare.close()


# -- robustness: nothing a model writes may raise ------------------------------------------------


def _random_strings(rng: random.Random, n: int) -> list[str]:
    alphabet = string.printable + "éλ中\u200b"
    fragments = ["<tool_call>", "</tool_call>", "<think>", "</think>", "{", "}", '"name"', '"arguments"', ":"]
    out = []
    for _ in range(n):
        parts = [
            "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
            if rng.random() < 0.7
            else rng.choice(fragments)
            for _ in range(rng.randint(1, 6))
        ]
        out.append("".join(parts))
    return out


def _malformed_calls(rng: random.Random, n: int) -> list[str]:
    valid = json.dumps({"name": "read_file", "arguments": {"path": "notes/n1.txt"}})
    makers = [
        lambda: "<tool_call>" + valid[: rng.randint(0, len(valid) - 2)] + "</tool_call>",  # truncated JSON
        lambda: "<tool_call>" + valid.replace('"', "'", rng.randint(1, 4)) + "</tool_call>",  # wrong quotes
        lambda: call("".join(rng.choice(string.ascii_lowercase) for _ in range(6)), {}),  # unknown tool
        lambda: call("read_file", {"path": rng.randint(0, 9)}),  # mistyped argument
        lambda: call("read_file", {"path": "a", rng.choice(["x", "flag", "mode"]): 1}),  # extra argument
        lambda: call("grep", {}),  # missing argument
        lambda: call("grep", {"pattern": rng.choice(["(", "[a-", "*x", "(?P<"])}),  # bad regex
        lambda: "<tool_call>" + json.dumps([valid]) + "</tool_call>",  # not an object
        lambda: "<tool_call></tool_call>",  # empty
        lambda: json.dumps({"name": "read_file"}) + "</tool_call>",  # stray closing tag
    ]
    return [makers[i % len(makers)]() for i in range(n)]


def test_fuzz_never_raises(backend):
    rng = random.Random(1234)
    env = make_env(backend, max_turns=10_000)
    try:
        env.reset(options={"task_id": "t1"})
        for i, action in enumerate(_malformed_calls(rng, 1000)):
            if i % 50 == 0:
                env.reset(options={"task_id": "t1"})
            obs, reward, term, trunc, info = env.step(action)
            assert not term, action
            assert obs[-1]["role"] == "tool" and obs[-1]["content"].startswith("Error:"), (action, obs[-1])
            assert len(obs[-1]["content"]) > 30 and info["tool_errors"]
        errors_seen = 0
        for action in _random_strings(rng, 1000):
            env.reset(options={"task_id": "t1"})
            obs, reward, term, trunc, info = env.step(action)
            if not term:  # a markup fragment was taken as a call attempt: it must be explained
                assert obs[-1]["role"] == "tool" and obs[-1]["content"].startswith("Error:")
                errors_seen += 1
            assert 0.0 <= reward <= 1.0
        assert errors_seen > 50
    finally:
        env.close()


# -- registry -------------------------------------------------------------------------------------


def test_registry_and_gymnasium_make():
    skillgym.register("number-finder-v0", lambda **kw: make_env("local", **kw), description="test env", override=True)
    assert "number-finder-v0" in [r.id for r in skillgym.list_envs()]
    env = gymnasium.make("skillgym/number-finder-v0")
    try:
        obs, info = env.reset(seed=1)
        assert obs[-1]["role"] == "user"
    finally:
        env.close()
    with pytest.raises(KeyError, match="known environments"):
        skillgym.make("does-not-exist-v0")
    with pytest.raises(ValueError, match="name-vN"):
        skillgym.register("BadName", lambda: None)
