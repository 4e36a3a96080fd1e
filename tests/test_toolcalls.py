"""Conformance table for tool-call parsing: every input shape a policy can produce."""

from __future__ import annotations

import json

import pytest

from skillgym.toolcalls import (
    TOOL_CALL_CLOSE,
    parse_turn,
    render_tool_call_text,
    split_rendered_calls,
    validate_arguments,
)
from skillgym.tools import BUILTIN_TOOLS

GREP = {"name": "grep", "arguments": {"pattern": "def foo"}}


def tc(payload) -> str:
    return f"<tool_call>{payload if isinstance(payload, str) else json.dumps(payload)}</tool_call>"


# (case id, action, expected [(name, arguments) or ("ERROR", substring)], expected visible content)
TABLE = [
    ("plain text, no call", "The answer is 42.", [], "The answer is 42."),
    ("one call", tc(GREP), [("grep", {"pattern": "def foo"})], ""),
    (
        "call with newlines",
        "<tool_call>\n" + json.dumps(GREP) + "\n</tool_call>",
        [("grep", {"pattern": "def foo"})],
        "",
    ),
    (
        "text around call",
        "Let me search.\n" + tc(GREP) + "\nDone.",
        [("grep", {"pattern": "def foo"})],
        "Let me search.\n\nDone.",
    ),
    (
        "two calls",
        tc(GREP) + tc({"name": "list_dir", "arguments": {}}),
        [("grep", {"pattern": "def foo"}), ("list_dir", {})],
        "",
    ),
    (
        "three calls with text between",
        tc(GREP) + " and " + tc(GREP) + " then " + tc(GREP),
        [("grep", {"pattern": "def foo"})] * 3,
        "and  then",
    ),
    (
        "arguments as JSON string",
        tc({"name": "grep", "arguments": json.dumps({"pattern": "x"})}),
        [("grep", {"pattern": "x"})],
        "",
    ),
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
    (
        "arguments not an object",
        tc({"name": "grep", "arguments": [1]}),
        [("ERROR", "must be a JSON object, got an array")],
        "",
    ),
    (
        "arguments string not JSON",
        tc({"name": "grep", "arguments": "pattern=x"}),
        [("ERROR", "are not valid JSON")],
        "",
    ),
    (
        "extra top-level key",
        tc({"name": "grep", "arguments": {}, "pattern": "x"}),
        [("ERROR", "unexpected top-level keys")],
        "",
    ),
    ("stray closing tag", "oops </tool_call>", [("ERROR", "without a matching")], "oops"),
    ("one good one bad", tc(GREP) + tc("{bad"), [("grep", {"pattern": "def foo"}), ("ERROR", "not valid JSON")], ""),
]

DICT_TABLE = [
    (
        "openai structured call, string args",
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "grep", "arguments": '{"pattern": "x"}'}}
            ],
        },
        [("grep", {"pattern": "x"})],
    ),
    (
        "openai structured call, object args",
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "grep", "arguments": {"pattern": "x"}}}
            ],
        },
        [("grep", {"pattern": "x"})],
    ),
    (
        "openai parallel calls",
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "grep", "arguments": '{"pattern": "x"}'}},
                {"id": "b", "type": "function", "function": {"name": "list_dir", "arguments": ""}},
            ],
        },
        [("grep", {"pattern": "x"}), ("list_dir", {})],
    ),
    (
        "openai malformed arguments",
        {
            "role": "assistant",
            "tool_calls": [{"id": "a", "type": "function", "function": {"name": "grep", "arguments": '{"pattern": '}}],
        },
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
    msg = {
        "role": "assistant",
        "tool_calls": [{"id": "abc", "type": "function", "function": {"name": "grep", "arguments": "{}"}}],
    }
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


# -- hostile and malformed input: bounded work, precise errors, never an exception ---------------
def _nested(depth: int) -> list:
    root: list = []
    node = root
    for _ in range(depth):
        node.append([])
        node = node[0]
    return root


HOSTILE_TEXT = [
    ("call nested 100,000 deep", "<tool_call>" + "[" * 100_000 + "</tool_call>", "nested more than"),
    (
        "arguments nested 100,000 deep",
        '<tool_call>{"name": "grep", "arguments": ' + "[" * 100_000 + "}</tool_call>",
        "nested more than",
    ),
    (
        "5,000-digit integer",
        '<tool_call>{"name": "read_file", "arguments": {"path": "a", "limit": ' + "9" * 5000 + "}}</tool_call>",
        "more than 4300 digits",
    ),
    (
        "duplicate key",
        '<tool_call>{"name": "grep", "arguments": {"pattern": "a", "pattern": "b"}}</tool_call>',
        "'pattern' appears twice",
    ),
    (
        "duplicate key in an arguments string",
        tc({"name": "grep", "arguments": '{"pattern": "a", "pattern": "b"}'}),
        "'pattern' appears twice",
    ),
    (
        "10 MB call",
        tc({"name": "write_file", "arguments": {"path": "a", "content": "x" * 10_000_000}}),
        "the limit is 1,000,000",
    ),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case,action,message", HOSTILE_TEXT, ids=[row[0] for row in HOSTILE_TEXT])
def test_hostile_text_is_a_precise_error(case, action, message):
    parsed = parse_turn(action)
    assert len(parsed.calls) == 1 and parsed.calls[0].arguments is None
    assert message in parsed.calls[0].error


def test_too_many_calls_in_one_turn_is_a_turn_error():
    parsed = parse_turn(tc(GREP) * 1_000_000)
    assert parsed.errors and "at most 32" in parsed.errors[0]
    assert len(parsed.calls) <= 32  # a million calls are counted, not parsed


def test_lone_surrogates_are_replaced_and_reported():
    parsed = parse_turn('<tool_call>{"name": "grep", "arguments": {"pattern": "a\\ud800b"}}</tool_call>')
    assert parsed.calls[0].arguments == {"pattern": "a\ufffdb"}
    assert parsed.repairs and "1 lone UTF-16 surrogate" in parsed.repairs[0]
    # A surrogate pair written as two escapes is one real character, not a repair.
    parsed = parse_turn('<tool_call>{"name": "grep", "arguments": {"pattern": "\\ud83d\\ude00"}}</tool_call>')
    assert parsed.calls[0].arguments == {"pattern": "\U0001f600"} and not parsed.repairs
    # Raw surrogates in a message dict (text, arguments object, arguments string) too.
    msg = {"content": "\udc00", "tool_calls": [{"function": {"name": "grep", "arguments": {"pattern": "\ud800"}}}]}
    parsed = parse_turn(msg)
    assert parsed.content == "\ufffd" and parsed.calls[0].arguments == {"pattern": "\ufffd"}
    assert "2 lone" in parsed.repairs[0]
    parsed.model_dump_json()  # storable


MALFORMED_MESSAGES = [
    (
        "content as a dict",
        {"content": {"text": "42"}},
        "content must be a string or a list of text parts, got an object",
    ),
    ("content as a list of strings", {"content": ["4", "2"]}, "content[0] must be a text part"),
    ("content part without text", {"content": [{"type": "text", "text": 5}]}, 'without a string "text"'),
    ("image part", {"content": [{"type": "image_url", "image_url": {}}]}, "only text parts can be read"),
    ("content as a number", {"content": 42}, "got a number"),
    (
        "reasoning_content as a list",
        {"content": "hi", "reasoning_content": ["x"]},
        "reasoning_content must be a string, got an array",
    ),
    ("reasoning as a dict", {"content": "hi", "reasoning": {"a": 1}}, "reasoning must be a string, got an object"),
    (
        "forty structured calls",
        {"tool_calls": [{"function": {"name": "list_dir"}}] * 40},
        "the turn makes 40 tool calls",
    ),
    ("a user message", {"role": "user", "content": "42"}, 'role must be "assistant"'),
    ("role of the wrong type", {"role": ["assistant"], "content": "42"}, "got an array"),
]


@pytest.mark.parametrize("case,message,error", MALFORMED_MESSAGES, ids=[row[0] for row in MALFORMED_MESSAGES])
def test_malformed_message_fields_are_turn_errors(case, message, error):
    parsed = parse_turn(message)
    assert any(error in e for e in parsed.errors), parsed.errors


def test_structured_arguments_that_json_cannot_carry_are_errors():
    cyclic: dict = {}
    cyclic["self"] = cyclic
    cases = [
        ({"pattern": _nested(100_000)}, "nested more than"),
        (cyclic, "nested more than"),
        ({"pattern": 10**5000}, "more than 4300 digits"),
        ({"pattern": b"bytes"}, "cannot be written as JSON"),
        ({(1, 2): "x"}, "cannot be written as JSON"),
    ]
    for arguments, error in cases:
        msg = {"tool_calls": [{"id": _nested(100_000), "function": {"name": "grep", "arguments": arguments}}]}
        parsed = parse_turn(msg)
        assert parsed.calls[0].arguments is None and error in parsed.calls[0].error, (error, parsed.calls[0].error)
        # The record of the turn holds only plain JSON: the call's id was not a string, so a fresh one.
        assert parsed.source_tool_calls[0]["id"] == "call_0"
        assert isinstance(parsed.source_tool_calls[0]["function"]["arguments"], str)


def test_source_keeps_what_the_model_sent_for_the_record():
    msg = {"content": "see", "tool_calls": [{"id": "c1", "function": {"name": "grep", "arguments": '{"pattern": '}}]}
    parsed = parse_turn(msg)
    assert parsed.source == "see"
    assert parsed.source_tool_calls == [
        {"id": "c1", "type": "function", "function": {"name": "grep", "arguments": '{"pattern": '}}
    ]


STRICT_ARGS = [
    ("boolean for an int", "read_file", {"path": "a", "limit": True}, "not a boolean"),
    ("boolean for a float", "bash", {"command": "ls", "timeout": True}, "not a boolean"),
    ("number for a boolean", "grep", {"pattern": "x", "ignore_case": 1}, "argument 'ignore_case'"),
    (
        "string for a boolean",
        "edit_file",
        {"path": "a", "old_string": "a", "new_string": "b", "replace_all": "true"},
        "argument 'replace_all'",
    ),
    ("NUL in a command", "bash", {"command": "echo a\x00b"}, "NUL character"),
]


@pytest.mark.parametrize("case,tool,args,message", STRICT_ARGS, ids=[row[0] for row in STRICT_ARGS])
def test_arguments_are_strictly_typed(case, tool, args, message):
    parsed, error = validate_arguments(tool, args, BUILTIN_TOOLS[tool].Args)
    assert parsed is None and message in error


def test_numeric_strings_are_still_numbers():
    parsed, error = validate_arguments("read_file", {"path": "a", "limit": "50"}, BUILTIN_TOOLS["read_file"].Args)
    assert error is None and parsed.limit == 50


def test_validation_messages_stay_short_for_huge_values():
    _, error = validate_arguments("grep", {"pattern": ["x" * 1_000_000]}, BUILTIN_TOOLS["grep"].Args)
    assert len(error) < 500


def test_an_argument_holding_the_closing_tag_renders_and_parses_back_whole():
    """An answer that quotes a tool call (a subagent's reply passed on by an orchestrator) must
    not end the block early: the rendered JSON escapes the tag, the parsed value is unchanged."""
    answer = 'it wrote <tool_call>\n{"name": "x"}\n</tool_call> and stopped'
    text = render_tool_call_text("submit", {"answer": answer})
    assert text.count(TOOL_CALL_CLOSE) == 1 and text.endswith(TOOL_CALL_CLOSE)
    (call,) = parse_turn(text).calls
    assert call.error is None and call.arguments == {"answer": answer}
    assert split_rendered_calls(text)[1] == [("submit", json.dumps({"answer": answer}).replace("</", "<\\/"))]


LOOSE_READINGS = [
    # (what the model wrote as the call's JSON, the arguments it is read as)
    ('{"name": "submit", "arguments": {"answer": "idtracking: "resolve""}}', {"answer": 'idtracking: "resolve"'}),
    # one quote where the text's closing quote and the string's met: the quotes stay paired
    ('{"name": "submit", "arguments": {"answer": "idtracking: "resolve"}}', {"answer": 'idtracking: "resolve"'}),
    ('{"name": "submit", "arguments": {"answer": "a\n  b "c""}}', {"answer": 'a\n  b "c"'}),
    # escapes the model did write keep their meaning
    (
        '{"name": "bash", "arguments": {"command": "grep -E "\\\\bx\\\\(" \\"y\\""}}',
        {"command": 'grep -E "\\bx\\(" "y"'},
    ),
    ('{"name": "submit", "arguments": {"answer": "' + 'q"' * 100_000 + '"}}', {"answer": 'q"' * 100_000}),
]


@pytest.mark.parametrize("body, arguments", LOOSE_READINGS, ids=range(len(LOOSE_READINGS)))
def test_loose_string_calls_read_one_string_argument_with_bare_quotes(body, arguments):
    strict = parse_turn(tc(body))
    assert strict.calls[0].error and "not valid JSON" in strict.calls[0].error  # the default refuses it
    parsed = parse_turn(tc(body), loose_string_calls=True)
    (call,) = parsed.calls
    assert call.error is None and call.arguments == arguments
    assert len(parsed.repairs) == 1 and "as one string" in parsed.repairs[0]
    # The same arguments sent as an OpenAI message's arguments string read the same way.
    args_text = body[body.index('"arguments": ') + len('"arguments": ') : -1]
    message = {"role": "assistant", "tool_calls": [{"function": {"name": call.name, "arguments": args_text}}]}
    assert parse_turn(message, loose_string_calls=True).calls[0].arguments == arguments


@pytest.mark.parametrize(
    "body",
    [
        '{"name": "read_file", "arguments": {"path": "a.py", "offset": 3"}}',  # a second argument
        '{"name": "read_file", "arguments": {"path": "a "b", "offset": "3"}}',
        '{"name": "submit", "arguments": {"answer": "bad \\q "x""}}',  # an invalid escape
        '{"name": "submit", "arguments": {"answer": 7"}}',  # not a string
        '{"name": "submit", "arguments": {"answer": "x "y""}',  # a brace missing
    ],
)
def test_loose_string_calls_guess_at_nothing_else(body):
    parsed = parse_turn(tc(body), loose_string_calls=True)
    assert parsed.calls[0].error and "not valid JSON" in parsed.calls[0].error and not parsed.repairs
