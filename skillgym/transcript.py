"""Plain-text transcripts of an episode (``render()``, logs, CLI fallback)."""

from __future__ import annotations

import json

from skillgym.types import Message


def format_call(call: dict) -> str:
    fn = call.get("function", {})
    args = fn.get("arguments", "")
    try:
        args = json.dumps(json.loads(args), ensure_ascii=False) if isinstance(args, str) else json.dumps(args)
    except json.JSONDecodeError:
        pass
    return f"{fn.get('name')}({args})"


def transcript_text(messages: list[Message], max_chars: int = 1500) -> str:
    """One block a message; long contents are shortened in the middle."""
    blocks = []
    for m in messages:
        role = m.get("role", "?")
        content = m.get("content") or ""
        if len(content) > max_chars:
            half = max_chars // 2
            content = f"{content[:half]}\n[... {len(content) - max_chars} characters ...]\n{content[-half:]}"
        lines = [f"[{role}]" + (f" {m['name']}" if role == "tool" and m.get("name") else "")]
        if content:
            lines.append(content)
        for call in m.get("tool_calls") or []:
            lines.append("-> " + format_call(call))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
