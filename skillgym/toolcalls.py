"""Turning one assistant turn into tool calls, with errors written for the model.

Two input shapes are accepted, because policies produce both:

* raw model text in the Qwen3/Hermes format — any number of
  ``<tool_call>{"name": ..., "arguments": ...}</tool_call>`` blocks, with free text and
  ``<think>...</think>`` reasoning around them;
* an OpenAI assistant message dict whose ``tool_calls`` carry ``function.arguments`` as a
  JSON string (or, leniently, an object). Its ``content`` is also scanned for markup, for
  servers that did not parse the calls themselves.

Parsing never raises on model output: every defect becomes a :class:`ParsedCall` with an
``error`` string, or a turn-level entry in :attr:`ParsedTurn.errors`, that tells the model
exactly what to fix. It is also bounded: linear in the size of the turn, with limits on a
call's size (:data:`MAX_CALL_CHARS`), its nesting (:data:`MAX_JSON_DEPTH`) and the calls in a
turn (:data:`MAX_CALLS_PER_TURN`). Lone UTF-16 surrogates (which no UTF-8 file can hold) are
replaced by U+FFFD and the turn's ``repairs`` say so.

With ``loose_string_calls=True`` one defect is read rather than refused: a call whose only
argument is a string holding unescaped double quotes or raw line breaks, such as
``{"name": "submit", "arguments": {"answer": "mod: "value""}}``. Small models write this when
the text they copy (a constant's value, a shell command) is itself quoted, and the call has
one reading: the string runs from its opening quote to the quote before the closing braces
(and takes that quote too when the quotes inside would otherwise be odd: quoted text comes in
pairs). The turn's ``repairs`` say what was read. A call with more than one argument is never
guessed at. It is off by default: a model trained against a lenient reader unlearns the JSON
that strict servers (vLLM's tool parsers, OpenAI) require.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from skillgym.types import Message

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
_THINK_RE = re.compile(r"<think>(.*?)(?:</think>|\Z)", re.DOTALL)
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE_RE = re.compile(r"\\u[dD][89a-fA-F]")
# The start of a call, and of an arguments object whose first value is a string (the shapes
# the one-string-argument reading accepts; see _read_one_string_call).
_CALL_HEAD_RE = re.compile(r'\{\s*"name"\s*:\s*"([^"\\]{1,200})"\s*,\s*"(?:arguments|parameters)"\s*:\s*')
_STRING_ARGUMENT_HEAD_RE = re.compile(r'\{\s*"([A-Za-z_][A-Za-z0-9_]{0,100})"\s*:\s*"')
# A quote, a comma and a quoted key: what a second argument looks like inside the first one.
_ANOTHER_KEY_RE = re.compile(r'"\s*,\s*"[A-Za-z_][A-Za-z0-9_]*"\s*:')
_ESCAPE_OR_QUOTE_RE = re.compile(r'(\\.)|"', re.DOTALL)
_CONTROL_RE = re.compile(r"[\x00-\x1f]")

MAX_CALL_CHARS = 1_000_000
"""Longest tool call (its JSON text, or its ``arguments`` text) that is parsed. A longer one is
refused with its size in the message: no tool needs more in one call, and parsing, storing and
training on megabytes of arguments costs memory and time."""
MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays and objects in one call (the call object itself is level 1). Tool
arguments are flat, so this refuses nothing real, and it keeps every later copy or rendering of
the call far from Python's recursion limit."""
MAX_CALLS_PER_TURN = 32
"""Most tool calls one turn may make; a turn with more runs none of them."""


class ParsedCall(BaseModel):
    """One attempted call. ``error`` is set when it cannot be executed as written."""

    id: str
    name: str | None = None
    arguments: dict[str, Any] | None = None
    raw: str = ""
    error: str | None = None


class ParsedTurn(BaseModel):
    """An assistant turn split into visible text, reasoning and call attempts."""

    content: str = Field(description="Text with reasoning and tool-call markup removed.")
    reasoning: str | None = None
    calls: list[ParsedCall] = Field(default_factory=list)
    errors: list[str] = Field(
        default_factory=list,
        description="Problems with the turn as a whole (a field of the wrong type, too many calls); "
        "when there are any, none of the turn's calls may run.",
    )
    source: str = Field(
        default="", description="The turn's text as written (a message dict: its content), for the record."
    )
    source_tool_calls: list[dict[str, Any]] = Field(
        default_factory=list,
        description="A message dict's ``tool_calls`` in OpenAI form, arguments as the JSON text the model "
        "sent, for the record (whatever their defects).",
    )
    repairs: list[str] = Field(
        default_factory=list, description="What was changed in the model's text so that it can be stored."
    )


class _Repairs:
    """What parsing had to change in the model's text: lone surrogates replaced, and calls read
    with the one-string-argument reading."""

    def __init__(self, loose_string_calls: bool = False) -> None:
        self.loose_string_calls = loose_string_calls
        self.surrogates = 0
        self.readings: list[str] = []

    def text(self, text: str) -> str:
        text, fixed = replace_lone_surrogates(text)
        self.surrogates += fixed
        return text

    def notes(self) -> list[str]:
        notes = list(self.readings)
        if self.surrogates:
            notes.insert(0, f"{self.surrogates} lone UTF-16 surrogate(s) (e.g. a \\ud800 escape) replaced by U+FFFD")
        return notes


def replace_lone_surrogates(text: str) -> tuple[str, int]:
    """``text`` with every lone UTF-16 surrogate replaced by U+FFFD, and how many were replaced.

    A JSON ``"\\ud800"`` escape, or a file name that is not UTF-8, gives a Python string that
    cannot be encoded as UTF-8, so no record holding it could be written. Surrogate pairs are
    joined into the character they stand for.

    Args:
        text: Any string.

    Returns:
        The repaired text (``text`` itself when there was nothing to repair) and the count.
    """
    if _SURROGATE_RE.search(text) is None:
        return text, 0
    fixed = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return fixed, fixed.count("\ufffd") - text.count("\ufffd")


def parse_turn(action: Any, call_id_prefix: str = "call", *, loose_string_calls: bool = False) -> ParsedTurn:
    """Parse one assistant turn (raw text or OpenAI message dict). Never raises.

    Work is linear in the size of the action and bounded: a call longer than
    :data:`MAX_CALL_CHARS`, nested deeper than :data:`MAX_JSON_DEPTH`, holding a duplicate key
    or an integer longer than Python's int-string limit, or a turn with more than
    :data:`MAX_CALLS_PER_TURN` calls is refused with a message that says so.

    Args:
        action: What the policy produced: text, an assistant message dict, or anything else
            (which is an error the model is told about).
        call_id_prefix: Prefix of the ids given to calls that carry none.
        loose_string_calls: Read a call whose only argument is a string with unescaped double
            quotes or raw control characters as that string (see the module's docstring)
            instead of refusing it as invalid JSON.

    Returns:
        The turn; defects are in ``errors`` (the whole turn) and each call's ``error``.
    """
    if isinstance(action, dict):
        return _parse_message(action, call_id_prefix, _Repairs(loose_string_calls))
    if not isinstance(action, str):
        return ParsedTurn(
            content="",
            calls=[
                ParsedCall(
                    id=f"{call_id_prefix}_0",
                    error=f"the action must be text or an assistant message dict, got {type(action).__name__}",
                )
            ],
        )
    repairs = _Repairs(loose_string_calls)
    text = repairs.text(action)
    turn = _parse_text(text, call_id_prefix, 0, repairs)
    turn.source, turn.repairs = text, repairs.notes()
    return turn


def _split_reasoning(text: str) -> tuple[str, str | None]:
    thoughts = [m.group(1).strip() for m in _THINK_RE.finditer(text)]
    visible = _THINK_RE.sub("", text)
    # A turn may open mid-thought (the template put "<think>" in the prompt): text before a
    # lone "</think>" is reasoning.
    if "</think>" in visible:
        before, _, visible = visible.rpartition("</think>")
        thoughts.insert(0, before.strip())
    reasoning = "\n\n".join(t for t in thoughts if t) or None
    return visible, reasoning


def _parse_text(text: str, prefix: str, start_index: int, repairs: _Repairs) -> ParsedTurn:
    visible, reasoning = _split_reasoning(text)
    calls: list[ParsedCall] = []
    errors: list[str] = []
    room = max(0, MAX_CALLS_PER_TURN - start_index)
    blocks, remainder = _call_blocks(visible, room + 1)
    if len(blocks) > room:
        errors.append(_too_many_calls())
        blocks = blocks[:room]
    for i, (body, closed) in enumerate(blocks, start=start_index):
        calls.append(_parse_call_json(body.strip(), f"{prefix}_{i}", closed, repairs))
    # A stray closing tag with no opening one is a malformed attempt too.
    if TOOL_CALL_CLOSE in remainder and not calls:
        calls.append(
            ParsedCall(
                id=f"{prefix}_{start_index}",
                raw=remainder.strip(),
                error=f"found {TOOL_CALL_CLOSE} without a matching {TOOL_CALL_OPEN}; "
                f'write {TOOL_CALL_OPEN}{{"name": "...", "arguments": {{...}}}}{TOOL_CALL_CLOSE}',
            )
        )
        remainder = remainder.replace(TOOL_CALL_CLOSE, "")
    return ParsedTurn(content=remainder.strip(), reasoning=reasoning, calls=calls, errors=errors)


def _call_blocks(text: str, limit: int) -> tuple[list[tuple[str, bool]], str]:
    """The first ``limit`` ``<tool_call>`` blocks (body, and whether it was closed) and the text
    around them (past the last block read, the rest of the text as it is).

    A block runs to the first closing tag, or to the end of the text when it has none. Plain
    ``str.find`` keeps this linear and fast on megabytes of text, where a lazy regex is not.
    """
    blocks: list[tuple[str, bool]] = []
    outside: list[str] = []
    pos = 0
    while len(blocks) < limit:
        start = text.find(TOOL_CALL_OPEN, pos)
        if start < 0:
            outside.append(text[pos:])
            break
        outside.append(text[pos:start])
        body_start = start + len(TOOL_CALL_OPEN)
        end = text.find(TOOL_CALL_CLOSE, body_start)
        if end < 0:
            blocks.append((text[body_start:], False))
            break
        blocks.append((text[body_start:end], True))
        pos = end + len(TOOL_CALL_CLOSE)
    else:
        outside.append(text[pos:])
    return blocks, "".join(outside)


def _too_many_calls(total: int | None = None) -> str:
    count = f"{total}" if total is not None else f"more than {MAX_CALLS_PER_TURN}"
    return (
        f"the turn makes {count} tool calls; at most {MAX_CALLS_PER_TURN} may be made in one turn, "
        "so none was run: make fewer calls per turn"
    )


def _parse_call_json(body: str, call_id: str, closed: bool, repairs: _Repairs) -> ParsedCall:
    fmt = f'write {TOOL_CALL_OPEN}{{"name": "TOOL", "arguments": {{...}}}}{TOOL_CALL_CLOSE}'
    if not body:
        return ParsedCall(id=call_id, raw=body, error=f"empty tool call; {fmt}")
    payload, problem = _loads(body, "tool call", "is", repairs)
    if problem is not None and "not valid JSON" in problem and repairs.loose_string_calls:
        payload = _read_one_string_call(body, repairs)
        problem = None if payload is not None else problem
    if problem is not None:
        hint = "" if closed or "not valid JSON" not in problem else f" (the call was not closed with {TOOL_CALL_CLOSE})"
        return ParsedCall(id=call_id, raw=body, error=f"{problem}{hint}; {fmt}")
    if not isinstance(payload, dict):
        return ParsedCall(
            id=call_id, raw=body, error=f"tool call must be a JSON object, got {_json_type(payload)}; {fmt}"
        )
    name = payload.get("name")
    if not isinstance(name, str) or not name:
        return ParsedCall(id=call_id, raw=body, error=f'tool call has no "name" string; {fmt}')
    unexpected = sorted(set(payload) - {"name", "arguments", "parameters", "id"})
    if unexpected:
        shown = ", ".join(_clip(repr(k), 40) for k in unexpected[:5]) + (", ..." if len(unexpected) > 5 else "")
        return ParsedCall(
            id=call_id,
            name=name,
            raw=body,
            error=f'tool call has unexpected top-level keys [{shown}]; put tool arguments inside "arguments"',
        )
    args = payload.get("arguments", payload.get("parameters", {}))
    call, _ = _finish(call_id, name, args, body, repairs)
    return call


def _finish(call_id: str, name: str, args: Any, raw: str, repairs: _Repairs) -> tuple[ParsedCall, str]:
    """Normalize ``arguments`` (an object, or a JSON string holding one) into a call.

    Returns the call and the arguments as JSON text, for the record ("" when they have none).
    """
    subject = f"arguments of {_clip(repr(name), 60)}"
    text = ""
    if args is None:
        args = {}
    if isinstance(args, str):
        text = repairs.text(args)
        if not text.strip():
            args = {}
        else:
            args, problem = _loads(text, subject, "are", repairs)
            if problem is not None and "not valid JSON" in problem and repairs.loose_string_calls:
                args = _read_one_string_argument(text, name, repairs)
                problem = None if args is not None else problem
            if problem is not None:
                return ParsedCall(id=call_id, name=name, raw=raw, error=problem), text
    elif isinstance(args, dict):
        # An object a Python policy built: it must be one JSON could carry (no bytes, no
        # integer past the int-string limit, not too deep), so send it through JSON once.
        if _depth(args) > MAX_JSON_DEPTH:
            return ParsedCall(id=call_id, name=name, raw=raw, error=_too_deep(subject, "are")), text
        try:
            text = repairs.text(json.dumps(args, ensure_ascii=False))
        except (TypeError, ValueError) as exc:
            if _is_digit_limit(exc):
                error = _too_many_digits(subject, "are")
            else:
                error = f"{subject} cannot be written as JSON ({_clip(str(exc), 120)}); send plain JSON values"
            return ParsedCall(id=call_id, name=name, raw=raw, error=error), text
        args, problem = _loads(text, subject, "are", repairs)
        if problem is not None:
            return ParsedCall(id=call_id, name=name, raw=raw, error=problem), text
    if not isinstance(args, dict):
        error = f"arguments of {_clip(repr(name), 60)} must be a JSON object, got {_json_type(args)}"
        return ParsedCall(id=call_id, name=name, raw=raw, error=error), text
    return ParsedCall(id=call_id, name=name, arguments=args, raw=raw), text


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for json.loads: a key given twice is an error, not "last one wins"."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


def _loads(text: str, subject: str, verb: str, repairs: _Repairs) -> tuple[Any, str | None]:
    """JSON text to a value, bounded in size and depth. Returns (value, None) or (None, problem),
    the problem a sentence about ``subject`` ("tool call" with verb "is", or "arguments of 'x'")."""
    if len(text) > MAX_CALL_CHARS:
        return None, (
            f"{subject} {verb} {len(text):,} characters long; the limit is {MAX_CALL_CHARS:,} characters "
            "per call: send less at once (e.g. write a large file in several parts)"
        )
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        return (
            None,
            f"{subject} {verb} not valid: the key {_clip(repr(exc.key), 60)} appears twice in one object; give each key once",
        )
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}" if subject == "tool call" else f"column {exc.colno}"
        return None, f"{subject} {verb} not valid JSON: {exc.msg} at {where}"
    except RecursionError:  # the C decoder stops near Python's recursion limit, cleanly
        return None, _too_deep(subject, verb)
    except ValueError as exc:  # an integer longer than Python's int-string limit
        if _is_digit_limit(exc):
            return None, _too_many_digits(subject, verb)
        return None, f"{subject} {verb} not valid JSON: {_clip(str(exc), 120)}"
    if _depth(value) > MAX_JSON_DEPTH:
        return None, _too_deep(subject, verb)
    if _SURROGATE_ESCAPE_RE.search(text):  # only an escape can bring a surrogate back in
        value = _repair_value(value, repairs)
    return value, None


def _read_one_string_call(body: str, repairs: _Repairs) -> dict[str, Any] | None:
    """A call ``{"name": N, "arguments": {"K": "..."}}`` that JSON refused, read as the call of
    ``N`` with the single string argument ``K`` (see :func:`_read_one_string_argument`), or
    None when it does not have that shape."""
    head = _CALL_HEAD_RE.match(body)
    if head is None:
        return None
    rest = body[head.end() :].rstrip()
    if not rest.endswith("}"):
        return None
    args = _read_one_string_argument(rest[:-1], head.group(1), repairs)
    return None if args is None else {"name": head.group(1), "arguments": args}


def _read_one_string_argument(text: str, name: str, repairs: _Repairs) -> dict[str, Any] | None:
    """An arguments object ``{"K": "..."}`` that JSON refused, read with its string running from
    the first quote after ``"K":`` to the last quote before the closing brace: the quotes
    between are part of the text, and so are raw control characters (line breaks). When the
    quotes between are odd, the last one is the text's too (quoted text comes in pairs; the
    model wrote one quote where the text's closing quote and the string's met). Escapes the
    model did write keep their meaning. None when the object has another shape, when the
    string looks like it holds a second ``"key":`` after a comma (a call with several
    arguments is never guessed at), or when an escape is invalid."""
    text = text.strip()
    head = _STRING_ARGUMENT_HEAD_RE.match(text)
    if head is None or not text.endswith("}"):
        return None
    rest = text[head.end() : -1].rstrip()
    if not rest.endswith('"'):
        return None
    raw = rest[:-1]
    if _ANOTHER_KEY_RE.search(raw):
        return None
    quotes = 0

    def escape(match: re.Match[str]) -> str:
        nonlocal quotes
        if match.group(1):
            return match.group(1)
        quotes += 1
        return '\\"'

    escaped = _ESCAPE_OR_QUOTE_RE.sub(escape, raw)
    shared_close = quotes % 2 == 1
    if shared_close:
        escaped += '\\"'
    try:
        value = json.loads(f'"{escaped}"', strict=False)
    except ValueError:
        return None
    key = head.group(1)
    found = []
    if quotes:
        found.append(f"{quotes} unescaped double quote(s)" + (" (the last closing it too)" if shared_close else ""))
    controls = len(_CONTROL_RE.findall(raw))
    if controls:
        found.append(f"{controls} raw control character(s)")
    if not found:  # JSON refused something other than the string: not this defect
        return None
    repairs.readings.append(
        f"read the {key!r} argument of {_clip(repr(name), 60)} as one string with its "
        f"{' and '.join(found)} as text (the call was not valid JSON)"
    )
    return {key: repairs.text(value)}


def _is_digit_limit(exc: Exception) -> bool:
    """Whether ``exc`` is Python's refusal to convert an integer of too many digits."""
    return isinstance(exc, ValueError) and "integer string conversion" in str(exc)


def _too_many_digits(subject: str, verb: str) -> str:
    return (
        f"{subject} {verb} not valid: a number has more than {sys.get_int_max_str_digits()} digits; "
        "write such a value as a string"
    )


def _too_deep(subject: str, verb: str = "is") -> str:
    return (
        f"{subject} {verb} nested more than {MAX_JSON_DEPTH} levels deep (arrays and objects); "
        "tool arguments are flat values"
    )


def _depth(value: Any) -> int:
    """Nesting depth of arrays/objects, without recursion; stops counting past the limit (so a
    cyclic or absurdly deep Python object costs no more than a legal one)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, (list, tuple)):
            children = node
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_JSON_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def _repair_value(value: Any, repairs: _Repairs) -> Any:
    """``value`` with lone surrogates replaced in every string (keys too); depth is bounded."""
    if isinstance(value, str):
        return repairs.text(value)
    if isinstance(value, dict):
        return {repairs.text(k): _repair_value(v, repairs) for k, v in value.items()}
    if isinstance(value, list):
        return [_repair_value(v, repairs) for v in value]
    return value


def _message_text(content: Any) -> tuple[str, str | None]:
    """The text of a message's ``content`` (a string or a list of text parts), or a problem."""
    if content is None:
        return "", None
    if isinstance(content, str):
        return content, None
    if not isinstance(content, list):
        return "", f"content must be a string or a list of text parts, got {_json_type(content)}"
    texts = []
    for i, part in enumerate(content):
        if isinstance(part, dict) and part.get("type", "text") == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
            continue
        kind = part.get("type") if isinstance(part, dict) else None
        if isinstance(kind, str) and kind != "text":
            problem = f"content[{i}] is a {_clip(repr(kind), 40)} part; only text parts can be read"
        else:
            problem = f'content[{i}] must be a text part {{"type": "text", "text": "..."}}, got {_json_type(part)}'
            if isinstance(part, dict):
                problem += ' without a string "text"'
        return "".join(texts), problem
    return "".join(texts), None


def _parse_message(message: dict, prefix: str, repairs: _Repairs) -> ParsedTurn:
    errors: list[str] = []
    role = message.get("role", "assistant")
    if role != "assistant":
        shown = _clip(repr(role), 40) if isinstance(role, str) else _json_type(role)
        errors.append(f'the message\'s role must be "assistant" (or left out), got {shown}')
    content, problem = _message_text(message.get("content"))
    if problem:
        errors.append(problem)
    content = repairs.text(content)
    reasoning: str | None = None
    for key in ("reasoning_content", "reasoning"):
        value = message.get(key)
        if value is None or value == "":
            continue
        if isinstance(value, str):
            reasoning = repairs.text(value)
        else:
            errors.append(f"{key} must be a string, got {_json_type(value)}")
        break
    structured = message.get("tool_calls") or []
    if not isinstance(structured, list):
        structured = [structured]
    if len(structured) > MAX_CALLS_PER_TURN:
        errors.append(_too_many_calls(len(structured)))
        structured = structured[:MAX_CALLS_PER_TURN]
    calls: list[ParsedCall] = []
    records: list[dict[str, Any]] = []
    for i, item in enumerate(structured):
        call_id = f"{prefix}_{i}"
        if not isinstance(item, dict):
            calls.append(ParsedCall(id=call_id, error=f"tool_calls[{i}] must be an object, got {_json_type(item)}"))
            records.append(_call_record(call_id, "", ""))
            continue
        given_id = item.get("id")
        if isinstance(given_id, str) and given_id.strip() and len(given_id) <= 256:
            call_id = repairs.text(given_id)
        fn = item.get("function") if isinstance(item.get("function"), dict) else item
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            calls.append(ParsedCall(id=call_id, error=f"tool_calls[{i}] has no function name string"))
            records.append(_call_record(call_id, "", ""))
            continue
        name = repairs.text(name)
        call, arguments_text = _finish(call_id, name, fn.get("arguments"), "", repairs)
        call.raw = arguments_text
        calls.append(call)
        records.append(_call_record(call_id, name, arguments_text))
    text_turn = _parse_text(content, prefix, len(calls), repairs)
    return ParsedTurn(
        content=text_turn.content,
        reasoning=reasoning or text_turn.reasoning,
        calls=calls + text_turn.calls,
        errors=errors + text_turn.errors,
        source=content,
        source_tool_calls=records,
        repairs=repairs.notes(),
    )


def _call_record(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters for quoting in an error message."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_type(value: Any) -> str:
    names = {
        list: "an array",
        tuple: "an array",
        dict: "an object",
        str: "a string",
        int: "a number",
        float: "a number",
        bool: "a boolean",
    }
    return names.get(type(value), "null" if value is None else type(value).__name__)


def _preview(value: Any, limit: int = 60) -> str:
    """A short JSON rendering of a value for an error message; never raises."""
    try:
        text = json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        text = f"<{_json_type(value)}>"
    return _clip(text, limit)


def validate_arguments(name: str, args: dict[str, Any], model: type[BaseModel]) -> tuple[BaseModel | None, str | None]:
    """Check arguments against a tool's pydantic model; return (parsed, None) or (None, error)."""
    try:
        return model.model_validate(args), None
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "(arguments)"
            kind = err["type"]
            if kind == "missing":
                problems.append(f"missing required argument {_clip(repr(field), 60)}")
            elif kind == "extra_forbidden":
                problems.append(f"unexpected argument {_clip(repr(field), 60)}")
            else:
                msg = err["msg"][:1].lower() + err["msg"][1:]
                problems.append(f"argument {_clip(repr(field), 60)}: {msg} (got {_preview(err.get('input'))})")
    except (TypeError, ValueError, RecursionError) as exc:  # raised outside pydantic's own error reports
        problems = [_clip(str(exc), 200)]
    allowed = ", ".join(f"{k}{'' if f.is_required() else '?'}" for k, f in model.model_fields.items())
    return None, f"invalid arguments for {_clip(repr(name), 60)}: " + "; ".join(
        problems
    ) + f". Expected arguments: {allowed}"


# -- rendering, and the strict reading of rendered text ---------------------------------------------
# The Qwen3/Hermes markup of one call, as the Qwen3 chat template writes it:
#   <tool_call>\n{"name": "NAME", "arguments": ARGUMENTS_JSON}\n</tool_call>
_RENDERED_OPEN, _RENDERED_CLOSE = TOOL_CALL_OPEN + "\n", "\n" + TOOL_CALL_CLOSE
_ESCAPED_CLOSE = TOOL_CALL_CLOSE.replace("</", "<\\/")
_RENDERED_BODY_RE = re.compile(r'\{"name": "(?P<name>[^"]*)", "arguments": (?P<args>.*)\}', re.DOTALL)


def render_tool_call_text(name: str, arguments: dict[str, Any] | str) -> str:
    """The Qwen3/Hermes text form of one call, exactly as the Qwen3 chat template writes it.

    Args:
        name: The tool's name.
        arguments: The arguments object, or the JSON text of the arguments as a model wrote it
            (kept verbatim, even when it is not valid JSON, so the model sees what it wrote).

    Returns:
        ``<tool_call>\n{"name": ..., "arguments": ...}\n</tool_call>``.
    """
    if isinstance(arguments, str):
        args = arguments
    else:
        # A value holding the closing tag (an answer that quotes a tool call) would end the block
        # early for every reader; JSON's "\/" escape keeps the text and the parsed value the same.
        args = json.dumps(arguments, ensure_ascii=False, default=str).replace(TOOL_CALL_CLOSE, _ESCAPED_CLOSE)
    return f'{_RENDERED_OPEN}{{"name": {json.dumps(name, ensure_ascii=False)}, "arguments": {args}}}{_RENDERED_CLOSE}'


def render_openai_call_text(call: Any) -> str:
    """The markup of an OpenAI-format tool call (``{"function": {"name", "arguments"}}``, or the
    function object itself), whatever its defects: a missing name renders as ``""``."""
    fn = call.get("function", call) if isinstance(call, dict) else {}
    fn = fn if isinstance(fn, dict) else {}
    return render_tool_call_text(str(fn.get("name", "")), fn.get("arguments", {}))


def split_rendered_calls(text: str) -> tuple[str, list[tuple[str, str]]]:
    """Read the calls at the end of a turn rendered by the chat template (strict, for round trips).

    Unlike :func:`parse_turn`, which forgives what models write, this accepts only the exact
    shape :func:`render_tool_call_text` writes, with arguments that are valid JSON, and only as
    the longest run of blocks that ends the text (each block on its own line).

    Args:
        text: An assistant turn's body as rendered.

    Returns:
        (the text before the calls, ``[(name, arguments JSON text), ...]``); no calls when the
        turn does not end with well-formed blocks.
    """
    start = text.find(_RENDERED_OPEN)
    while start != -1:
        if start == 0 or text[start - 1] == "\n":
            calls = _rendered_blocks(text[start:])
            if calls is not None:
                return (text[: start - 1] if start else ""), calls
        start = text.find(_RENDERED_OPEN, start + 1)
    return text, []


def _rendered_blocks(text: str) -> list[tuple[str, str]] | None:
    calls: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        if calls:
            if text[position] != "\n":
                return None
            position += 1
        if not text.startswith(_RENDERED_OPEN, position):
            return None
        end = text.find(_RENDERED_CLOSE, position)
        if end == -1:
            return None
        match = _RENDERED_BODY_RE.fullmatch(text, position + len(_RENDERED_OPEN), end)
        if match is None:
            return None
        try:
            json.loads(match["args"])
        except (json.JSONDecodeError, RecursionError):
            return None
        calls.append((match["name"], match["args"]))
        position = end + len(_RENDERED_CLOSE)
    return calls or None


def assistant_message(content: str, reasoning: str | None, calls: list[ParsedCall]) -> Message:
    """The OpenAI-format assistant message of a parsed turn: its text, its reasoning if any, and
    ``calls`` (the ones that will run) with their arguments as JSON text."""
    message: Message = {"role": "assistant", "content": content}
    if reasoning:
        message["reasoning_content"] = reasoning
    if calls:
        message["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)},
            }
            for c in calls
        ]
    return message
