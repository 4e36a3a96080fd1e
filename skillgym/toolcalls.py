"""Turning one assistant turn into tool calls, with errors written for the model.

Two input shapes are accepted, because policies produce both:

* raw model text in the Qwen3/Hermes format — any number of
  ``<tool_call>{"name": ..., "arguments": ...}</tool_call>`` blocks, with free text and
  ``<think>...</think>`` reasoning around them;
* an OpenAI assistant message dict whose ``tool_calls`` carry ``function.arguments`` as a
  JSON string (or, leniently, an object). Its ``content`` is also scanned for markup, for
  servers that did not parse the calls themselves.

Parsing never raises on model output: every defect becomes a :class:`ParsedCall` with an
``error`` string that tells the model exactly what to fix.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, Field, ValidationError

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
_THINK_RE = re.compile(r"<think>(.*?)(?:</think>|\Z)", re.DOTALL)
_CALL_RE = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.DOTALL)


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


def parse_turn(action: Any, call_id_prefix: str = "call") -> ParsedTurn:
    """Parse one assistant turn (raw text or OpenAI message dict). Never raises."""
    if isinstance(action, dict):
        return _parse_message(action, call_id_prefix)
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
    return _parse_text(action, call_id_prefix, start_index=0)


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


def _parse_text(text: str, prefix: str, start_index: int) -> ParsedTurn:
    visible, reasoning = _split_reasoning(text)
    calls: list[ParsedCall] = []
    for i, match in enumerate(_CALL_RE.finditer(visible), start=start_index):
        body = match.group(1).strip()
        closed = match.group(0).endswith(TOOL_CALL_CLOSE)
        calls.append(_parse_call_json(body, f"{prefix}_{i}", closed=closed))
    # A stray closing tag with no opening one is a malformed attempt too.
    remainder = _CALL_RE.sub("", visible)
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
    return ParsedTurn(content=remainder.strip(), reasoning=reasoning, calls=calls)


def _parse_call_json(body: str, call_id: str, closed: bool = True) -> ParsedCall:
    fmt = f'write {TOOL_CALL_OPEN}{{"name": "TOOL", "arguments": {{...}}}}{TOOL_CALL_CLOSE}'
    if not body:
        return ParsedCall(id=call_id, raw=body, error=f"empty tool call; {fmt}")
    try:
        payload = json.loads(body)
    except json.JSONDecodeError as exc:
        hint = "" if closed else f" (the call was not closed with {TOOL_CALL_CLOSE})"
        return ParsedCall(
            id=call_id,
            raw=body,
            error=f"tool call is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}{hint}; {fmt}",
        )
    if not isinstance(payload, dict):
        return ParsedCall(id=call_id, raw=body, error=f"tool call must be a JSON object, got {_json_type(payload)}; {fmt}")
    name = payload.get("name")
    if not isinstance(name, str) or not name:
        return ParsedCall(id=call_id, raw=body, error=f'tool call has no "name" string; {fmt}')
    unexpected = sorted(set(payload) - {"name", "arguments", "parameters", "id"})
    if unexpected:
        return ParsedCall(
            id=call_id,
            name=name,
            raw=body,
            error=f"tool call has unexpected top-level keys {unexpected}; put tool arguments inside \"arguments\"",
        )
    args = payload.get("arguments", payload.get("parameters", {}))
    return _finish(call_id, name, args, body)


def _finish(call_id: str, name: str, args: Any, raw: str) -> ParsedCall:
    """Normalize ``arguments``: an object, or a JSON string holding an object."""
    if args is None:
        args = {}
    if isinstance(args, str):
        if not args.strip():
            args = {}
        else:
            try:
                args = json.loads(args)
            except json.JSONDecodeError as exc:
                return ParsedCall(
                    id=call_id,
                    name=name,
                    raw=raw,
                    error=f"arguments of {name!r} are not valid JSON: {exc.msg} at column {exc.colno}",
                )
    if not isinstance(args, dict):
        return ParsedCall(
            id=call_id, name=name, raw=raw, error=f"arguments of {name!r} must be a JSON object, got {_json_type(args)}"
        )
    return ParsedCall(id=call_id, name=name, arguments=args, raw=raw)


def _parse_message(message: dict, prefix: str) -> ParsedTurn:
    content = message.get("content") or ""
    if not isinstance(content, str):
        # Content-part lists: keep the text parts.
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict)) if isinstance(content, list) else ""
    reasoning_field = message.get("reasoning_content") or message.get("reasoning")
    structured = message.get("tool_calls") or []
    calls: list[ParsedCall] = []
    if not isinstance(structured, list):
        structured = [structured]
    for i, item in enumerate(structured):
        call_id = f"{prefix}_{i}"
        if not isinstance(item, dict):
            calls.append(ParsedCall(id=call_id, error=f"tool_calls[{i}] must be an object"))
            continue
        call_id = str(item.get("id") or call_id)
        fn = item.get("function") if isinstance(item.get("function"), dict) else item
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            calls.append(ParsedCall(id=call_id, raw=json.dumps(item, default=str), error=f"tool_calls[{i}] has no function name"))
            continue
        calls.append(_finish(call_id, name, fn.get("arguments"), json.dumps(item, default=str)))
    text_turn = _parse_text(content, prefix, start_index=len(calls))
    reasoning = reasoning_field or text_turn.reasoning
    return ParsedTurn(content=text_turn.content, reasoning=reasoning, calls=calls + text_turn.calls)


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


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
                problems.append(f"missing required argument {field!r}")
            elif kind == "extra_forbidden":
                problems.append(f"unexpected argument {field!r}")
            else:
                got = err.get("input")
                got_text = json.dumps(got, default=str)
                if len(got_text) > 60:
                    got_text = got_text[:57] + "..."
                problems.append(f"argument {field!r}: {err['msg'].lower()} (got {got_text})")
        allowed = ", ".join(
            f"{k}{'' if f.is_required() else '?'}" for k, f in model.model_fields.items()
        )
        return None, f"invalid arguments for {name!r}: " + "; ".join(problems) + f". Expected arguments: {allowed}"


# -- rendering, and the strict reading of rendered text ---------------------------------------------
# The Qwen3/Hermes markup of one call, as the Qwen3 chat template writes it:
#   <tool_call>\n{"name": "NAME", "arguments": ARGUMENTS_JSON}\n</tool_call>
_RENDERED_OPEN, _RENDERED_CLOSE = TOOL_CALL_OPEN + "\n", "\n" + TOOL_CALL_CLOSE
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
    args = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False, default=str)
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
