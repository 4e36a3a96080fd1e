"""How an env's tools and tool results read as plain chat text (the Qwen3 format), for stacks
whose model speaks text and whose env answers in user turns (verifiers' env-as-user, SkyRL-gym)."""

from __future__ import annotations

import json
from typing import Any

from skillgym.chat_template import IM_END, IM_START, render


def system_prompt_with_tools(system: str, tools: list[dict[str, Any]]) -> str:
    """The system block exactly as the Qwen3 chat template renders it (instructions + ``<tools>``)."""
    text = render([{"role": "system", "content": system}], tools=tools or None)
    return text[len(IM_START + "system\n") : text.index(IM_END)]


def tool_responses_text(messages: list[dict[str, Any]]) -> str:
    """Tool messages as the user turn the Qwen3 template makes of them (``<tool_response>`` blocks)."""
    return "\n".join(f"<tool_response>\n{text_of(m.get('content'))}\n</tool_response>" for m in messages)


def text_of(content: Any) -> str:
    """A message's content as text (OpenAI content parts joined)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return "" if content is None else json.dumps(content, ensure_ascii=False)
