"""Policies against real things: a real loopback HTTP server, a real tiny Qwen3 model.

Parity lives here: episodes through ``openai:MODEL@<server>``
against a server that replays the env's scripted expert give the same trajectories as the
in-process expert.
"""

from __future__ import annotations

import asyncio
import json
import pickle
import re
import shutil
import socket
import sysconfig
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from skillgym.episode import run_episode
from skillgym.policies.base import Policy
from skillgym.policies.openai_policy import OpenAIPolicy, OpenAIPolicyError, to_openai_messages
from skillgym.policies.spec import PolicySpec, make_policy, parse_policy_spec
from skillgym.testing import (
    ErrorReply,
    ReplayResponder,
    ScriptedOpenAIServer,
    assistant_message,
    chat_completion,
    tool_call,
)
from skillgym.toolcalls import render_tool_call_text as call
from tests.test_chat_template import tiny_tokenizer
from tests.test_env import make_env

FAST = {"backoff_base": 0.01, "backoff_max": 0.05}


class NumberExpert(Policy):
    """The tiny env's scripted expert: read the file named in the prompt, submit its number."""

    policy_id = "expert"

    def act(self, observation, info):
        last = observation[-1]
        found = re.search(r"the number is (\d+)", str(last.get("content", ""))) if last["role"] == "tool" else None
        if found:
            return call("submit", {"answer": found.group(1)})
        path = re.search(r"notes/n\d+\.txt", observation[1]["content"]).group(0)
        return "<think>The prompt names the file.</think>Reading it.\n" + call("read_file", {"path": path})


@pytest.fixture
def env():
    env = make_env("local", expert=NumberExpert)
    yield env
    env.close()


def reply_with(message: dict) -> Any:
    return lambda request: message


# -- the HTTP policy -------------------------------------------------------------------------------


def test_sends_tools_and_accepts_structured_calls(env):
    message = assistant_message("", [tool_call("read_file", {"path": "notes/n3.txt"}, "srv_1")])
    with ScriptedOpenAIServer(reply_with(message)) as server:
        policy = OpenAIPolicy("m", base_url=server.base_url, sampling={"temperature": 0.2, "max_tokens": 64})
        obs, info = env.reset(options={"task_id": "t3"})
        action = policy.act(obs, info)
        sent = server.requests[-1]
        assert sent["tools"] == info["tools"] and sent["model"] == "m"
        assert sent["temperature"] == 0.2 and sent["max_tokens"] == 64 and sent["messages"] == obs
        assert action["tool_calls"][0]["id"] == "srv_1" and action["usage"]["prompt_tokens"] > 0
        obs, *_ = env.step(action)
        assert obs[-1]["tool_call_id"] == "srv_1" and "the number is 21" in obs[-1]["content"]
        policy.close()


def test_accepts_tool_call_markup_in_content(env):
    with ScriptedOpenAIServer(reply_with(assistant_message(call("read_file", {"path": "notes/n3.txt"})))) as server:
        policy = OpenAIPolicy("m", base_url=server.base_url, send_tools=False)
        obs, info = env.reset(options={"task_id": "t3"})
        action = policy.act(obs, info)
        assert "tools" not in server.requests[-1]
        obs, *_ = env.step(action)
        assert obs[-2]["tool_calls"][0]["function"]["name"] == "read_file"
        assert "the number is 21" in obs[-1]["content"]


@pytest.mark.parametrize("status", [429, 500])
def test_retries_then_succeeds(env, status):
    with ScriptedOpenAIServer(reply_with(assistant_message("21")), fail_first=2, fail_status=status) as server:
        policy = OpenAIPolicy("m", base_url=server.base_url, max_retries=3, **FAST)
        obs, info = env.reset(options={"task_id": "t3"})
        assert policy.act(obs, info)["content"] == "21"
        assert server.request_count == 3 and server.failures_injected == 2
        # The async path retries the same way.
        server.failures_injected = 0
        assert asyncio.run(policy.aact(obs, info))["content"] == "21"
        assert server.request_count == 6


def test_precise_error_after_exhausting_retries(env):
    obs, info = env.reset(options={"task_id": "t3"})
    with ScriptedOpenAIServer(reply_with(assistant_message("21")), fail_first=100, fail_status=503) as server:
        policy = OpenAIPolicy("m", base_url=server.base_url, max_retries=2, **FAST)
        with pytest.raises(OpenAIPolicyError, match=r"failed after 3 attempt\(s\); last error: HTTP 503") as caught:
            policy.act(obs, info)
        assert caught.value.status == 503 and caught.value.attempts == 3 and server.request_count == 3
        assert server.base_url in str(caught.value)
    # A client error is not retried: the request itself is wrong.
    with ScriptedOpenAIServer(lambda r: ErrorReply(400, "bad 'messages'")) as server:
        policy = OpenAIPolicy("m", base_url=server.base_url, max_retries=5, **FAST)
        with pytest.raises(OpenAIPolicyError, match=r"HTTP 400: .*bad 'messages'"):
            policy.act(obs, info)
        assert server.request_count == 1
    # Nothing listening: connection errors are retried, then reported.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    policy = OpenAIPolicy("m", base_url=f"http://127.0.0.1:{port}/v1", max_retries=1, **FAST)
    with pytest.raises(OpenAIPolicyError, match=r"2 attempt\(s\); last error: ConnectError"):
        policy.act(obs, info)


def test_timeouts_are_retried(env):
    seen = []

    async def slow_first(request):
        seen.append(1)
        if len(seen) == 1:
            await asyncio.sleep(1.0)
        return assistant_message("21")

    obs, info = env.reset(options={"task_id": "t3"})
    with ScriptedOpenAIServer(slow_first) as server:
        policy = OpenAIPolicy("m", base_url=server.base_url, timeout=0.25, max_retries=2, **FAST)
        assert policy.act(obs, info)["content"] == "21" and len(seen) == 2


def test_concurrency_limit_is_respected(env):
    obs, info = env.reset(options={"task_id": "t3"})
    with ScriptedOpenAIServer(reply_with(assistant_message("21")), delay_s=0.05, record=False) as server:
        policy = OpenAIPolicy("m", base_url=server.base_url, max_concurrency=3)

        async def many():
            results = await asyncio.gather(*(policy.aact(obs, info) for _ in range(12)))
            await policy.aclose()
            return results

        assert len(asyncio.run(many())) == 12 and server.max_in_flight == 3
        server.max_in_flight = 0
        with ThreadPoolExecutor(8) as pool:
            assert len(list(pool.map(lambda _: policy.act(obs, info), range(8)))) == 8
        assert server.max_in_flight == 3


@pytest.mark.parametrize("process", [False, True])
def test_async_requests_overlap(process):
    # 32 requests with a 0.2 s delay finish in well under 32 * 0.2 s: aact never blocks the loop.
    obs = [{"role": "user", "content": "hi"}]
    with ScriptedOpenAIServer(reply_with(assistant_message("ok")), delay_s=0.2, process=process) as server:
        policy = OpenAIPolicy("m", base_url=server.base_url, max_concurrency=64)

        async def many():
            started = time.perf_counter()
            await asyncio.gather(*(policy.aact(obs, {}) for _ in range(32)))
            await policy.aclose()
            return time.perf_counter() - started

        assert asyncio.run(many()) < 1.5 and server.max_in_flight == 32
        assert server.request_count == 32  # counted across the process boundary too


def test_usage_token_ids_and_logprobs_are_recorded(env):
    def respond(request):
        assert request["logprobs"] is True and request["return_token_ids"] is True
        message = assistant_message(call("submit", {"answer": "21"}))
        logprobs = {"content": [{"token": "a", "logprob": -0.25, "bytes": [97], "top_logprobs": []}] * 3}
        return chat_completion(
            message,
            usage={"prompt_tokens": 100, "completion_tokens": 3, "total_tokens": 103},
            choice_extra={"token_ids": [5, 6, 7], "logprobs": logprobs},
            prompt_token_ids=[1, 2],
        )

    with ScriptedOpenAIServer(respond) as server:
        policy = OpenAIPolicy("m", base_url=server.base_url, logprobs=True, return_token_ids=True)
        traj = run_episode(env, policy, task_id="t3")
    assert traj.reward == 1.0 and traj.policy_id == "openai:m"
    assert (traj.usage.prompt_tokens, traj.usage.completion_tokens) == (100, 3)
    assert traj.token_ids == [[5, 6, 7]] and traj.logprobs == [[-0.25, -0.25, -0.25]]


def test_unparsable_turn_is_sent_in_strict_shape(env):
    # The first reply's arguments are broken JSON: the env answers with a note that answers no
    # call; the strict server would answer 400 if the policy sent that note as a tool message.
    with ScriptedOpenAIServer(ReplayResponder(NumberExpert, mode="structured"), malformed_arguments=1) as server:
        policy = OpenAIPolicy("m", base_url=server.base_url, max_retries=0)
        traj = run_episode(env, policy, task_id="t3")
        assert traj.reward == 1.0 and traj.tool_errors and "not valid JSON" in traj.tool_errors[0].error
        second = server.requests[1]["messages"]
        assert second[-1]["role"] == "user" and second[-1]["content"].startswith("Error: your tool call")
        assert "tool_calls" not in second[-2] and '"oops' in second[-2]["content"]


def test_to_openai_messages_rules():
    messages = [
        {"role": "user", "content": "q"},
        {
            "role": "assistant",
            "content": "x",
            "reasoning_content": "r",
            "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": {"k": 1}}}],
        },
        {"role": "tool", "tool_call_id": "a", "name": "f", "content": "ok"},
        {"role": "assistant", "content": "<tool_call>{bad</tool_call>"},
        {"role": "tool", "tool_call_id": "call_2_error", "content": "Error: could not be parsed"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}}],
        },
        {"role": "user", "content": "next"},
    ]
    out = to_openai_messages(messages)
    assert out[1]["tool_calls"][0]["function"]["arguments"] == '{"k": 1}' and out[1]["reasoning_content"] == "r"
    assert out[2] == {"role": "tool", "tool_call_id": "a", "content": "ok"}
    assert out[4] == {"role": "user", "content": "Error: could not be parsed"}
    assert (
        "tool_calls" not in out[5] and out[5]["content"] == '<tool_call>\n{"name": "g", "arguments": {}}\n</tool_call>'
    )
    assert "reasoning_content" not in to_openai_messages(messages, send_reasoning=False)[1]


def test_models_endpoint():
    import httpx

    with ScriptedOpenAIServer(reply_with(assistant_message("")), models=["a", "b"]) as server:
        data = httpx.get(server.base_url + "/models").json()
    assert [m["id"] for m in data["data"]] == ["a", "b"]


# -- specs -------------------------------------------------------------------------------------------


def test_policy_spec_syntax(env, tmp_path):
    assert parse_policy_spec("expert") == PolicySpec(kind="expert", spec="expert")
    assert parse_policy_spec("random:7").seed == 7
    spec = parse_policy_spec(
        "openai:Qwen/Qwen3-4B@http://127.0.0.1:8000/v1/?temperature=0.2&max_tokens=512&max_concurrency=8&stop=</s>"
    )
    assert (spec.model, spec.base_url) == ("Qwen/Qwen3-4B", "http://127.0.0.1:8000/v1")
    assert spec.sampling == {"temperature": 0.2, "max_tokens": 512, "stop": "</s>"}
    assert spec.options == {"max_concurrency": 8}
    assert parse_policy_spec(str(spec)) == spec  # the canonical string parses to the same spec
    assert PolicySpec.model_validate_json(spec.model_dump_json()) == spec
    assert parse_policy_spec("openai:gpt-4o-mini").base_url is None
    assert parse_policy_spec("hf:runs/student?max_new_tokens=8").options == {"max_new_tokens": 8}
    for bad, message in [
        ("gpt", "unknown policy spec"),
        ("random:x", "integer"),
        ("hf:p?bogus=1", "unknown hf option"),
        ("openai:@http://h/v1", "empty"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_policy_spec(bad)
    assert isinstance(make_policy("expert", env), NumberExpert)
    policy = make_policy("openai:m@http://127.0.0.1:1/v1?temperature=0&max_retries=0", env)
    assert isinstance(policy, OpenAIPolicy) and policy.url == "http://127.0.0.1:1/v1/chat/completions"
    assert policy.sampling == {"temperature": 0} and policy.max_retries == 0
    clone = pickle.loads(pickle.dumps(policy))  # what sending it to a Ray actor does
    assert (clone.url, clone.sampling, clone.max_retries) == (policy.url, policy.sampling, 0)


# -- acceptance: the HTTP policy replays the in-process expert exactly ---------------------------------

COMPARED = {
    "task_id",
    "messages",
    "tools",
    "reward",
    "reward_components",
    "final_answer",
    "terminated",
    "truncated",
    "tool_errors",
    "grade_details",
}


def _same(a, b) -> None:
    assert a.model_dump(include=COMPARED) == b.model_dump(include=COMPARED)


async def _arun(env, policy, task_id):
    """A minimal async episode loop (what the rollout engine does): aact, then step."""
    obs, info = env.reset(options={"task_id": task_id})
    policy.reset(obs, info)
    for _ in range(env.env_spec.max_turns):
        action = await policy.aact(obs, info)
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            break
    return env.trajectory


@pytest.fixture(scope="module")
def explorer_env(tmp_path_factory):
    """codebase-explorer-v0 over a small copy of a few stdlib modules (fast to index)."""
    try:
        import skillgym
        from skillgym.envs.codebase_explorer import ExpertPolicy  # noqa: F401
    except ImportError:
        pytest.skip("codebase-explorer-v0 is not available")
    root = tmp_path_factory.mktemp("codebase") / "mini"
    root.mkdir()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for name in [
        "textwrap.py",
        "shlex.py",
        "fnmatch.py",
        "colorsys.py",
        "string.py",
        "glob.py",
        "bisect.py",
        "heapq.py",
    ]:
        shutil.copy(stdlib / name, root / name)
    env = skillgym.make("codebase-explorer-v0", backend="local", codebase=root)
    yield env
    env.close()


@pytest.mark.parametrize("mode", ["structured", "text"])
def test_http_expert_equals_in_process_expert(explorer_env, mode):
    env = explorer_env
    tasks = [t.id for t in env.env_spec.tasks.tasks("train")[:6]] + [t.id for t in env.env_spec.tasks.tasks("test")[:4]]
    expected = {task_id: run_episode(env, make_policy("expert", env), task_id=task_id) for task_id in tasks}
    assert len(expected) == 10 and all(t.reward == 1.0 for t in expected.values())
    with ScriptedOpenAIServer(ReplayResponder.for_env(env, mode=mode)) as server:
        policy = make_policy(f"openai:expert@{server.base_url}?temperature=0", env)
        for task_id in tasks:
            traj = run_episode(env, policy, task_id=task_id)
            _same(traj, expected[task_id])
            assert traj.policy_id == "openai:expert" and traj.usage.prompt_tokens > 0
        for task_id in tasks[:3]:  # the async path gives the same episodes
            _same(asyncio.run(_arun(env, policy, task_id)), expected[task_id])
        policy.close()


def test_http_expert_equals_in_process_expert_tiny_env(env):
    expected = [run_episode(env, NumberExpert(), task_id=f"t{i}") for i in range(10)]
    with ScriptedOpenAIServer(ReplayResponder.for_env(env, mode="structured")) as server:
        policy = make_policy(f"openai:expert@{server.base_url}", env)
        for i, want in enumerate(expected):
            _same(run_episode(env, policy, task_id=f"t{i}"), want)


# -- the in-process transformers policy ------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model():
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tokenizer = tiny_tokenizer()
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    return Qwen3ForCausalLM(config), tokenizer


def test_hf_policies_load_from_several_threads_at_once(tiny_model, tmp_path):
    """Orchestrator episodes start their subagents' hf: policies from worker threads; transformers
    builds models on the meta device through process-wide patches, so unguarded concurrent loads
    fail ("Cannot copy out of meta tensor")."""
    import threading

    from skillgym.policies.hf_policy import HFPolicy

    model, tokenizer = tiny_model
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    errors: list[str] = []

    def load() -> None:
        try:
            HFPolicy(tmp_path, max_new_tokens=4)
        except Exception as exc:  # noqa: BLE001 - collected and reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=load) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


@pytest.fixture
def small_env():
    """The tiny env with two tools: a short prompt keeps CPU generation fast."""
    env = make_env("local", tools=["read_file", "submit"], expert=NumberExpert)
    yield env
    env.close()


def test_hf_policy_random_model_action_is_accepted(small_env, tiny_model):
    from skillgym.policies.hf_policy import HFPolicy

    model, tokenizer = tiny_model
    policy = HFPolicy(model, tokenizer, max_new_tokens=8)
    obs, info = small_env.reset(options={"task_id": "t3"})
    action = policy.act(obs, info)
    assert isinstance(action["content"], str) and 0 < len(action["token_ids"]) <= 8
    assert action["usage"]["prompt_tokens"] == len(policy.prompt_ids(obs, info))
    small_env.step(action)  # whatever a random model writes, the env takes it
    # Greedy is deterministic; sampling is reproducible with a seed.
    assert HFPolicy(model, tokenizer, max_new_tokens=8).act(obs, info)["token_ids"] == action["token_ids"]
    sampled = [HFPolicy(model, tokenizer, max_new_tokens=8, temperature=1.0, seed=3).act(obs, info) for _ in range(2)]
    assert sampled[0]["token_ids"] == sampled[1]["token_ids"]


def test_hf_policy_keeps_tool_call_markup(small_env, tiny_model):
    from skillgym.policies.hf_policy import HFPolicy

    model, tokenizer = tiny_model
    obs, info = small_env.reset(options={"task_id": "t3"})
    target = tokenizer.encode(call("read_file", {"path": "notes/n3.txt"}), add_special_tokens=False)
    target.append(tokenizer.convert_tokens_to_ids("<|im_end|>"))
    start = len(HFPolicy(model, tokenizer).prompt_ids(obs, info))

    def force(batch_id, input_ids):  # steer generation through the real generate/decode path
        step = input_ids.shape[-1] - start
        return [target[min(step, len(target) - 1)]]

    policy = HFPolicy(
        model, tokenizer, max_new_tokens=len(target) + 5, generate_kwargs={"prefix_allowed_tokens_fn": force}
    )
    action = policy.act(obs, info)
    assert action["token_ids"] == target  # stopped at <|im_end|>
    assert action["content"].startswith("<tool_call>") and action["content"].endswith("</tool_call>")
    obs, *_ = small_env.step(action)
    assert obs[-2]["tool_calls"][0]["function"]["name"] == "read_file"
    assert "the number is 21" in obs[-1]["content"]


def test_hf_spec_loads_a_saved_model(small_env, tiny_model, tmp_path):
    model, tokenizer = tiny_model
    model.save_pretrained(tmp_path / "student")
    tokenizer.save_pretrained(tmp_path / "student")
    policy = make_policy(f"hf:{tmp_path / 'student'}?max_new_tokens=4", small_env)
    obs, info = small_env.reset(options={"task_id": "t1"})
    action = policy.act(obs, info)
    assert len(action["token_ids"]) <= 4 and policy.policy_id.startswith("hf:")
    json.dumps(action)


def test_hf_spec_loads_a_lora_checkpoint_merged_onto_its_base(small_env, tiny_model, tmp_path):
    """A training checkpoint (an adapter folder) is a policy: the base its adapter_config.json
    names, the adapter merged in, the same tokens as the merged model a trainer would save."""
    import copy

    import torch
    from peft import LoraConfig, get_peft_model

    from skillgym.policies.hf_policy import HFPolicy

    model, tokenizer = tiny_model
    model.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    peft_model = get_peft_model(
        copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    )
    peft_model.peft_config["default"].base_model_name_or_path = str(tmp_path / "base")
    peft_model.save_pretrained(tmp_path / "checkpoint-8")  # no tokenizer: it comes from the base
    merged = peft_model.merge_and_unload()
    obs, info = small_env.reset(options={"task_id": "t1"})
    from_checkpoint = make_policy(f"hf:{tmp_path / 'checkpoint-8'}?max_new_tokens=6", small_env)
    expected = HFPolicy(merged, tokenizer, max_new_tokens=6).act(obs, info)["token_ids"]
    assert from_checkpoint.act(obs, info)["token_ids"] == expected
    # The loaded model is the merged one, weight for weight, and the adapter is not a no-op: the
    # merged weights and the next-token logits both differ from the base model's.
    loaded = dict(from_checkpoint.model.named_parameters())
    assert all(torch.equal(loaded[name], weight) for name, weight in merged.named_parameters())
    assert not all(torch.equal(a, b) for a, b in zip(merged.parameters(), model.parameters(), strict=True))
    prompt = torch.tensor([from_checkpoint.prompt_ids(obs, info)])
    with torch.no_grad():
        assert not torch.allclose(merged(prompt).logits[0, -1], model(prompt).logits[0, -1])


def test_one_client_one_retry_policy_for_both_faces():
    """The core client: the sync and async faces retry alike, honour Retry-After, count every request."""
    from skillgym.openai_client import OpenAIClient, OpenAIError, RetryPolicy

    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    with ScriptedOpenAIServer(
        reply_with(assistant_message("ok")), fail_first=2, fail_status=429, retry_after=0.2
    ) as server:
        client = OpenAIClient(server.base_url, retry=RetryPolicy(max_retries=2, backoff_base=0.01, backoff_max=1.0))
        started = time.perf_counter()
        assert client.complete(body)["choices"][0]["message"]["content"] == "ok"
        assert time.perf_counter() - started >= 0.4  # two waits of at least Retry-After
        server.failures_injected = 0

        async def once():
            try:
                return await client.acomplete(body)
            finally:
                await client.aclose()

        assert asyncio.run(once())["choices"][0]["message"]["content"] == "ok"
        assert client.http_calls == server.request_count == 6
        client.close()
    with ScriptedOpenAIServer(lambda r: {"choices": []}) as server:
        with pytest.raises(OpenAIError, match="not a chat completion") as caught:
            OpenAIClient(server.base_url, retry=RetryPolicy(max_retries=3)).complete(body)
        assert caught.value.attempts == 1 and server.request_count == 1
    # A retry's pause grows with the retry number, is spread by jitter and never zero.
    policy = RetryPolicy(backoff_base=1.0, backoff_max=3.0)
    assert 0.5 <= policy.delay(1) <= 1.0 and 1.0 <= policy.delay(2) <= 2.0 and 1.5 <= policy.delay(5) <= 3.0
    assert policy.delay(1, retry_after=10.0) == 3.0


def _both_faces(client, body):
    """What each face does with ``body``: the completion's text, or the OpenAIError it raised."""
    from skillgym.openai_client import OpenAIError

    def sync():
        try:
            return client.complete(body)["choices"][0]["message"]["content"]
        except OpenAIError as exc:
            return exc

    async def run_async():
        try:
            return (await client.acomplete(body))["choices"][0]["message"]["content"]
        except OpenAIError as exc:
            return exc
        finally:
            await client.aclose()

    return sync(), asyncio.run(run_async())


def test_async_face_fails_exactly_like_the_sync_face():
    """Different HTTP libraries underneath, one reading of the answers: same errors, attempts and reasons."""
    from skillgym.openai_client import OpenAIClient, OpenAIError, RetryPolicy

    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    retry = RetryPolicy(max_retries=2, backoff_base=0.01, backoff_max=0.05)
    cases = [
        (
            dict(respond=reply_with(assistant_message("ok")), fail_first=100, fail_status=503),
            r"3 attempt\(s\); last error: HTTP 503",
            3,
        ),
        (dict(respond=lambda r: ErrorReply(400, "bad 'messages'")), r"HTTP 400: .*bad 'messages'", 1),
        (dict(respond=lambda r: {"choices": []}), "not a chat completion", 1),
    ]
    for options, pattern, attempts in cases:
        with ScriptedOpenAIServer(**options) as server:
            client = OpenAIClient(server.base_url, retry=retry)
            for result in _both_faces(client, body):
                assert isinstance(result, OpenAIError) and re.search(pattern, str(result)), result
                assert result.attempts == attempts
            assert server.request_count == client.http_calls == 2 * attempts
            client.close()
    # Nothing listening: connection errors are retried, then named alike.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = OpenAIClient(f"http://127.0.0.1:{port}/v1", retry=retry)
    for result in _both_faces(client, body):
        assert isinstance(result, OpenAIError) and result.attempts == 3 and result.status is None
        assert re.search(r"3 attempt\(s\); last error: ConnectError", str(result)), result


def test_async_face_retries_timeouts_and_honours_retry_after():
    from skillgym.openai_client import OpenAIClient, RetryPolicy

    seen = []

    async def slow_first(request):
        seen.append(1)
        if len(seen) in (1, 3):  # the first try of each face
            await asyncio.sleep(1.0)
        return assistant_message("21")

    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    with ScriptedOpenAIServer(slow_first) as server:
        client = OpenAIClient(server.base_url, timeout=0.25, retry=RetryPolicy(max_retries=2, backoff_base=0.01))
        assert _both_faces(client, body) == ("21", "21") and len(seen) == 4
    with ScriptedOpenAIServer(
        reply_with(assistant_message("ok")), fail_first=1, fail_status=429, retry_after=0.3
    ) as server:
        client = OpenAIClient(server.base_url, retry=RetryPolicy(max_retries=1, backoff_base=0.01, backoff_max=1.0))

        async def timed():
            started = time.perf_counter()
            text = (await client.acomplete(body))["choices"][0]["message"]["content"]
            await client.aclose()
            return text, time.perf_counter() - started

        text, took = asyncio.run(timed())
        assert text == "ok" and took >= 0.3 and server.request_count == 2


def test_awarm_opens_the_loops_connections_before_the_first_request():
    import psutil

    from skillgym.openai_client import OpenAIClient

    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    with ScriptedOpenAIServer(reply_with(assistant_message("ok")), delay_s=0.05) as server:
        port = int(server.base_url.split(":")[-1].split("/")[0])
        client = OpenAIClient(server.base_url, max_concurrency=4)

        def open_connections():
            return sum(
                1
                for c in psutil.Process().net_connections("tcp")
                if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
            )

        async def warm_then_ask():
            before = open_connections()
            await client.awarm(8)  # capped at max_concurrency
            warmed = open_connections() - before
            answers = await asyncio.gather(*(client.acomplete(body) for _ in range(4)))
            reused = open_connections() - before
            await client.aclose()
            return warmed, reused, len(answers)

        assert asyncio.run(warm_then_ask()) == (4, 4, 4)
        assert client.http_calls == server.request_count == 4  # warming is not a completion request
    # A server that is not there: warming is an optimization and never raises.
    asyncio.run(OpenAIClient("http://127.0.0.1:9/v1").awarm(2))


def test_async_connections_close_with_their_loop_without_aclose(recwarn):
    import gc

    from skillgym.openai_client import OpenAIClient

    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    with ScriptedOpenAIServer(reply_with(assistant_message("ok"))) as server:
        client = OpenAIClient(server.base_url)
        for _ in range(2):  # one session per loop; each closed when asyncio.run ends its loop
            assert asyncio.run(client.acomplete(body))["choices"][0]["message"]["content"] == "ok"
        sessions = list(client._async.values())
        assert len(sessions) == 2 and all(s.http.closed for s in sessions)
        del client, sessions
        gc.collect()
    assert not [w for w in recwarn if "Unclosed" in str(w.message)]


def test_server_delay_is_its_latency_not_extra_time():
    """The loopback server answers ``delay_s`` after a request arrives, its own work included,
    so a benchmark's ideal (concurrency / delay) is what the server can really deliver."""
    import httpx

    async def busy(request):
        await asyncio.sleep(0.15)  # the server's own work on the answer
        return assistant_message("ok")

    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    with ScriptedOpenAIServer(busy, delay_s=0.3) as server, httpx.Client() as client:
        client.post(server.base_url + "/chat/completions", json=body)  # a warm connection
        started = time.perf_counter()
        assert (
            client.post(server.base_url + "/chat/completions", json=body).json()["choices"][0]["message"]["content"]
            == "ok"
        )
        took = time.perf_counter() - started
    assert 0.3 <= took < 0.42, took  # not 0.45: the 0.15 s of work was inside the delay
