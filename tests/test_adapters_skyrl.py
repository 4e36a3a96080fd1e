"""SkyRL-gym adapter: envs made by ``skyrl_gym.make`` (SkyRL-gym's own registry and env
contract) run codebase-explorer-v0 episodes, driven the way SkyRL's generator drives a text env
(init, then model turn / step until done) with the model served by a loopback OpenAI-compatible
server replaying the expert; rewards equal the in-process env's. (skyrl-train, which holds
SkyRL's generator, is not on PyPI, so the loop is written here.)"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

skyrl_gym = pytest.importorskip("skyrl_gym")

import skillgym  # noqa: E402
from skillgym.adapters import skyrl as adapter  # noqa: E402
from skillgym.episode import run_episode  # noqa: E402
from skillgym.testing.openai_server import ReplayResponder, ScriptedOpenAIServer  # noqa: E402
from skillgym.toolcalls import render_tool_call_text  # noqa: E402

ENV_ID = "codebase-explorer-v0"
_RESPONSE = re.compile(r"<tool_response>\n(.*?)\n</tool_response>", re.S)


def _as_tool_messages(request: dict[str, Any]) -> dict[str, Any]:
    """The model side of the Qwen3 format: a user turn of ``<tool_response>`` blocks read back as tool messages."""
    out = []
    for i, message in enumerate(request.get("messages", [])):
        content = message.get("content")
        if i > 1 and message.get("role") == "user" and str(content).startswith("<tool_response>"):
            out += [
                {"role": "tool", "tool_call_id": f"r{i}_{j}", "content": t}
                for j, t in enumerate(_RESPONSE.findall(content))
            ]
        else:
            out.append(message)
    return {**request, "messages": out}


def _generate(client: httpx.Client, base_url: str, chat: list[dict[str, Any]]) -> str:
    response = client.post(f"{base_url}/chat/completions", json={"model": "expert", "messages": chat})
    response.raise_for_status()
    return response.json()["choices"][0]["message"]["content"]


def test_skyrl_gym_episodes_match_in_process_rewards():
    rows = adapter.dataset_rows(ENV_ID, split="test", limit=3)
    env = skillgym.make(ENV_ID, split="test")
    try:
        expected = {
            row["task_id"]: run_episode(env, env.env_spec.expert(), task_id=row["task_id"]).reward for row in rows
        }
        replay = ReplayResponder.for_env(env, mode="text")
    finally:
        env.close()
    assert set(expected.values()) == {1.0}
    wrong_task = rows[-1]["task_id"]
    expected[wrong_task] = 0.0  # this row's model answers wrongly at once

    def respond(request: dict[str, Any]) -> dict[str, Any]:
        if skillgym.make_spec(ENV_ID).tasks.get(wrong_task).prompt == request["messages"][1]["content"]:
            return {"role": "assistant", "content": render_tool_call_text("submit", {"answer": "wrong"})}
        return replay(_as_tool_messages(request))

    got, metrics = {}, []
    with ScriptedOpenAIServer(respond) as server, httpx.Client(timeout=120) as client:
        for row in rows:
            extras = {k: v for k, v in row.items() if k not in ("prompt", "env_class")}
            env = skyrl_gym.make(row["env_class"], env_config={}, extras=extras)
            assert isinstance(env, skyrl_gym.Env)
            try:
                chat, info = env.init(row["prompt"])
                assert (
                    chat[0]["role"] == "system" and "<tools>" in chat[0]["content"] and '"grep"' in chat[0]["content"]
                )
                assert chat[1]["content"] == row["prompt"][0]["content"] and info["task_id"] == row["task_id"]
                done, reward, turns = False, None, 0
                while not done:
                    action = _generate(client, server.base_url, chat)
                    out = env.step(action)
                    turns += 1
                    chat += [{"role": "assistant", "content": action}, *out["observations"]]
                    done, reward = out["done"], out["reward"]
                    if not done:
                        assert out["reward"] == 0.0 and out["observations"][0]["role"] == "user"
                    assert turns <= env.max_turns
                got[row["task_id"]] = reward
                metrics.append(env.get_metrics())
            finally:
                env.close()
    assert got == expected
    assert [m["reward"] for m in metrics] == [expected[r["task_id"]] for r in rows]
    aggregated = adapter.SkillgymTextEnv.aggregate_metrics(metrics)  # SkyRL's own aggregation
    assert aggregated["reward"] == pytest.approx(sum(expected.values()) / len(rows))


def test_rows_need_a_task_id_and_say_so():
    with pytest.raises(ValueError, match="task_id"):
        skyrl_gym.make("skillgym", env_config={}, extras={"env_id": ENV_ID})
    with pytest.raises(ValueError, match="env_id"):
        skyrl_gym.make("skillgym", env_config={}, extras={"task_id": "x"})
