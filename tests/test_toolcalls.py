"""Conformance table for tool-call parsing: every input shape a policy can produce."""

from __future__ import annotations

import json

import pytest

from skillgym.toolcalls import parse_turn, render_tool_call_text, validate_arguments
from skillgym.tools import BUILTIN_TOOLS

GREP = {"name": "grep", "arguments": {"pattern": "def foo"}}


def tc(payload) -> str:
    return f"<tool_call>{payload if isinstance(payload, str) else json.dumps(payload)}</tool_call>"


# (case id, action, expected [(name, arguments) or ("ERROR", substring)], expected visible content)
TABLE = [
    ("plain text, no call", "The answer is 42.", [], "The answer is 42."),
    ("one call", tc(GREP), [("grep", {"pattern": "def foo"})], ""),
    ("call with newlines", "<tool_call>\n" + json.dumps(GREP) + "\n</tool_call>", [("grep", {"pattern": "def foo"})], ""),
    ("text around call", "Let me search.\n" + tc(GREP) + "\nDone.", [("grep", {"pattern": "def foo"})], "Let me search.\n\nDone."),
    ("two calls", tc(GREP) + tc({"name": "list_dir", "arguments": {}}), [("grep", {"pattern": "def foo"}), ("list_dir", {})], ""),
    ("three calls with text between", tc(GREP) + " and " + tc(GREP) + " then " + tc(GREP), [("grep", {"pattern": "def foo"})] * 3, "and  then"),
    ("arguments as JSON string", tc({"name": "grep", "arguments": json.dumps({"pattern": "x"})}), [("grep", {"pattern": "x"})], ""),
    ("parameters alias", tc({"name": "grep", "parameters": {"pattern": "x"}}), [("grep", {"pattern": "x"})], ""),
    ("no arguments key", tc({"name": "list_dir"}), [("list_dir", {})], ""),
    ("think block stripped", "<think>I should grep.</think>\n" + tc(GREP), [("grep", {"pattern": "def foo"})], ""),
    ("call inside think is ignored", "<think>maybe " + tc(GREP) + "</think>final", [], "final"),
    ("lone closing think", "reasoning here</think>answer", [], "answer"),
    ("unclosed final call", "<tool_call>" + json.dumps(GREP), [("grep", {"pattern": "def foo"})], ""),
    ("malformed JSON", tc('{"name": "grep", "arguments": {"pattern": }'), [("ERROR", "not valid JSON")], ""),
    ("truncated JSON, unclosed", '<tool_call>{"name": "grep", "argu', [("ERROR", "was not closed")], ""),
    ("empty call", tc(""), [("ERROR", "empty tool call")], ""),
    ("JSON array", tc("[1, 2]"), [("ERROR", "must be a JSON object, got an array")], ""),
    ("missing name", tc({"arguments": {}}), [("ERROR", 'no "name"')], ""),
    ("arguments not an object", tc({"name": "grep", "arguments": [1]}), [("ERROR", "must be a JSON object, got an array")], ""),
    ("arguments string not JSON", tc({"name": "grep", "arguments": "pattern=x"}), [("ERROR", "are not valid JSON")], ""),
    ("extra top-level key", tc({"name": "grep", "arguments": {}, "pattern": "x"}), [("ERROR", "unexpected top-level keys")], ""),
    ("stray closing tag", "oops </tool_call>", [("ERROR", "without a matching")], "oops"),
    ("one good one bad", tc(GREP) + tc("{bad"), [("grep", {"pattern": "def foo"}), ("ERROR", "not valid JSON")], ""),
]

DICT_TABLE = [
    (
        "openai structured call, string args",
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "grep", "arguments": '{"pattern": "x"}'}}]},
        [("grep", {"pattern": "x"})],
    ),
    (
        "openai structured call, object args",
        {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "grep", "arguments": {"pattern": "x"}}}]},
        [("grep", {"pattern": "x"})],
    ),
    (
        "openai parallel calls",
        {"role": "assistant", "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "grep", "arguments": '{"pattern": "x"}'}},
            {"id": "b", "type": "function", "function": {"name": "list_dir", "arguments": ""}},
        ]},
        [("grep", {"pattern": "x"}), ("list_dir", {})],
    ),
    (
        "openai malformed arguments",
        {"role": "assistant", "tool_calls": [{"id": "a", "type": "function", "function": {"name": "grep", "arguments": '{"pattern": '}}]},
        [("ERROR", "are not valid JSON")],
    ),
    (
        "openai message whose content holds markup",
        {"role": "assistant", "content": tc(GREP)},
        [("grep", {"pattern": "def foo"})],
    ),
    ("no calls", {"role": "assistant", "content": "final answer"}, []),
    ("tool_calls not a list", {"role": "assistant", "tool_calls": "grep"}, [("ERROR", "must be an object")]),
]


def _check(parsed, expected):
    assert len(parsed.calls) == len(expected), parsed
    for call, (name, detail) in zip(parsed.calls, expected):
        if name == "ERROR":
            assert call.error and detail in call.error, call
        else:
            assert call.error is None, call.error
            assert call.name == name and call.arguments == detail


@pytest.mark.parametrize("case,action,expected,content", TABLE, ids=[row[0] for row in TABLE])
def test_text_conformance(case, action, expected, content):
    parsed = parse_turn(action)
    _check(parsed, expected)
    assert parsed.content == content


@pytest.mark.parametrize("case,action,expected", DICT_TABLE, ids=[row[0] for row in DICT_TABLE])
def test_message_conformance(case, action, expected):
    _check(parse_turn(action), expected)


def test_structured_call_ids_are_kept():
    msg = {"role": "assistant", "tool_calls": [{"id": "abc", "type": "function", "function": {"name": "grep", "arguments": "{}"}}]}
    assert parse_turn(msg).calls[0].id == "abc"


def test_reasoning_is_kept_separately():
    parsed = parse_turn("<think>plan: grep</think>" + tc(GREP))
    assert parsed.reasoning == "plan: grep"


@pytest.mark.parametrize("bad", [None, 3, ["a"], b"bytes"])
def test_non_text_actions_are_errors_not_exceptions(bad):
    parsed = parse_turn(bad)
    assert parsed.calls and parsed.calls[0].error


ARG_TABLE = [
    ("missing required", "grep", {}, "missing required argument 'pattern'"),
    ("extra argument", "grep", {"pattern": "x", "flags": "i"}, "unexpected argument 'flags'"),
    ("mistyped int", "read_file", {"path": "a", "offset": "ten"}, "argument 'offset'"),
    ("mistyped string", "grep", {"pattern": ["x"]}, "argument 'pattern'"),
    ("out of range", "read_file", {"path": "a", "limit": 0}, "argument 'limit'"),
    ("mistyped bool", "grep", {"pattern": "x", "ignore_case": "maybe"}, "argument 'ignore_case'"),
]


@pytest.mark.parametrize("case,tool,args,message", ARG_TABLE, ids=[row[0] for row in ARG_TABLE])
def test_argument_errors_are_precise(case, tool, args, message):
    parsed, error = validate_arguments(tool, args, BUILTIN_TOOLS[tool].Args)
    assert parsed is None
    assert message in error
    assert "Expected arguments:" in error


def test_valid_arguments_parse():
    parsed, error = validate_arguments("read_file", {"path": "a.py", "offset": 3}, BUILTIN_TOOLS["read_file"].Args)
    assert error is None and parsed.offset == 3 and parsed.limit == 200


def test_render_round_trip():
    text = render_tool_call_text("grep", {"pattern": "déf"})
    assert parse_turn(text).calls[0].arguments == {"pattern": "déf"}
