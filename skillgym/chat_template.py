"""The Qwen3 chat format: render conversations to text and parse rendered text back.

The templates are read at run time from the installed TRL package
(``trl/chat_templates/qwen3.jinja`` for inference, ``qwen3_training.jinja`` with
``{% generation %}`` markers for assistant-only loss), never copied into this repository,
so the tiny student speaks exactly what Qwen3 speaks and TRL's tool-call parser
recognizes it. Rendering goes through transformers' own chat-template machinery, so
:func:`render` gives byte for byte what ``tokenizer.apply_chat_template(..., tokenize=False)``
gives for a tokenizer carrying the same template.

Round trip. ``parse_rendered(render(m))`` gives back ``m`` up to :func:`canonical`, which
removes exactly what the Qwen3 format does not write down:

* tool-call ids and ``tool_call_id`` are not rendered: they become positional references
  (``"<assistant index>:<call index>"``); a tool message that answers no call of the
  assistant turn before it (the env's note after an unparsable turn) gets ``None``;
  the parser assigns tool responses to calls in order;
* the ``name`` of a tool message is not rendered (the parser restores it from its call);
* ``arguments`` are compared as parsed JSON (an object and its JSON string are equal);
  arguments that are not valid JSON are compared as strings;
* ``reasoning_content`` is compared with surrounding newlines stripped and is absent when
  empty; the assistant ``content`` loses leading newlines (the template strips them);
  ``content: None`` is ``""``; keys whose value is ``None`` are dropped;
* the ``images`` of a tool message are not rendered (a text-only model reads the tool's text;
  see :class:`~skillgym.types.ImagePart`).

Known ambiguities of the format itself (the same text comes from two conversations), where
the parser picks the first reading: an assistant turn whose text *ends* with well-formed,
template-shaped ``<tool_call>`` blocks whose arguments are valid JSON reads back as
structured calls; a structured call whose arguments are not valid JSON reads back as text;
a user message that starts with ``<tool_response>`` and ends with ``</tool_response>`` reads
back as tool messages. The inference template also drops the reasoning of assistant turns
that come before the last user message (use ``training=True`` to keep it). In every case
``render(parse_rendered(text)) == text`` still holds.
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from importlib import resources
from typing import Any

from skillgym.toolcalls import TOOL_CALL_CLOSE, TOOL_CALL_OPEN, split_rendered_calls
from skillgym.types import Message

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
# Control tokens may be dropped by a decoder that skips special tokens; the markup tokens
# must never be (a tokenizer should add them as non-special tokens, as Qwen3's does).
CONTROL_TOKENS = [IM_START, IM_END]
MARKUP_TOKENS = [TOOL_CALL_OPEN, TOOL_CALL_CLOSE, "<tool_response>", "</tool_response>", "<think>", "</think>"]
SPECIAL_TOKENS = CONTROL_TOKENS + MARKUP_TOKENS
"""Every string a tokenizer for this format must hold as one token."""

_RESPONSE_OPEN, _RESPONSE_CLOSE = "\n<tool_response>\n", "\n</tool_response>"
_THINK_OPEN, _THINK_CLOSE = "<think>\n", "\n</think>\n\n"


class ChatTemplateError(ValueError):
    """Raised when text is not a conversation in the Qwen3 format."""


# -- templates ---------------------------------------------------------------------------------


@lru_cache(maxsize=2)
def qwen3_template(training: bool = False) -> str:
    """The Qwen3 template shipped with the installed TRL (training: with generation markers)."""
    name = "qwen3_training.jinja" if training else "qwen3.jinja"
    try:
        return resources.files("trl").joinpath("chat_templates", name).read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise RuntimeError(
            f"cannot read trl/chat_templates/{name} from the installed TRL ({exc}); "
            "install a TRL that ships it: pip install 'trl>=0.24'"
        ) from exc


def student_template() -> str:
    """The template a student is saved and served with: the training template.

    Qwen3's inference template drops the (empty) ``<think>`` block of every assistant turn
    before the one being generated, while training renders each turn with it. A model trained
    on the training rendering and served with the inference one sees, from its second turn on,
    a history it never saw in training (measured on SmolLM2-135M: the first call right, then an
    empty turn; training/EXPERIMENTS.md §16, round 5). Served with the training template (its
    ``{% generation %}`` markers are inert outside training), the prompt of every turn is a
    prefix of the text the model was trained on.
    """
    return qwen3_template(training=True)


def render(
    messages: list[Message],
    tools: list[dict[str, Any]] | None = None,
    add_generation_prompt: bool = False,
    training: bool = False,
    **template_kwargs: Any,
) -> str:
    """Render OpenAI-format messages (and tool schemas) as Qwen3 text.

    Same output as ``apply_chat_template(messages, tools=tools, tokenize=False)`` on a
    tokenizer whose ``chat_template`` is :func:`qwen3_template` (``training`` picks which).
    ``template_kwargs`` reach the template (e.g. ``enable_thinking=False``).
    """
    from transformers.utils.chat_template_utils import render_jinja_template

    # apply_chat_template drops None-valued keys first (content=None from APIs); so do we. A
    # tool's images are not text: a text-only model reads the tool's text alone.
    chat = [{k: v for k, v in m.items() if v is not None and k != "images"} for m in messages]
    rendered, _ = render_jinja_template(
        conversations=[chat],
        tools=tools or None,
        chat_template=qwen3_template(training),
        add_generation_prompt=add_generation_prompt,
        **template_kwargs,
    )
    return rendered[0]


@lru_cache(maxsize=1)
def _tools_frame() -> tuple[str, str]:
    """(header, trailer) around the tool schemas in the system block, derived from the template
    itself by rendering two marker schemas, so no template text lives in this repository."""
    markers = [{"skillgym_marker": 1}, {"skillgym_marker": 2}]
    text = render([{"role": "user", "content": "x"}], tools=markers)
    body = text[len(IM_START + "system\n") : text.index(IM_END)]
    first, second = (json.dumps(m, ensure_ascii=False) for m in markers)
    header, _, rest = body.partition("\n" + first + "\n" + second)
    return header, rest


# -- parsing -----------------------------------------------------------------------------------


def parse_rendered(text: str) -> list[Message]:
    """Parse a rendered Qwen3 conversation back into OpenAI-format messages.

    Assistant turns get ``reasoning_content`` (when non-empty), ``content`` and structured
    ``tool_calls`` with ids ``call_<turn>_<i>``; tool responses become ``tool`` messages with
    the ``tool_call_id`` and ``name`` of the call they answer, in order. A trailing
    generation prompt (``<|im_start|>assistant\\n``) is ignored. Raises
    :class:`ChatTemplateError` on text that is not in the format.
    """
    return _parse(text)[0]


def parse_rendered_tools(text: str) -> list[dict[str, Any]]:
    """The tool schemas listed in a rendered conversation's system block (empty if none)."""
    return _parse(text)[1]


def _parse(text: str) -> tuple[list[Message], list[dict[str, Any]]]:
    if not text.startswith(IM_START):
        raise ChatTemplateError(f"a rendered conversation starts with {IM_START!r}; got {text[:40]!r}")
    messages: list[Message] = []
    tools: list[dict[str, Any]] = []
    chunks = text.split(IM_START)[1:]
    for index, chunk in enumerate(chunks):
        role, newline, rest = chunk.partition("\n")
        body, closed, tail = rest.partition(IM_END)
        if not closed:
            if index == len(chunks) - 1 and role == "assistant" and body.strip() in ("", "<think>\n\n</think>"):
                break  # the generation prompt
            raise ChatTemplateError(f"block {index} ({role!r}) is not closed with {IM_END!r}")
        if not newline:
            raise ChatTemplateError(f"block {index}: expected a role line, got {chunk[:40]!r}")
        if tail != "\n":
            raise ChatTemplateError(f"block {index} ({role!r}): unexpected text after {IM_END!r}: {tail[:40]!r}")
        if role == "system" and index == 0:
            content, tools = _parse_system(body)
            if content is not None:
                messages.append({"role": "system", "content": content})
        elif role == "assistant":
            messages.append(_parse_assistant(body, len([m for m in messages if m["role"] == "assistant"]) + 1))
        elif role == "user" and body.startswith(_RESPONSE_OPEN[1:]) and body.endswith(_RESPONSE_CLOSE[1:]):
            messages.extend(_parse_tool_responses("\n" + body, messages))
        elif role in ("user", "system"):
            messages.append({"role": role, "content": body})
        else:
            raise ChatTemplateError(f"block {index}: unknown role {role!r}")
    return messages, tools


def _parse_system(body: str) -> tuple[str | None, list[dict[str, Any]]]:
    header, trailer = _tools_frame()
    if not body.endswith(trailer) or header not in body:
        return body, []
    before, _, listing = body[: len(body) - len(trailer)].rpartition(header)
    tools = [json.loads(line) for line in listing.split("\n") if line]
    if not before:
        return None, tools
    if not before.endswith("\n\n"):
        raise ChatTemplateError("the system block's text must be separated from the tool list by a blank line")
    return before[:-2], tools


def _parse_assistant(body: str, turn: int) -> Message:
    reasoning = None
    if body.startswith(_THINK_OPEN) and _THINK_CLOSE in body:
        # "<think>\n\n</think>" (empty reasoning) has its close right after the open.
        end = body.find(_THINK_CLOSE, len(_THINK_OPEN) - 1)
        reasoning = body[len(_THINK_OPEN) : max(end, len(_THINK_OPEN))]
        body = body[end + len(_THINK_CLOSE) :]
    content, calls = _split_calls(body, turn)
    message: Message = {"role": "assistant", "content": content}
    if reasoning:
        message["reasoning_content"] = reasoning
    if calls:
        message["tool_calls"] = calls
    return message


def _split_calls(body: str, turn: int) -> tuple[str, list[dict[str, Any]]]:
    """Split the turn into text and the longest suffix of well-formed call blocks."""
    content, calls = split_rendered_calls(body)
    return content, [
        {"id": f"call_{turn}_{i}", "type": "function", "function": {"name": name, "arguments": arguments}}
        for i, (name, arguments) in enumerate(calls)
    ]


def _parse_tool_responses(text: str, previous: list[Message]) -> list[Message]:
    if not (text.startswith(_RESPONSE_OPEN) and text.endswith(_RESPONSE_CLOSE)):
        raise ChatTemplateError(f"a tool-response block must hold <tool_response> sections; got {text[:60]!r}")
    contents = text[len(_RESPONSE_OPEN) : -len(_RESPONSE_CLOSE)].split(_RESPONSE_CLOSE + _RESPONSE_OPEN)
    calls = previous[-1].get("tool_calls", []) if previous and previous[-1]["role"] == "assistant" else []
    turn = sum(1 for m in previous if m["role"] == "assistant")
    out: list[Message] = []
    for i, content in enumerate(contents):
        if i < len(calls):
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": calls[i]["id"],
                    "name": calls[i]["function"]["name"],
                    "content": content,
                }
            )
        else:
            out.append({"role": "tool", "tool_call_id": f"call_{turn}_unmatched_{i}", "content": content})
    return out


# -- normalization -----------------------------------------------------------------------------


def canonical(messages: list[Message]) -> list[Message]:
    """Messages with what the Qwen3 format does not write down normalized away (see the module
    docstring): compare ``canonical(a) == canonical(b)`` for round-trip parity."""
    out: list[Message] = []
    ids: dict[str, str] = {}  # call id -> positional reference, for the current assistant turn
    assistant_index = -1
    for raw in messages:
        message = {k: copy.deepcopy(v) for k, v in raw.items() if v is not None and k != "images"}
        role = message.get("role")
        message["content"] = _text(message.get("content"))
        if role == "assistant":
            assistant_index += 1
            ids = {}
            for key in ("reasoning", "thinking"):
                if key in message and "reasoning_content" not in message:
                    message["reasoning_content"] = message[key]
                message.pop(key, None)
            reasoning = message.pop("reasoning_content", None)
            if not isinstance(reasoning, str) and "</think>" in message["content"]:
                # The template reads reasoning out of the content when no field carries it.
                before, _, after = message["content"].rpartition("</think>")
                reasoning = before.split("</think>")[0].rstrip("\n").split("<think>")[-1].lstrip("\n")
                message["content"] = after
            reasoning = (reasoning if isinstance(reasoning, str) else "").strip("\n")
            if reasoning:
                message["reasoning_content"] = reasoning
            message["content"] = message["content"].lstrip("\n")
            calls = []
            for k, call in enumerate(message.pop("tool_calls", None) or []):
                fn = call.get("function", call)
                ref = f"{assistant_index}:{k}"
                if call.get("id") is not None:
                    ids.setdefault(str(call["id"]), ref)
                calls.append({"ref": ref, "name": fn.get("name"), "arguments": _arguments(fn.get("arguments"))})
            if calls:
                message["tool_calls"] = calls
        elif role == "tool":
            message.pop("name", None)
            message["tool_call_id"] = ids.get(str(message.get("tool_call_id")))
        else:
            ids = {}
        out.append(message)
    return out


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, list):  # content parts: the template renders non-strings as ""
        return ""
    return str(content)


def _arguments(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except json.JSONDecodeError:
            return arguments
    return arguments
