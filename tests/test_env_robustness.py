"""SkillEnv never raises on model output (issue 9, major 5-7): malformed turns, hostile commands
and unstorable text become precise tool messages, a sandbox the model killed is replaced, and
every trajectory stays storable. Each test runs on every sandbox backend."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

import skillgym
from skillgym.env import SkillEnv
from skillgym.graders import AnswerMatch
from skillgym.graders.base import MAX_ANSWER_CHARS
from skillgym.sandbox.base import SandboxConfig
from skillgym.spec import EnvSpec
from skillgym.tasks import TaskList
from skillgym.toolcalls import render_tool_call_text as call
from skillgym.types import Task

TASK = Task(id="t0", prompt="What number is in n.txt?", files={"n.txt": "the number is 7\n"}, reference={"answer": "7"})
TOOLS = ["bash", "read_file", "write_file", "edit_file", "glob", "grep", "list_dir", "submit"]


def make_env(backend: str, **sandbox: object) -> SkillEnv:
    spec = EnvSpec(
        id="robust-v0",
        tools=TOOLS,
        sandbox=SandboxConfig(backend=backend, **sandbox),
        tasks=TaskList([TASK]),
        grader=AnswerMatch("normalized"),
        max_turns=50,
        max_tokens=10**9,
    )
    return SkillEnv(spec)


@pytest.fixture(params=["local", "docker"])
def backend(request):
    if request.param == "docker":
        request.getfixturevalue("docker_required")
    return request.param


@pytest.fixture
def env(backend):
    env = make_env(backend, default_timeout=5.0)
    env.reset(seed=0)
    yield env
    env.close()


def _nested(depth: int) -> list:
    root: list = []
    node = root
    for _ in range(depth):
        node.append([])
        node = node[0]
    return root


def _assert_goes_on(env: SkillEnv, result, *, error: str) -> None:
    """The turn was answered by tool messages, the episode goes on, and everything is storable."""
    obs, reward, terminated, truncated, info = result
    assert not terminated and not truncated and reward == 0.0
    assert env.observation_space.contains(obs)
    assert obs[-1]["role"] == "tool" and error in obs[-1]["content"], obs[-1]["content"][:500]
    json.dumps(obs, ensure_ascii=False).encode("utf-8")
    env.trajectory.model_dump_json()


MALFORMED = [
    ("content as a dict", {"role": "assistant", "content": {"text": "7"}}, "content must be a string"),
    ("content as a list of strings", {"role": "assistant", "content": ["7"]}, "content[0] must be a text part"),
    (
        "content part of the wrong type",
        {"role": "assistant", "content": [{"type": "text", "text": 7}]},
        'string "text"',
    ),
    (
        "reasoning_content of the wrong type",
        {"role": "assistant", "content": "7", "reasoning_content": {"a": 1}},
        "reasoning_content must be a string",
    ),
    ("tool_calls of the wrong type", {"role": "assistant", "tool_calls": 7}, "tool_calls[0] must be an object"),
    ("call nested 100,000 deep", "<tool_call>" + "[" * 100_000 + "</tool_call>", "nested more than"),
    (
        "arguments nested 100,000 deep",
        {
            "role": "assistant",
            "tool_calls": [{"function": {"name": "grep", "arguments": {"pattern": _nested(100_000)}}}],
        },
        "nested more than",
    ),
    (
        "call id nested 100,000 deep",
        {"role": "assistant", "tool_calls": [{"id": _nested(100_000), "function": {"name": "glob", "arguments": 3}}]},
        "must be a JSON object",
    ),
    (
        "5,000-digit integer in text",
        '<tool_call>{"name": "read_file", "arguments": {"path": "n.txt", "limit": ' + "9" * 5000 + "}}</tool_call>",
        "4300 digits",
    ),
    (
        "5,000-digit integer in an object",
        {
            "role": "assistant",
            "tool_calls": [{"function": {"name": "read_file", "arguments": {"path": "n.txt", "limit": 10**5000}}}],
        },
        "4300 digits",
    ),
    ("5,000-digit integer as the action", 10**5000, "must be text or an assistant message dict"),
    ("nested list as the action", _nested(100_000), "must be text or an assistant message dict"),
    (
        "duplicate keys",
        '<tool_call>{"name": "read_file", "arguments": {"path": "n.txt", "path": "x"}}</tool_call>',
        "appears twice",
    ),
    ("limit: true", call("read_file", {"path": "n.txt", "limit": True}), "not a boolean"),
    ("10 MB call", call("write_file", {"path": "big", "content": "x" * 10_000_000}), "the limit is 1,000,000"),
    ("a million calls", call("list_dir", {}) * 1_000_000, "at most 32"),
    ("NUL in a command", call("bash", {"command": "echo a\x00b"}), "NUL character"),
    ("unknown tool with a 100,000-character name", call("x" * 100_000, {}), "unknown tool"),
]


@pytest.mark.timeout(300)
def test_malformed_turns_are_precise_tool_messages(env):
    for case, action, error in MALFORMED:
        before = len(env.trajectory.tool_errors)
        _assert_goes_on(env, env.step(action), error=error)
        assert len(env.trajectory.tool_errors) > before, case
    # After all that, the episode still works and ends normally.
    obs, *_ = env.step(call("read_file", {"path": "n.txt"}))
    assert "the number is 7" in obs[-1]["content"]
    obs, reward, terminated, _, _ = env.step("7")
    assert terminated and reward == 1.0


def test_malformed_dict_turn_is_recorded_in_openai_form(env):
    action = {
        "role": "assistant",
        "content": "hm",
        "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "grep", "arguments": '{"pattern": '}},
            {"id": "b", "type": "function", "function": {"name": "list_dir", "arguments": "{}"}},
        ],
    }
    obs, *_ = env.step(action)
    assistant, first, second = obs[-3:]
    assert assistant == {
        "role": "assistant",
        "content": "hm",
        "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "grep", "arguments": '{"pattern": '}},
            {"id": "b", "type": "function", "function": {"name": "list_dir", "arguments": "{}"}},
        ],
    }
    # Every call id gets its answer (providers reject a call left unanswered).
    assert (first["tool_call_id"], second["tool_call_id"]) == ("a", "b")
    assert "not valid JSON" in first["content"] and "Not run" in second["content"]


def test_content_that_is_not_text_is_not_an_empty_answer(env):
    _, reward, terminated, _, _ = env.step({"role": "assistant", "content": ["7"]})
    assert not terminated and reward == 0.0 and env.trajectory.final_answer is None


def test_tool_errors_name_their_tool(env):
    env.step(call("read_file", {"path": "missing.txt"}))
    env.step(call("grep", {"pattern": "x", "context": True}))
    env.step(call("nope", {}))
    tools = [e.tool for e in env.trajectory.tool_errors]
    assert tools == ["read_file", "grep", "nope"]


def test_lone_surrogates_are_replaced_recorded_and_storable(env, tmp_path):
    from skillgym.rollouts.store import TrajectoryStore, iter_trajectories

    text = '<tool_call>{"name": "write_file", "arguments": {"path": "s.txt", "content": "a\\ud800b"}}</tool_call>'
    env.step(text)
    obs, *_ = env.step(call("bash", {"command": "cat s.txt; touch \"$(printf 'bad\\377name')\""}))
    assert "a\ufffdb" in obs[-1]["content"]
    obs, *_ = env.step(call("list_dir", {}))  # a file name that is not UTF-8
    env.step("done")
    traj = env.trajectory
    repairs = [r["repair"] for r in traj.metadata["repairs"]]
    assert any("1 lone UTF-16 surrogate" in r for r in repairs), repairs
    with TrajectoryStore(tmp_path) as store:
        assert store.append(traj)
    (stored,) = iter_trajectories(tmp_path)
    assert stored.messages == json.loads(traj.model_dump_json())["messages"]


def test_reset_options_must_be_a_mapping(backend):
    env = make_env(backend)
    try:
        with pytest.raises(TypeError, match="options"):
            env.reset(options=["task_id", "t0"])
    finally:
        env.close()


# -- hostile commands: each ends within its timeout plus a second, and the episode goes on -----
HOSTILE = [
    ("kill the executor", "kill -9 $PPID", 2.0),
    ("read a FIFO", "mkfifo f && cat f", 2.0),
    ("setsid sleeper holding the pipe", "setsid sleep 10000 &", 2.0),
    ("background sleeper", "sleep 10000 & echo quick", 2.0),
    ("1 GB of stdout", "head -c 1000000000 /dev/zero", 10.0),
]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("case,command,timeout", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_commands_end_in_time_and_the_episode_goes_on(env, case, command, timeout):
    started = time.monotonic()
    obs, reward, terminated, truncated, _ = env.step(call("bash", {"command": command, "timeout": timeout}))
    elapsed = time.monotonic() - started
    assert not terminated and not truncated
    assert obs[-1]["role"] == "tool" and obs[-1]["content"]
    assert elapsed <= timeout + 1.0, f"{case}: the step took {elapsed:.1f} s"
    # The sandbox answers (the same one, or a fresh one with the task's files).
    obs, *_ = env.step(call("read_file", {"path": "n.txt"}))
    assert "the number is 7" in obs[-1]["content"]


@pytest.mark.timeout(300)
def test_hostile_file_ops_end_in_time(env):
    env.step(call("bash", {"command": "mkfifo fifo; truncate -s 3G sparse; python3 -c \"print('a'*40000)\" > aaa"}))
    cases = [
        call("read_file", {"path": "fifo"}),
        call("read_file", {"path": "sparse"}),
        call("grep", {"pattern": "fifo|x", "path": "."}),
        call("grep", {"pattern": "(a*)*b", "path": "aaa"}),
    ]
    for action in cases:
        started = time.monotonic()
        obs, _, terminated, truncated, _ = env.step(action)
        elapsed = time.monotonic() - started
        assert not terminated and not truncated and obs[-1]["role"] == "tool"
        assert elapsed <= env.sandbox.config.default_timeout + 1.0, (action[:80], elapsed)


def test_a_killed_sandbox_is_replaced_with_the_task_files(env):
    obs, *_ = env.step(call("bash", {"command": "echo changed > n.txt; kill -9 $PPID; sleep 5", "timeout": 10}))
    replaced = env.trajectory.metadata.get("sandbox_replaced")
    if replaced:  # the executor died (where a pid namespace lets the command reach it)
        assert "sandbox stopped working" in obs[-1]["content"] and replaced[0]["tool"] == "bash"
        obs, *_ = env.step(call("read_file", {"path": "n.txt"}))
        assert "the number is 7" in obs[-1]["content"]
    _, reward, terminated, _, _ = env.step("7")
    assert terminated and reward == 1.0


def _kill_from_outside(sandbox) -> None:
    """Kill the sandbox's executor the way an out-of-memory kill or a crash would."""
    if hasattr(sandbox, "container"):
        sandbox.container.kill()
    else:
        os.killpg(sandbox._proc.pid, signal.SIGKILL)
        sandbox._proc.wait()


@pytest.mark.parametrize("when", ["before the call", "during the call"])
def test_a_dead_sandbox_is_replaced_and_the_model_is_told(env, when):
    env.step(call("write_file", {"path": "n.txt", "content": "changed"}))
    dead = env.sandbox
    if when == "before the call":
        _kill_from_outside(dead)
        command = "echo hi"
    else:
        threading.Timer(0.5, _kill_from_outside, args=(dead,)).start()
        command = "sleep 3"
    obs, reward, terminated, truncated, info = env.step(call("bash", {"command": command, "timeout": 5}))
    assert not terminated and not truncated
    assert "sandbox stopped working while bash ran" in obs[-1]["content"]
    assert "starting files" in obs[-1]["content"]
    (record,) = env.trajectory.metadata["sandbox_replaced"]
    assert record["turn"] == 2 and record["tool"] == "bash" and record["error"]
    assert env.trajectory.tool_errors[-1].tool == "bash"
    assert env.sandbox is not dead
    # The episode goes on in a fresh sandbox holding the task's files, and ends normally.
    obs, *_ = env.step(call("read_file", {"path": "n.txt"}))
    assert "the number is 7" in obs[-1]["content"]
    _, reward, terminated, _, _ = env.step("7")
    assert terminated and reward == 1.0


# -- grading is bounded -------------------------------------------------------------------------
@pytest.mark.timeout(120)
@pytest.mark.parametrize("filler", ["a", "a/", "1", "x.", "("])
def test_a_10_mb_answer_is_graded_quickly_and_the_cut_is_recorded(filler):
    env = skillgym.make("codebase-explorer-v0", split="test", backend="local")
    try:
        for qtype in ("where", "default", "callers", "methods", "constant"):
            task = next(t for t in env.env_spec.tasks.tasks("test") if t.reference["qtype"] == qtype)
            env.reset(options={"task_id": task.id})
            answer = filler * (10_000_000 // len(filler))
            _, reward, terminated, _, info = env.step(answer)
            assert terminated and reward == 0.0 and "grader_error" not in info
            details = env.trajectory.grade_details
            assert details["answer_truncated"] == {"answer_chars": len(answer), "graded_chars": MAX_ANSWER_CHARS}
            assert env.trajectory.final_answer == answer  # the record keeps what the model said
    finally:
        env.close()


# -- lost records (issue 9, major 7) --------------------------------------------------------------
def _record(task_id: str, **fields) -> str:
    from skillgym.types import Trajectory

    return Trajectory(env_id="x-v0", env_version=0, task_id=task_id, **fields).model_dump_json()


def test_a_record_with_unencodable_text_is_stored_with_a_note(tmp_path):
    from skillgym.rollouts.store import TrajectoryStore, iter_trajectories
    from skillgym.types import Trajectory

    traj = Trajectory(env_id="x-v0", env_version=0, task_id="s", messages=[{"role": "user", "content": "a\ud800b"}])
    with TrajectoryStore(tmp_path) as store:
        assert store.append(traj)
    (stored,) = iter_trajectories(tmp_path)
    assert stored.messages[0]["content"] == "a\ufffdb"
    assert stored.metadata["store_repairs"].startswith("1 lone UTF-16 surrogate")
    with TrajectoryStore(tmp_path) as store:
        assert ("s", 0) in store


def test_bad_lines_are_quarantined_and_their_episodes_run_again(tmp_path, caplog):
    from skillgym.rollouts.store import QUARANTINE_FILE, TrajectoryStore, iter_trajectories, shard_paths

    shard = tmp_path / "trajectories" / "shard-00000.jsonl"
    shard.parent.mkdir(parents=True)
    lines = [
        _record("good-1"),
        '{"task_id": "key-only", "sample_index": 0}',  # counted as stored before, but export skipped it
        _record("bad-usage")[:-1] + ', "usage": [1, 2]}',  # AttributeError on resume before
        json.dumps({**json.loads(_record("bad-messages")), "messages": [1]}),
        "[1, 2, 3]",
        "not json at all",
        _record("good-2"),
    ]
    shard.write_text("\n".join(lines) + "\n")
    with caplog.at_level("WARNING"), TrajectoryStore(tmp_path) as store:
        assert sorted(k for k, _ in store.index) == ["good-1", "good-2"]
        assert ("key-only", 0) not in store
    assert sum("quarantined" in r.getMessage() for r in caplog.records) == 5
    # The store and every reader (export) agree on what is stored.
    assert [t.task_id for t in iter_trajectories(tmp_path)] == ["good-1", "good-2"]
    quarantined = [json.loads(line) for line in (tmp_path / QUARANTINE_FILE).read_text().splitlines()]
    assert [(q["shard"], q["line"]) for q in quarantined] == [("shard-00000.jsonl", n) for n in (2, 3, 4, 5, 6)]
    assert quarantined[0]["record"] == lines[1] and quarantined[0]["error"]
    assert shard_paths(tmp_path) == [shard] and len(shard.read_text().splitlines()) == 2
    # Resuming again moves nothing twice, and a re-run of a quarantined key is stored normally.
    with TrajectoryStore(tmp_path) as store:
        from skillgym.types import Trajectory

        assert store.append(Trajectory(env_id="x-v0", env_version=0, task_id="key-only"))
    assert len((tmp_path / QUARANTINE_FILE).read_text().splitlines()) == 5
    assert [t.task_id for t in iter_trajectories(tmp_path)] == ["good-1", "good-2", "key-only"]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend_name", ["local", "docker"])
def test_a_rollout_with_lone_surrogates_over_http_stores_every_record(tmp_path, backend_name, request):
    """The issue's report: a lone surrogate in a model's tool-call arguments aborted the rollout
    with 0 records (and a leaked container), and crashed again on re-run."""
    from skillgym.rollouts import RolloutConfig, iter_trajectories, run_rollouts
    from skillgym.testing.openai_server import ScriptedOpenAIServer, assistant_message, tool_call

    if backend_name == "docker":
        request.getfixturevalue("docker_required")

    def respond(req: dict) -> dict:
        if not any(m.get("role") == "assistant" for m in req["messages"]):
            # The arguments text holds JSON \ud800 escapes, as a model's sampled text can.
            args = '{"path": "s\\ud800.txt", "content": "x\\udfff"}'
            return assistant_message("writing", [tool_call("write_file", args)])
        return assistant_message("0")

    with ScriptedOpenAIServer(respond) as server:
        config = RolloutConfig(
            env="test_rollouts_support:make_number_env",
            env_kwargs={"backend": backend_name},
            n_tasks=3,
            samples=1,
            concurrency=2,
            out=tmp_path / "run",
            retry_backoff_s=0.0,
            policy=f"openai:scripted@{server.base_url}",
        )
        result = run_rollouts(config)
        assert result.failed == 0 and result.completed == 3
        again = run_rollouts(config)  # resuming finds every record stored
        assert again.completed == again.failed == 0
    records = list(iter_trajectories(tmp_path / "run"))
    assert len(records) == 3
    for traj in records:
        assert any("lone UTF-16 surrogate" in r["repair"] for r in traj.metadata["repairs"])
        assert "s\ufffd.txt" in traj.messages[2]["tool_calls"][0]["function"]["arguments"]


@pytest.mark.parametrize("loose", [False, True])
def test_loose_string_calls_is_a_spec_option_and_each_reading_is_recorded(loose):
    env = make_env("local", default_timeout=5.0)
    env.env_spec = env.env_spec.model_copy(update={"loose_string_calls": loose})
    env.reset(seed=0)
    try:
        text = '<tool_call>{"name": "submit", "arguments": {"answer": "the number is "7""}}</tool_call>'
        obs, _, terminated, _, _ = env.step(text)
        if not loose:  # the default: invalid JSON, told to the model, nothing run
            assert not terminated and "not valid JSON" in obs[-1]["content"]
            return
        assert terminated and env.trajectory.final_answer == 'the number is "7"'
        (repair,) = env.trajectory.metadata["repairs"]
        assert repair["turn"] == 1 and "as one string" in repair["repair"]
    finally:
        env.close()
