"""verifiers adapter: a verifiers evaluation (verifiers' own eval runner, its null chat harness,
its interception proxy) of codebase-explorer-v0 against a loopback OpenAI-compatible server
that replays the scripted expert, with the same rewards the in-process expert gets."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

vf = pytest.importorskip("verifiers.v1")

import skillgym  # noqa: E402
from skillgym.adapters import verifiers as adapter  # noqa: E402
from skillgym.adapters.chat_text import system_prompt_with_tools  # noqa: E402
from skillgym.episode import run_episode  # noqa: E402
from skillgym.testing.openai_server import ReplayResponder, ScriptedOpenAIServer, assistant_message  # noqa: E402
from skillgym.toolcalls import render_tool_call_text  # noqa: E402

ENV_ID = "codebase-explorer-v0"
N_TASKS = 3
_RESPONSE = re.compile(r"<tool_response>\n(.*?)\n</tool_response>", re.S)


def _as_tool_messages(request: dict[str, Any]) -> dict[str, Any]:
    """The model side of the Qwen3 format: a user turn of ``<tool_response>`` blocks is read
    back as the tool messages it renders (what the expert replay reads)."""
    out = []
    for i, message in enumerate(request.get("messages", [])):
        content = message.get("content")
        if (
            i > 0
            and message.get("role") == "user"
            and isinstance(content, str)
            and content.startswith("<tool_response>")
        ):
            out += [
                {"role": "tool", "tool_call_id": f"r{i}_{j}", "content": text}
                for j, text in enumerate(_RESPONSE.findall(content))
            ]
        else:
            out.append(message)
    return {**request, "messages": out}


def test_system_prompt_carries_the_env_tools():
    text = system_prompt_with_tools("be brief", [{"type": "function", "function": {"name": "grep"}}])
    assert text.startswith("be brief") and '"name": "grep"' in text and "<tools>" in text


def test_verifiers_eval_matches_skillgym_rewards(tmp_path):
    from verifiers.v1.cli.eval.runner import run_eval
    from verifiers.v1.configs.cli.eval import EvalConfig

    task_ids = [t.id for t in skillgym.make_spec(ENV_ID).tasks.tasks("test")[:N_TASKS]]

    # What `skillgym eval` gives: the in-process expert through the one episode driver.
    env = skillgym.make(ENV_ID, split="test")
    expert = env.env_spec.expert
    try:
        expected = {tid: run_episode(env, expert(), task_id=tid).reward for tid in task_ids}
        replay = ReplayResponder.for_env(env, mode="text")
    finally:
        env.close()
    assert all(r == 1.0 for r in expected.values()), expected  # the expert solves them

    wrong = task_ids[-1]  # this task's model submits a wrong answer at once: reward 0 both ways
    wrong_prompt = skillgym.make_spec(ENV_ID).tasks.get(wrong).prompt
    env = skillgym.make(ENV_ID, split="test")
    try:
        env.reset(options={"task_id": wrong})
        expected[wrong] = env.step(render_tool_call_text("submit", {"answer": "wrong"}))[1]
    finally:
        env.close()
    assert expected[wrong] == 0.0

    def respond(request: dict[str, Any]) -> dict[str, Any]:
        first_user = next(m for m in request["messages"] if m["role"] == "user")
        if first_user["content"] == wrong_prompt:
            return assistant_message(render_tool_call_text("submit", {"answer": "wrong"}))
        return replay(_as_tool_messages(request))

    with ScriptedOpenAIServer(respond) as server:
        config = EvalConfig.model_validate(
            {
                "env": {"taskset": adapter.env_config_dict(ENV_ID, task_ids=task_ids), "agent": adapter.DEFAULT_AGENT},
                "model": "expert",
                "client": {"base_url": server.base_url, "api_key_var": "SKILLGYM_TEST_KEY"},
                "rich": None,
                "push": False,
                "output_dir": str(tmp_path),
                "max_concurrent": 2,
            }
        )
        import os

        os.environ.setdefault("SKILLGYM_TEST_KEY", "unused")
        episodes = asyncio.run(run_eval(config))
        requests = server.request_count

    got = {}
    for episode in episodes:
        assert not episode.errors, episode.errors
        (trace,) = episode.traces
        assert not trace.errors, trace.errors
        got[trace.task.data.task_id] = trace.rewards[adapter.REWARD_NAME].score
    assert got == expected
    assert requests >= 2 * (N_TASKS - 1) + 1  # every episode's turns went through the HTTP model


def test_load_environment_lists_the_env_tasks():
    env = adapter.load_environment(ENV_ID, split="test", limit=4)
    ids = [t.data.task_id for t in env.taskset]
    assert ids == [t.id for t in skillgym.make_spec(ENV_ID).tasks.tasks("test")[:4]]
    with pytest.raises(Exception, match="nope"):
        list(adapter.load_environment(ENV_ID, task_ids=["nope"]).taskset)
