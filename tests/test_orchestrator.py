"""orchestrator-v0 and subagent calls (issue 13): roster, tools, concurrency, shared workspace,
episode trees and roll-ups, routing, faults, and acceptance (a)/(b) on a few held-out tasks.

Subagents here are real nested episodes in real sandboxes (local bubblewrap; one test on
Docker so the suite's leak check covers nested containers). ``echo_spec`` below is a tiny
subagent env whose scripted player acts on keywords in its prompt (raise, sleep, a megabyte of
text, write a shared file), to make each fault happen for real.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import psutil
import pytest
import yaml
from gymnasium.utils.env_checker import check_env

import skillgym
from skillgym.env import SkillEnv
from skillgym.graders.config import TaskReferenceGrader
from skillgym.orchestrator import (
    OrchestratorEnv,
    Prices,
    Roster,
    RosterError,
    SubagentRunner,
    load_roster,
    make_spec,
    parse_subagent_reply,
    render_tree,
    rollup,
    routing_accuracy,
)
from skillgym.orchestrator.router import ALONE_ANSWER
from skillgym.orchestrator.runner import cached_spec
from skillgym.policies.base import Policy
from skillgym.sandbox.base import SandboxConfig
from skillgym.sandbox.gc import LABEL_PID, skillgym_containers
from skillgym.spec import EnvSpec
from skillgym.tasks import TaskList
from skillgym.testing.openai_server import ScriptedOpenAIServer
from skillgym.toolcalls import render_tool_call_text
from skillgym.types import Task

pytestmark = pytest.mark.filterwarnings("ignore:.*unisolated.*")

BIG = 1_048_576


class EchoExpert(Policy):
    """Acts on its prompt: 'raise', 'sleep N', 'megabyte', 'read NAME', 'write NAME', else echoes."""

    policy_id = "echo-expert"

    def act(self, observation: list[dict[str, Any]], info: dict[str, Any]) -> Any:
        prompt = next(m["content"] for m in observation if m["role"] == "user")
        last = observation[-1]
        if last["role"] == "tool":  # after read_file or write_file
            answer = last["content"] if last.get("name") == "read_file" else "wrote it"
            return render_tool_call_text("submit", {"answer": answer})
        if prompt.startswith("raise"):
            raise RuntimeError("the subagent's model crashed on purpose")
        if prompt.startswith("sleep"):
            time.sleep(float(prompt.split()[1]))
        if prompt.startswith("megabyte"):
            return "x" * BIG  # a plain-text answer: a submit call of 1 MB is refused by the parser
        if prompt.startswith("read"):
            return render_tool_call_text("read_file", {"path": f"shared/{prompt.split()[1]}"})
        if prompt.startswith("write"):
            name = prompt.split()[1]
            return render_tool_call_text("write_file", {"path": f"shared/{name}", "content": f"notes for {name}\n"})
        return render_tool_call_text("submit", {"answer": f"echo: {prompt}"})


def echo_spec(backend: str = "local") -> EnvSpec:
    """A small subagent env (module:function factory) played by :class:`EchoExpert`."""
    return EnvSpec(
        id="echo-v0",
        tools=["read_file", "write_file", "submit"],
        sandbox=SandboxConfig(backend=backend),
        tasks=TaskList(
            [Task(id="known", prompt="echo the known question", reference={"answer": "echo: echo the known question"})]
        ),
        grader=TaskReferenceGrader(),
        expert=EchoExpert,
        max_turns=4,
    )


def echo_roster(**limits: Any) -> dict[str, Any]:
    return {
        "subagents": [
            {
                "name": "echo",
                "description": "Echoes what it is told.",
                "env": "test_orchestrator:echo_spec",
                "policy": "expert",
                "limits": {"timeout_s": 20, **limits},
                "prices": {"input_per_million": 3.0, "output_per_million": 15.0},
            }
        ],
        "orchestrator_prices": {"input_per_million": 1.0, "output_per_million": 2.0},
    }


def orchestrator(roster: Any, tasks: Any = None, **kwargs: Any) -> OrchestratorEnv:
    tasks = tasks if tasks is not None else [Task(id="t1", prompt="say hi", reference={"answer": "hi"})]
    return skillgym.make("orchestrator-v0", roster=roster, tasks=tasks, backend="local", **kwargs)


def call(prompt: str, config: Any = "echo") -> str:
    return render_tool_call_text("subagent", {"prompt": prompt, "config": config})


def explorer(**update: Any) -> SkillEnv:
    """codebase-explorer-v0 on the local backend, from the spec the subagent runner already
    built in this process (reading the codebase takes seconds)."""
    return SkillEnv(cached_spec("codebase-explorer-v0", {"backend": "local"}).model_copy(update=update))


def bwrap_children(ignore: frozenset[int] = frozenset()) -> list[psutil.Process]:
    """Sandbox processes (bubblewrap executors) that this test process started and that still
    run, except those in ``ignore`` (pids that were there before the test)."""
    out = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and (
                "bwrap" in proc.name() or "executor" in " ".join(proc.cmdline())
            ):
                if proc.pid not in ignore:
                    out.append(proc)
        except psutil.NoSuchProcess:
            pass
    return out


# -- roster -------------------------------------------------------------------------------------


def test_roster_yaml_round_trip_and_swap(tmp_path):
    path = tmp_path / "roster.yaml"
    path.write_text(yaml.safe_dump(echo_roster()))
    roster = load_roster(path)
    assert roster.names == ["echo"] and roster.get("echo").prices.output_per_million == 15.0
    swapped = roster.with_policy("echo", "openai:student@http://127.0.0.1:8000/v1?max_retries=0")
    assert swapped.get("echo").model == "openai:student@http://127.0.0.1:8000/v1"
    assert load_roster(yaml.safe_load(swapped.to_yaml())) == swapped
    assert roster.with_policy("echo", "hf:runs/distill/student").get("echo").policy == "hf:runs/distill/student"


def test_roster_errors_name_the_field(tmp_path):
    bad = echo_roster()
    bad["subagents"][0]["policy"] = "gpt4"
    with pytest.raises(RosterError, match=r"subagents\.0\.policy.*unknown policy spec 'gpt4'"):
        load_roster(bad)
    twice = echo_roster()
    twice["subagents"].append(dict(twice["subagents"][0]))
    with pytest.raises(RosterError, match="'echo' appears twice"):
        load_roster(twice)
    with pytest.raises(RosterError, match="does not exist"):
        load_roster(tmp_path / "missing.yaml")
    with pytest.raises(KeyError, match="the roster has: echo"):
        Roster.model_validate(echo_roster()).get("nobody")


# -- the env ------------------------------------------------------------------------------------


def test_check_env_and_gymnasium_make():
    env = orchestrator(echo_roster())
    try:
        check_env(env, skip_render_check=True)
        assert {"subagent", "list_subagents", "read_file", "write_file", "submit"} <= set(env.tools)
        assert "bash" not in env.tools
    finally:
        env.close()
    import gymnasium

    gym_env = gymnasium.make(
        "skillgym/orchestrator-v0", roster=echo_roster(), tasks=[Task(id="a", prompt="p")], backend="local"
    )
    assert isinstance(gym_env.unwrapped, OrchestratorEnv)
    gym_env.close()


def test_subagent_call_returns_compact_answer_and_child_with_accounting():
    env = orchestrator(echo_roster())
    try:
        env.reset(options={"task_id": "t1"})
        obs, _, _, _, _ = env.step(call("echo the known question"))
        reply = parse_subagent_reply(obs[-1]["content"])
        assert reply == {"status": "ok", "files": [], "answer": "echo: echo the known question"}
        obs, reward, terminated, _, _ = env.step(call("anything else"))
        assert parse_subagent_reply(obs[-1]["content"])["answer"] == "echo: anything else"
        env.step(render_tool_call_text("submit", {"answer": "hi"}))
        traj = env.trajectory
        known, posed = traj.children
        # A prompt that is one of the subagent env's tasks is graded; the orchestrator's own is not.
        assert known.reward == 1.0 and known.metadata["graded"] is True
        assert posed.reward is None and posed.metadata["graded"] is False
        assert posed.final_answer == "echo: anything else" and posed.messages[0] == {
            "role": "user",
            "content": "anything else",
        }
        for child in traj.children:
            meta = child.metadata
            assert meta["subagent"] == "echo" and meta["model"] == "expert" and meta["call_status"] == "ok"
            assert meta["usage_source"] == "estimated" and child.usage.total_tokens > 0
            expected = (child.usage.prompt_tokens * 3.0 + child.usage.completion_tokens * 15.0) / 1e6
            assert meta["cost_usd"] == pytest.approx(expected) and meta["latency_s"] > 0
    finally:
        env.close()


def test_rollup_sums_tokens_cost_time_and_calls():
    env = orchestrator(echo_roster())
    try:
        env.reset(options={"task_id": "t1"})
        env.step(call("one") + "\n" + call("two"))
        env.record_policy_turn(0.25, usage={"prompt_tokens": 1000, "completion_tokens": 500})
        env.step(call("three"))
        env.record_policy_turn(0.5, usage={"prompt_tokens": 2000, "completion_tokens": 100})
        env.step(render_tool_call_text("submit", {"answer": "hi"}))
        traj = env.trajectory
    finally:
        env.close()
    assert len(traj.children) == 3
    totals = traj.metadata["rollup"]
    assert totals == rollup(traj, Prices(input_per_million=1.0, output_per_million=2.0)).model_dump()
    sub = totals["per_model"]["expert"]
    assert sub["calls"] == 3 == totals["subagent_calls"] and totals["calls_by_status"] == {"ok": 3}
    assert sub["prompt_tokens"] == sum(c.usage.prompt_tokens for c in traj.children)
    assert sub["completion_tokens"] == sum(c.usage.completion_tokens for c in traj.children)
    assert sub["cost_usd"] == pytest.approx(sum(c.metadata["cost_usd"] for c in traj.children))
    assert sub["seconds"] == pytest.approx(sum(c.metadata["latency_s"] for c in traj.children))
    own = totals["per_model"]["unknown"]  # the orchestrator, under its policy id
    assert (own["prompt_tokens"], own["completion_tokens"]) == (3000, 600)
    assert own["cost_usd"] == pytest.approx((3000 * 1.0 + 600 * 2.0) / 1e6)
    assert totals["prompt_tokens"] == 3000 + sub["prompt_tokens"]
    assert totals["cost_usd"] == pytest.approx(own["cost_usd"] + sub["cost_usd"])
    assert totals["wall_seconds"] == pytest.approx(
        sum(t.tool_seconds + (t.policy_seconds or 0) for t in traj.timings), abs=1e-5
    )
    assert totals["wall_seconds"] >= 0.75


def test_calls_in_one_turn_run_concurrently():
    env = orchestrator(echo_roster())
    try:
        env.reset(options={"task_id": "t1"})
        env.step(call("warm up"))  # the first call builds the subagent's spec and sandbox
        started = time.perf_counter()
        obs, _, _, _, info = env.step("\n".join(call(f"sleep 1 #{i}") for i in range(4)))
        seconds = time.perf_counter() - started
        replies = [parse_subagent_reply(m["content"]) for m in obs[-4:]]
        assert [r["answer"] for r in replies] == [f"echo: sleep 1 #{i}" for i in range(4)]
        assert seconds < 2.5, f"4 calls of 1 s each took {seconds:.2f} s: they did not overlap"
    finally:
        env.close()


def test_shared_workspace_in_and_out():
    env = orchestrator(echo_roster())
    try:
        env.reset(options={"task_id": "t1"})
        env.step(render_tool_call_text("write_file", {"path": "plan.md", "content": "the plan\n"}))
        obs, *_ = env.step(call("write notes.md"))
        reply = parse_subagent_reply(obs[-1]["content"])
        assert reply["status"] == "ok" and reply["files"] == ["notes.md"] and reply["answer"] == "wrote it"
        assert env.sandbox.read_file("notes.md") == "notes for notes.md\n"  # copied back
        # The subagent starts from a copy of the orchestrator's workspace at /workspace/shared.
        obs, *_ = env.step(call("read plan.md"))
        assert parse_subagent_reply(obs[-1]["content"])["answer"].endswith("the plan")
        obs, *_ = env.step(call("read notes.md"))
        assert parse_subagent_reply(obs[-1]["content"])["answer"].endswith("notes for notes.md")
    finally:
        env.close()


def test_bad_calls_are_precise_tool_errors():
    roster = echo_roster()
    env = orchestrator(roster)
    try:
        env.reset(options={"task_id": "t1"})
        obs, *_, info = env.step(call("x", config="nobody"))
        assert "no subagent named 'nobody'; the roster has: echo" in obs[-1]["content"]
        obs, *_ = env.step(call("x", config={"env": "test_orchestrator:echo_spec", "policy": "expert"}))
        assert "inline subagent definitions are not allowed by this roster" in obs[-1]["content"]
        assert [e.tool for e in env.trajectory.tool_errors] == ["subagent", "subagent"]
        assert env.trajectory.children == []
    finally:
        env.close()
    roster["allow_inline"] = True
    env = orchestrator(roster)
    try:
        env.reset(options={"task_id": "t1"})
        obs, *_ = env.step(call("inline hello", config={"env": "test_orchestrator:echo_spec", "policy": "expert"}))
        assert parse_subagent_reply(obs[-1]["content"]) == {"status": "ok", "files": [], "answer": "echo: inline hello"}
    finally:
        env.close()


# -- faults -------------------------------------------------------------------------------------


def test_faults_come_back_as_precise_tool_messages_and_leave_nothing_behind():
    roster = echo_roster(timeout_s=1.5)
    roster["subagents"].append(
        {
            "name": "down",
            "description": "A model server that is not running.",
            "env": "test_orchestrator:echo_spec",
            "policy": "openai:m@http://127.0.0.1:9/v1?max_retries=0&timeout=5",
        }
    )
    already = frozenset(p.pid for p in bwrap_children())  # other tests' sandboxes are not ours to judge
    env = orchestrator(roster)
    try:
        env.reset(options={"task_id": "t1"})
        before = time.perf_counter()
        obs, reward, terminated, truncated, _ = env.step(
            "\n".join(
                [
                    call("raise now"),
                    call("sleep 4"),
                    call("hello", config="down"),
                    call("megabyte"),
                ]
            )
        )
        seconds = time.perf_counter() - before
        assert not terminated and not truncated and reward == 0.0
        crashed, slept, down, big = (m["content"] for m in obs[-4:])
        assert crashed.splitlines()[0] == ("status: error: RuntimeError: the subagent's model crashed on purpose")
        assert slept.splitlines()[:2] == [
            "status: timeout",
            "note: stopped after its timeout of 1.5 s (limits.timeout_s) before it answered (0 turns done)",
        ]
        assert down.startswith("status: error: ") and "127.0.0.1:9" in down.splitlines()[0]
        lines = big.splitlines()
        assert lines[0] == "status: ok"
        assert lines[1] == f"note: the answer was cut to its first 4,000 of {BIG:,} characters"
        assert len(big) < 4_200
        assert seconds < 4, "the timed-out call held the turn past its timeout"
        children = env.trajectory.children
        assert [c.metadata["call_status"].split(":")[0] for c in children] == ["error", "timeout", "error", "ok"]
        assert children[0].status == "failed" and "Traceback" in children[0].metadata["traceback"]
        assert env.trajectory.metadata["rollup"]["calls_by_status"] == {"error": 2, "timeout": 1, "ok": 1}
        # The orchestrator goes on after all that.
        obs, reward, terminated, *_ = env.step(render_tool_call_text("submit", {"answer": "hi"}))
        assert terminated
    finally:
        env.close()
    deadline = time.time() + 10
    while bwrap_children(already) and time.time() < deadline:
        time.sleep(0.2)
    assert bwrap_children(already) == [], "a subagent sandbox outlived the orchestrator env"


@pytest.mark.docker
def test_timeout_on_docker_leaves_no_container(docker_base_image):
    roster = echo_roster(timeout_s=1.0)
    roster["subagents"][0]["env_args"] = {"backend": "docker"}
    env = orchestrator(roster)
    try:
        env.reset(options={"task_id": "t1"})
        obs, *_ = env.step(call("sleep 3"))
        assert obs[-1]["content"].splitlines()[0] == "status: timeout"
        obs, *_ = env.step(call("fine"))
        assert parse_subagent_reply(obs[-1]["content"])["answer"] == "echo: fine", obs[-1]["content"]
    finally:
        env.close()
    # conftest's session-end check fails the run if any container of this process is left.
    import docker  # the SDK, only where an engine answers

    mine = [c for c in skillgym_containers(docker.from_env()) if c.labels.get(LABEL_PID) == str(os.getpid())]
    assert mine == []


def test_runner_close_waits_for_failed_slots():
    already = frozenset(p.pid for p in bwrap_children())
    runner = SubagentRunner()
    entry = Roster.model_validate(echo_roster(timeout_s=1.0)).get("echo")
    result = runner.call(entry, "sleep 2.5")
    assert result.status == "timeout" and result.child is not None
    assert result.child.status == "failed" and result.child.error == "timeout after 1 s"
    runner.close()
    assert bwrap_children(already) == []


# -- transcript ---------------------------------------------------------------------------------


def test_render_tree_depth():
    env = orchestrator(echo_roster())
    try:
        env.reset(options={"task_id": "t1"})
        env.step(call("echo the known question"))
        env.step(render_tool_call_text("submit", {"answer": "hi"}))
        traj = env.trajectory
    finally:
        env.close()
    collapsed = render_tree(traj, depth=0)
    assert "+ subagent echo [expert] ok: 1 turns" in collapsed and '= "echo: echo the known question"' in collapsed
    assert "[user]\n        echo the known question" not in collapsed
    opened = render_tree(traj, depth=1)
    head = next(line for line in opened.splitlines() if "+ subagent echo" in line)
    indent = len(head) - len(head.lstrip())
    assert indent == 4 and "        [user]" in opened and "          echo the known question" in opened
    assert json.loads(traj.model_dump_json())["children"][0]["metadata"]["call_id"] == "call_1_0"


# -- acceptance (a)/(b): the scripted router on held-out codebase-explorer tasks ----------------


def _standalone(policy_spec: str, tasks: list[Task]) -> list[float]:
    from skillgym.policies.spec import make_policy

    env = explorer()
    try:
        policy = make_policy(policy_spec, env)
        return [skillgym.run_episode(env, policy, task_id=t.id).reward or 0.0 for t in tasks]
    finally:
        env.close()


@pytest.mark.parametrize("policy", ["expert", "random:0"])
def test_router_matches_standalone_subagent(policy):
    roster = {
        "subagents": [
            {
                "name": "codebase-explorer",
                "env": "codebase-explorer-v0",
                "env_args": {"backend": "local"},
                "policy": policy,
                "description": "Answers questions about a Python codebase: where a function or class "
                "is defined, which functions call it, how many methods a class has, a constant's value, a default.",
            },
            {
                "name": "poet",
                "env": "test_orchestrator:echo_spec",
                "policy": "expert",
                "description": "Writes short poems about the sea and the weather.",
            },
        ]
    }
    env = skillgym.make(
        "orchestrator-v0", roster=roster, tasks="codebase-explorer-v0", task_limit=10, split="test", backend="local"
    )
    try:
        tasks = env.env_spec.tasks.tasks("test")
        assert len(tasks) == 10 and all(t.metadata["expected_subagent"] == "codebase-explorer" for t in tasks)
        router = env.env_spec.expert()
        trajs = [skillgym.run_episode(env, router, task=t) for t in tasks]
    finally:
        env.close()
    standalone = _standalone(policy, tasks)
    assert [t.reward for t in trajs] == pytest.approx(standalone)
    assert [t.children[0].reward for t in trajs] == pytest.approx(standalone)  # graded: known tasks
    assert routing_accuracy(trajs)["accuracy"] == 1.0
    if policy == "expert":
        assert sum(standalone) >= 9
    for traj in trajs:
        totals = traj.metadata["rollup"]
        assert totals["subagent_calls"] == 1
        assert totals["per_model"][policy]["prompt_tokens"] == traj.children[0].usage.prompt_tokens


def test_router_alone_and_declines():
    env = orchestrator(echo_roster(), router="none")
    try:
        traj = skillgym.run_episode(env, env.env_spec.expert(), task_id="t1")
        assert traj.final_answer == ALONE_ANSWER and traj.children == []
    finally:
        env.close()
    spec = make_spec(
        echo_roster(),
        tasks=[
            Task(
                id="q",
                prompt="zebra quantum xylophone",
                reference={"answer": "?"},
                metadata={"expected_subagent": None},
            )
        ],
        backend="local",
    )
    env = OrchestratorEnv(spec)
    try:
        traj = skillgym.run_episode(env, spec.expert(), task_id="q")
        assert traj.children == [] and traj.final_answer == ALONE_ANSWER
        assert routing_accuracy([traj]) == {
            "known": 1,
            "correct": 1,
            "accuracy": 1.0,
            "confusion": {"(alone) -> (alone)": 1},
        }
    finally:
        env.close()


def test_openai_subagent_over_loopback_reports_real_usage():
    def respond(request: dict[str, Any]) -> dict[str, Any]:
        return {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "submit", "arguments": json.dumps({"answer": "42"})},
                }
            ],
        }

    with ScriptedOpenAIServer(respond, delay_s=0.05) as server:
        roster = echo_roster()
        roster["subagents"][0]["policy"] = f"openai:student@{server.base_url}"
        env = orchestrator(roster)
        try:
            env.reset(options={"task_id": "t1"})
            obs, *_ = env.step(call("what is six times seven"))
            assert parse_subagent_reply(obs[-1]["content"])["answer"] == "42"
            child = env.trajectory.children[0]
            assert child.metadata["usage_source"] == "policy" and child.usage.prompt_tokens > 0
            assert child.metadata["model"] == f"openai:student@{server.base_url}"
            assert server.request_count == 1
        finally:
            env.close()


@pytest.fixture(scope="module")
def untrained_student(tmp_path_factory) -> str:
    """Acceptance (b)'s subagent: a tiny Qwen3-architecture model with fresh weights and a
    tokenizer trained on a few expert conversations (what the distill pipeline's
    ``student-untrained`` is, smaller)."""
    from skillgym.chat_template import render
    from skillgym.training import build_tiny_model, train_tokenizer
    from skillgym.training.tiny import TinyModelSpec
    from skillgym.training.tokenizer import save_tokenizer

    env = explorer()
    try:
        texts = []
        for task in env.env_spec.tasks.tasks("train")[:20]:
            traj = skillgym.run_episode(env, env.env_spec.expert(), task_id=task.id)
            texts.append(render(traj.messages, tools=traj.tools, training=True))
    finally:
        env.close()
    tokenizer = train_tokenizer(texts, vocab_size=400, boilerplate_min_fraction=0.5)
    path = tmp_path_factory.mktemp("student-untrained")
    spec = TinyModelSpec(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, intermediate_size=128
    )
    build_tiny_model(spec, tokenizer, seed=0).save_pretrained(str(path))
    save_tokenizer(tokenizer, path)
    return f"hf:{path}?max_new_tokens=24"


def test_untrained_student_subagent_plays_exactly_its_standalone_episode(untrained_student):
    roster = {
        "subagents": [
            {
                "name": "codebase-explorer",
                "env": "codebase-explorer-v0",
                "env_args": {"backend": "local", "max_turns": 3},
                "policy": untrained_student,
                "description": "Answers questions about a Python codebase.",
            }
        ]
    }
    env = skillgym.make(
        "orchestrator-v0", roster=roster, tasks="codebase-explorer-v0", task_limit=3, split="test", backend="local"
    )
    try:
        tasks = env.env_spec.tasks.tasks("test")
        trees = [skillgym.run_episode(env, env.env_spec.expert(), task=t) for t in tasks]
    finally:
        env.close()
    from skillgym.policies.spec import make_policy

    alone_env = explorer(max_turns=3)
    try:
        policy = make_policy(untrained_student, alone_env)
        alone = [skillgym.run_episode(alone_env, policy, task_id=t.id) for t in tasks]
    finally:
        alone_env.close()
    for tree, single in zip(trees, alone):
        child = tree.children[0]
        assert child.messages == single.messages  # greedy: the nested episode is the standalone one
        assert child.reward == single.reward and tree.reward == pytest.approx(single.reward or 0.0)
        assert child.metadata["call_status"] == ("truncated" if single.truncated else "ok")
        assert child.usage.total_tokens > 0


def test_in_process_subagent_model_is_loaded_once_shared_and_released(untrained_student):
    """Concurrent calls from two orchestrator envs' runners use one loaded model (so their turns
    batch), play as a call alone does, and the model is closed when the last runner closes."""
    from skillgym.orchestrator.roster import SubagentConfig
    from skillgym.orchestrator.runner import _SHARED_MODELS, SubagentRunner

    entry = SubagentConfig(
        name="codebase-explorer",
        env="codebase-explorer-v0",
        env_args={"backend": "local", "max_turns": 2},
        policy=untrained_student,
        description="Answers questions about a Python codebase.",
    )
    prompts = [t.prompt for t in cached_spec("codebase-explorer-v0", {"backend": "local"}).tasks.tasks("test")[:2]]
    runners = [SubagentRunner(), SubagentRunner()]
    try:
        handles = [(runner, runner.start(entry, prompt, {})) for runner in runners for prompt in prompts]
        results = [runner.finish(handle) for runner, handle in handles]
        assert all(r.child is not None and r.child.status != "failed" for r in results), [r.status for r in results]
        policies = {id(slot.policy) for runner in runners for slots in runner._idle.values() for slot in slots}
        assert len(policies) == 1 and _SHARED_MODELS._models[untrained_student][1] == 4
        alone = SubagentRunner()
        try:
            single = alone.call(entry, prompts[0])
        finally:
            alone.close()
        assert single.child.messages == results[0].child.messages == results[2].child.messages
    finally:
        for runner in runners:
            runner.close()
    assert untrained_student not in _SHARED_MODELS._models


def test_cli_play_json_then_show_tree(tmp_path):
    from typer.testing import CliRunner

    from skillgym.orchestrator.cli import app
    from skillgym.tasks import save_tasks_jsonl

    roster_file = tmp_path / "roster.yaml"
    roster_file.write_text(yaml.safe_dump(echo_roster()))
    tasks_file = tmp_path / "tasks.jsonl"
    save_tasks_jsonl(
        [
            Task(
                id="e1",
                prompt="Echo this line please.",
                reference={"answer": "echo: Echo this line please."},
                split="test",
                metadata={"expected_subagent": "echo"},
            )
        ],
        tasks_file,
    )
    runner = CliRunner()
    result = runner.invoke(
        app, ["play", "--roster", str(roster_file), "--tasks", str(tasks_file), "--backend", "local", "--json"]
    )
    assert result.exit_code == 0, result.output
    (tmp_path / "out.jsonl").write_text(result.output)
    traj = skillgym.Trajectory.model_validate_json(result.output.splitlines()[-1])
    assert traj.reward == 1.0 and traj.children[0].metadata["subagent"] == "echo"
    shown = runner.invoke(app, ["show", str(tmp_path / "out.jsonl"), "--depth", "0"])
    assert shown.exit_code == 0 and '= "echo: Echo this line please."' in shown.output
    summary = runner.invoke(
        app, ["play", "--roster", str(roster_file), "--tasks", str(tasks_file), "--backend", "local", "--quiet"]
    )
    assert "1 episodes · mean reward 1.000 · 1 subagent calls" in summary.output
    assert "routing accuracy 1.0" in summary.output
    bad = runner.invoke(app, ["play", "--roster", str(roster_file), "--swap", "echo=gpt4"])
    assert bad.exit_code == 1 and "unknown policy spec 'gpt4'" in bad.output


def test_trl_adapter_offers_the_subagent_tools():
    from skillgym.training.environment import trl_environment

    tasks = [Task(id="t1", prompt="say hi", reference={"answer": "hi"})]
    cls = trl_environment("orchestrator-v0", roster=echo_roster(), tasks=tasks, backend="local")
    assert {"subagent", "list_subagents", "submit"} <= {m for m in dir(cls) if not m.startswith("_")}
    adapter = cls()
    try:
        assert adapter.reset(task_id="t1") == "say hi"
        assert adapter.list_subagents() == "echo: Echoes what it is told."
        assert parse_subagent_reply(adapter.subagent(prompt="hi there", config="echo"))["answer"] == "echo: hi there"
        adapter.submit(answer="hi")
        assert adapter.get_reward() == 1.0 and len(adapter.trajectory.children) == 1
    finally:
        adapter._close()


def test_children_become_an_exportable_run(tmp_path):
    from typer.testing import CliRunner

    from skillgym.orchestrator.cli import app
    from skillgym.rollouts.export import ExportConfig, export_dataset
    from skillgym.tasks import save_tasks_jsonl

    roster_file = tmp_path / "roster.yaml"
    roster_file.write_text(yaml.safe_dump(echo_roster()))
    tasks_file = tmp_path / "tasks.jsonl"
    save_tasks_jsonl(
        [
            Task(
                id="k",
                prompt="echo the known question",
                reference={"answer": "echo: echo the known question"},
                split="test",
            ),
            Task(id="o", prompt="an echo of this", reference={"answer": "echo: an echo of this"}, split="test"),
            Task(id="w", prompt="echo something", reference={"answer": "not what echo says"}, split="test"),
        ],
        tasks_file,
    )
    runner = CliRunner()
    played = runner.invoke(
        app,
        [
            "play",
            "--roster",
            str(roster_file),
            "--tasks",
            str(tasks_file),
            "--episodes",
            "3",
            "--backend",
            "local",
            "--json",
        ],
    )
    assert played.exit_code == 0, played.output
    (tmp_path / "trees.jsonl").write_text(played.output)
    result = runner.invoke(
        app, ["children", str(tmp_path / "trees.jsonl"), "--name", "echo", "--out", str(tmp_path / "calls")]
    )
    assert result.exit_code == 0, result.output
    assert "3 calls to echo written" in result.output and "(1 graded by the subagent's env)" in result.output
    report = export_dataset(ExportConfig(run_dir=tmp_path / "calls", out=tmp_path / "sft"))
    # k: graded by the echo env (1.0); o: ungraded, its orchestrator episode succeeded (1.0);
    # w: ungraded, its orchestrator episode failed (0.0) -> below the export's min reward.
    assert report.kept == 2 and report.rejected == {"below_min_reward": 1}
    from skillgym.orchestrator.children import child_records, read_trajectories
    from skillgym.pipeline.cli import app as root_app
    from skillgym.rollouts.store import TrajectoryStore

    # The same in one step from a stored orchestrator run: `skillgym export RUN --children NAME`.
    with TrajectoryStore(tmp_path / "orchestrator-run") as store:
        for tree in read_trajectories(tmp_path / "trees.jsonl"):
            store.append(tree)
    exported = runner.invoke(
        root_app,
        ["export", str(tmp_path / "orchestrator-run"), "--children", "echo", "--out", str(tmp_path / "sft2"), "--json"],
    )
    assert exported.exit_code == 0, exported.output
    assert '"kept": 2' in exported.output and '"below_min_reward": 1' in exported.output
    missing = runner.invoke(
        root_app, ["export", str(tmp_path / "orchestrator-run"), "--children", "nobody", "--out", str(tmp_path / "x")]
    )
    assert missing.exit_code == 2 and "no finished calls to subagent 'nobody'" in missing.output

    records = child_records(read_trajectories(tmp_path / "trees.jsonl"), "echo", ungraded="drop")
    assert [(r.task_id, r.metadata["reward_source"]) for r in records] == [("known", "own")]


def test_a_subagent_whose_env_cannot_be_built_is_an_error_status():
    roster = echo_roster()
    roster["subagents"].append({"name": "broken", "description": "Not registered.", "env": "nope-v0"})
    env = orchestrator(roster)
    try:
        env.reset(options={"task_id": "t1"})
        obs, *_ = env.step(call("hello", config="broken"))
        first = obs[-1]["content"].splitlines()[0]
        assert first.startswith("status: error: KeyError: ") and "no environment 'nope-v0' is registered" in first
        child = env.trajectory.children[0]
        assert child.status == "failed" and child.metadata["call_status"] == first.removeprefix("status: ")
        obs, *_ = env.step(call("still works"))  # the env goes on
        assert parse_subagent_reply(obs[-1]["content"])["answer"] == "echo: still works"
    finally:
        env.close()


def test_shipped_example_roster_loads_and_the_roster_command_lists_it():
    from typer.testing import CliRunner

    from skillgym.orchestrator.cli import app
    from skillgym.orchestrator.env import EXAMPLE_ROSTER, default_roster

    roster = load_roster(EXAMPLE_ROSTER)
    assert roster.names == ["codebase-explorer"] and roster.get("codebase-explorer").env == "codebase-explorer-v0"
    assert default_roster("local").get("codebase-explorer").env_args == {"backend": "local"}
    listed = CliRunner().invoke(app, ["roster", str(EXAMPLE_ROSTER)])
    assert listed.exit_code == 0 and listed.output.startswith(
        "codebase-explorer: codebase-explorer-v0 played by expert"
    )


def test_served_student_subagent_over_http(untrained_student, tmp_path):
    """Acceptance (c)'s path: the roster's hf: student served by `transformers serve`, the
    orchestrator's calls going over HTTP (the trained student comes from the main job)."""
    from skillgym.orchestrator.serving import serve_roster

    roster = Roster.model_validate(
        {
            "subagents": [
                {
                    "name": "codebase-explorer",
                    "env": "codebase-explorer-v0",
                    "env_args": {"backend": "local", "max_turns": 2},
                    "policy": untrained_student,
                    "description": "Answers questions about a Python codebase.",
                    "prices": {"input_per_million": 1.0, "output_per_million": 1.0},
                }
            ]
        }
    )
    served, handles = serve_roster(roster, backend="transformers", log_dir=tmp_path, timeout=240)
    try:
        policy = served.get("codebase-explorer").policy
        assert policy.startswith("openai:") and policy.endswith("?max_tokens=24&temperature=0") and len(handles) == 1
        env = skillgym.make(
            "orchestrator-v0", roster=served, tasks="codebase-explorer-v0", task_limit=2, split="test", backend="local"
        )
        try:
            trees = [skillgym.run_episode(env, env.env_spec.expert(), task=t) for t in env.env_spec.tasks.tasks("test")]
        finally:
            env.close()
    finally:
        for handle in handles:
            handle.stop()
    for tree in trees:
        child = tree.children[0]
        assert child.metadata["call_status"] in ("ok", "truncated") and child.metadata["usage_source"] == "policy"
        assert child.metadata["model"] == policy.partition("?")[0] and child.usage.completion_tokens > 0
        assert tree.metadata["rollup"]["per_model"][child.metadata["model"]]["cost_usd"] == pytest.approx(
            child.usage.total_tokens / 1e6
        )


def test_rollout_engine_stores_orchestrator_trees(tmp_path):
    from typer.testing import CliRunner

    from skillgym.pipeline.cli import app
    from skillgym.rollouts.store import iter_trajectories
    from skillgym.tasks import save_tasks_jsonl

    roster_file = tmp_path / "roster.yaml"
    roster_file.write_text(yaml.safe_dump(echo_roster()))
    tasks_file = tmp_path / "tasks.jsonl"
    save_tasks_jsonl(
        [Task(id=f"e{i}", prompt=f"echo number {i}", reference={"answer": f"echo: echo number {i}"}) for i in range(3)],
        tasks_file,
    )
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "rollout",
            "orchestrator-v0",
            "--out",
            str(out),
            "--concurrency",
            "3",
            "--env-arg",
            f"roster={roster_file}",
            "--env-arg",
            f"tasks={tasks_file}",
            "--env-arg",
            "backend=local",
        ],
    )
    assert result.exit_code == 0, result.output
    stored = sorted(iter_trajectories(out), key=lambda t: t.task_id)
    assert [t.reward for t in stored] == [1.0, 1.0, 1.0]
    assert [t.children[0].final_answer for t in stored] == [f"echo: echo number {i}" for i in range(3)]
    assert all(t.metadata["rollup"]["subagent_calls"] == 1 for t in stored)


def test_calls_with_duplicate_ids_each_get_their_own_answer():
    env = orchestrator(echo_roster())
    try:
        env.reset(options={"task_id": "t1"})
        calls = [
            {
                "id": "same",
                "type": "function",
                "function": {"name": "subagent", "arguments": json.dumps({"prompt": prompt, "config": "echo"})},
            }
            for prompt in ("first", "second")
        ]
        obs, *_ = env.step({"role": "assistant", "content": "", "tool_calls": calls})
        assert [parse_subagent_reply(m["content"])["answer"] for m in obs[-2:]] == ["echo: first", "echo: second"]
        assert [c.final_answer for c in env.trajectory.children] == ["echo: first", "echo: second"]
    finally:
        env.close()
