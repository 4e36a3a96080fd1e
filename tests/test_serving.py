"""`skillgym serve` on CPU: a real `transformers serve` process answers what the in-process
model answers, so a served student works as a subagent endpoint."""

from __future__ import annotations

import pytest

from skillgym.policies.hf_policy import HFPolicy
from skillgym.policies.openai_policy import OpenAIPolicy
from skillgym.toolcalls import parse_turn
from skillgym.training.serving import ServerError, server_command, start_server

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "grep",
            "description": "Search.",
            "parameters": {"type": "object", "properties": {"pattern": {"type": "string"}}, "required": ["pattern"]},
        },
    }
]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from skillgym.chat_template import render
    from skillgym.training import TinyModelSpec, build_tiny_model, train_tokenizer
    from skillgym.training.tokenizer import save_tokenizer

    texts = [
        render(
            [
                {"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": f"where is f{i} defined?"},
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {"type": "function", "function": {"name": "grep", "arguments": {"pattern": f"def f{i}"}}}
                    ],
                },
                {"role": "tool", "content": f"/workspace/repo/m{i}.py:3:def f{i}():"},
                {"role": "assistant", "content": f"m{i}.py"},
            ],
            tools=TOOLS,
        )
        for i in range(16)
    ]
    tokenizer = train_tokenizer(texts, vocab_size=400, boilerplate_min_fraction=None)
    model = build_tiny_model(
        TinyModelSpec(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, intermediate_size=128
        ),
        tokenizer,
        seed=3,
    )
    _overfit(model, tokenizer, texts)
    out = tmp_path_factory.mktemp("tiny")
    model.save_pretrained(out)
    save_tokenizer(tokenizer, out)
    return out


def _overfit(model, tokenizer, texts, steps: int = 60) -> None:
    """A few hundred plain LM steps, so greedy decoding produces real tool-call text (a
    random model emits nothing, which would make the comparison below vacuous)."""
    import torch

    batch = tokenizer(texts, return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


CONVERSATION = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "where is f7 defined?"}]
INFO = {"tools": TOOLS}


def test_served_model_answers_like_the_in_process_model(tiny_model_dir, tmp_path):
    local = HFPolicy(str(tiny_model_dir), max_new_tokens=24)
    expected = local.act(CONVERSATION, INFO)
    with start_server(tiny_model_dir, backend="transformers", log_dir=tmp_path, timeout=240) as server:
        assert server.policy_spec.startswith("openai:") and server.base_url.startswith("http://127.0.0.1:")
        remote = OpenAIPolicy(
            server.model_name, base_url=server.base_url, sampling={"temperature": 0.0, "max_tokens": 24}
        )
        got = remote.act(CONVERSATION, INFO)
    # Same greedy continuation: compare what the env would read from each (text and calls).
    a, b = parse_turn(expected), parse_turn(got)
    assert a.calls and a.calls[0].name == "grep", "the model must produce a tool call, or the comparison is vacuous"
    assert a.content == b.content
    assert [(c.name, c.arguments, c.error is None) for c in a.calls] == [
        (c.name, c.arguments, c.error is None) for c in b.calls
    ]
    assert got["usage"]["completion_tokens"] > 0


def test_server_errors_are_precise(tmp_path):
    (tmp_path / "adapter_config.json").write_text('{"base_model_name_or_path": "Qwen/Qwen3-4B"}')
    with pytest.raises(ServerError, match="merge the LoRA adapter"):
        server_command(tmp_path, "transformers", "127.0.0.1", 1)
    vllm_cmd = server_command(tmp_path, "vllm", "127.0.0.1", 8001)
    assert vllm_cmd[:3] == ["vllm", "serve", "Qwen/Qwen3-4B"] and "--enable-lora" in vllm_cmd and "hermes" in vllm_cmd
    with pytest.raises(ServerError, match="did not become healthy|exited"):
        start_server(tmp_path / "missing-model", backend="transformers", log_dir=tmp_path, timeout=60)
