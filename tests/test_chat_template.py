"""The Qwen3 chat format: TRL's templates, tokenizer parity, and render -> parse round trips.

Parity is ``canonical(parse_rendered(render(m))) == canonical(m)``; ``canonical`` (see
skillgym/chat_template.py) normalizes exactly what the format does not write down: tool-call
ids (positional), the ``name`` of tool messages, argument JSON formatting, newlines around
reasoning and at the start of assistant text, and None-valued keys.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import pytest

from skillgym.chat_template import (
    MARKUP_TOKENS,
    SPECIAL_TOKENS,
    ChatTemplateError,
    canonical,
    parse_rendered,
    parse_rendered_tools,
    qwen3_template,
    render,
)
from skillgym.toolcalls import render_tool_call_text as call
from tests.test_env import make_env

CORPUS = [
    "def read_file(path): return open(path).read()",
    "The number is 42. Read the file, then answer with the number only.",
    '{"name": "read_file", "arguments": {"path": "notes/n1.txt"}}',
    "system user assistant tool function arguments error exit code",
] * 20


@lru_cache(maxsize=1)
def tiny_tokenizer():
    """A byte-level BPE tokenizer trained here, holding every Qwen3 special token as one token.

    ``<|im_start|>``/``<|im_end|>`` are special (a decoder may skip them); the markup tokens
    are added as ordinary tokens, as Qwen3's tokenizer does, so skipping special tokens
    never deletes a tool call.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in MARKUP_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=qwen3_template(training=False),
    )


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a file (UTF-8, é).",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
        },
    }
]


def handmade_conversation() -> list[dict]:
    """Every shape at once: reasoning, text before calls, parallel calls with object and string
    arguments, a tool error, an unparsable turn with its orphan note, and a final answer."""
    return [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What number is in notes/n1.txt?"},
        {
            "role": "assistant",
            "content": "Reading both.",
            "reasoning_content": "\nTwo files might matter.\n",
            "tool_calls": [
                {
                    "id": "a",
                    "type": "function",
                    "function": {"name": "read_file", "arguments": '{"path": "notes/n1.txt"}'},
                },
                {"id": "b", "type": "function", "function": {"name": "read_file", "arguments": {"path": "nöt/ß.txt"}}},
            ],
        },
        {"role": "tool", "tool_call_id": "a", "name": "read_file", "content": "the number is 7\n"},
        {"role": "tool", "tool_call_id": "b", "name": "read_file", "content": "Error: nöt/ß.txt does not exist"},
        {"role": "assistant", "content": '<tool_call>{"name": "grep", </tool_call>'},
        {"role": "tool", "tool_call_id": "call_3_error", "content": "Error: your tool call could not be parsed"},
        {"role": "assistant", "content": "<think>\nsure now\n</think>\n\n7"},
    ]


def env_trajectory() -> tuple[list[dict], list[dict]]:
    """A real episode of the tiny env: text calls, parallel dict calls, tool errors, an
    unparsable turn, reasoning, a submitted answer."""
    env = make_env("local", max_turns=10)
    try:
        env.reset(options={"task_id": "t3"})
        env.step("<think>Start by listing.</think>I'll look around.\n" + call("list_dir", {}))
        env.step(
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "x1",
                        "type": "function",
                        "function": {"name": "read_file", "arguments": '{"path": "notes/n3.txt"}'},
                    },
                    {"id": "x2", "type": "function", "function": {"name": "nope", "arguments": "{}"}},
                    {"id": "x3", "type": "function", "function": {"name": "read_file", "arguments": "{}"}},
                ],
            }
        )
        env.step('<tool_call>{"name": "grep", </tool_call>')
        env.step(call("grep", {"pattern": "number"}) + "\n" + call("bash", {"command": "echo 'é ok'"}))
        *_, info = env.step(call("submit", {"answer": "21"}))
        traj = env.trajectory
        assert traj.reward == 1.0 and traj.tool_errors
        return traj.messages, traj.tools
    finally:
        env.close()


def test_templates_come_from_installed_trl():
    import trl

    folder = Path(trl.__file__).parent / "chat_templates"
    assert qwen3_template(False) == (folder / "qwen3.jinja").read_text(encoding="utf-8")
    assert qwen3_template(True) == (folder / "qwen3_training.jinja").read_text(encoding="utf-8")
    assert "{% generation %}" in qwen3_template(True).replace("{%- generation %}", "{% generation %}")
    assert SPECIAL_TOKENS == [
        "<|im_start|>",
        "<|im_end|>",
        "<tool_call>",
        "</tool_call>",
        "<tool_response>",
        "</tool_response>",
        "<think>",
        "</think>",
    ]


@pytest.mark.parametrize("training", [False, True])
def test_render_matches_tokenizer_apply_chat_template(training):
    tokenizer = tiny_tokenizer()
    messages = handmade_conversation()
    template = qwen3_template(training)
    for prompt in (False, True):
        expected = tokenizer.apply_chat_template(
            messages, tools=TOOLS, chat_template=template, tokenize=False, add_generation_prompt=prompt
        )
        assert render(messages, TOOLS, add_generation_prompt=prompt, training=training) == expected


def test_special_tokens_are_single_tokens_that_decoding_keeps():
    tokenizer = tiny_tokenizer()
    for token in SPECIAL_TOKENS:
        ids = tokenizer.encode(token, add_special_tokens=False)
        assert len(ids) == 1, (token, ids)
    text = render(handmade_conversation(), TOOLS)
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids, skip_special_tokens=False) == text
    stripped = tokenizer.decode(ids, skip_special_tokens=True)
    assert all(t in stripped for t in MARKUP_TOKENS) and "<|im_start|>" not in stripped


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("source", ["handmade", "env"])
def test_round_trip_parity(training, source):
    messages, tools = (handmade_conversation(), TOOLS) if source == "handmade" else env_trajectory()
    text = render(messages, tools, training=training)
    parsed = parse_rendered(text)
    assert canonical(parsed) == canonical(messages)
    assert parse_rendered_tools(text) == tools
    # Rendering what was parsed gives the same text back, byte for byte.
    assert render(parsed, tools, training=training) == text


def test_parsed_messages_are_openai_shaped():
    messages, tools = env_trajectory()
    parsed = parse_rendered(render(messages, tools, training=True))
    roles = [m["role"] for m in parsed]
    assert roles == [m["role"] for m in messages]
    parallel = next(m for m in parsed if len(m.get("tool_calls", [])) == 3)
    follow = parsed[parsed.index(parallel) + 1 : parsed.index(parallel) + 4]
    assert [t["tool_call_id"] for t in follow] == [c["id"] for c in parallel["tool_calls"]]
    assert [t["name"] for t in follow] == ["read_file", "nope", "read_file"]
    assert "unknown tool 'nope'" in follow[1]["content"]
    for m in parsed:
        for c in m.get("tool_calls", []):
            assert isinstance(json.loads(c["function"]["arguments"]), dict)
    assert parsed[2]["reasoning_content"] == "Start by listing."
    unparsable = next(m for m in parsed if m["role"] == "assistant" and 'grep", </tool_call>' in m["content"])
    assert "tool_calls" not in unparsable


def test_no_system_message_no_tools_and_generation_prompt():
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    text = render(messages, add_generation_prompt=True)
    assert canonical(parse_rendered(text)) == canonical(messages)
    assert parse_rendered_tools(text) == []
    with_tools = render(messages, TOOLS)
    assert parse_rendered(with_tools)[0]["role"] == "user" and parse_rendered_tools(with_tools) == TOOLS


def test_documented_ambiguity_invalid_json_arguments_read_back_as_text():
    broken = [
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "q", "type": "function", "function": {"name": "grep", "arguments": '{"pattern": "x'}}
            ],
        },
        {"role": "tool", "tool_call_id": "z", "content": "Error: not valid JSON"},
    ]
    text = render(broken, training=True)
    parsed = parse_rendered(text)
    assert "tool_calls" not in parsed[1] and '"arguments": {"pattern": "x' in parsed[1]["content"]
    assert render(parsed, training=True) == text


def test_not_a_conversation_raises_a_clear_error():
    with pytest.raises(ChatTemplateError, match="starts with"):
        parse_rendered("hello")
    with pytest.raises(ChatTemplateError, match="not closed"):
        parse_rendered("<|im_start|>user\nhi")


def test_the_codec_renders_calls_exactly_as_the_template_does():
    """toolcalls owns the <tool_call> markup: its rendering is byte for byte the template's, and
    what it renders (structured or raw-argument calls) parses back through parse_turn."""
    from skillgym.toolcalls import parse_turn, render_openai_call_text, split_rendered_calls

    args = {"pattern": 'déf "x"', "context": 2, "glob": None}
    raw_call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "grep", "arguments": json.dumps(args, ensure_ascii=False)},
    }
    for arguments in (args, raw_call["function"]["arguments"]):  # an object, or its JSON text
        structured = {"type": "function", "function": {"name": "grep", "arguments": arguments}}
        text = render(
            [{"role": "user", "content": "q"}, {"role": "assistant", "content": "looking", "tool_calls": [structured]}]
        )
        assistant = text.split("<|im_start|>assistant\n")[1].split("<|im_end|>")[0]
        assert assistant.endswith("looking\n" + call("grep", args)) and assistant.endswith(
            render_openai_call_text(structured)
        )
    content, calls = split_rendered_calls(assistant.split("</think>\n\n")[-1])
    assert content == "looking" and calls == [("grep", json.dumps(args, ensure_ascii=False))]
    parsed = parse_turn(render_openai_call_text(raw_call))
    assert [(c.name, c.arguments) for c in parsed.calls] == [("grep", args)]
    # Arguments a model wrote as broken JSON are kept verbatim, so the model sees what it wrote.
    broken = render_openai_call_text({"function": {"name": "grep", "arguments": '{"pattern": "oops'}})
    assert '{"pattern": "oops' in broken and split_rendered_calls(broken) == (broken, [])
