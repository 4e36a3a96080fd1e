"""Plain-text transcripts of an episode (``render()``, logs, ``skillgym play``), and of episode
trees: a trajectory whose ``children`` are the subagent calls it made, each shown indented under
the tool call that made it."""

from __future__ import annotations

import json

from skillgym.types import ImagePart, Message, Trajectory, Usage


def format_call(call: dict) -> str:
    fn = call.get("function", {})
    args = fn.get("arguments", "")
    try:
        args = json.dumps(json.loads(args), ensure_ascii=False) if isinstance(args, str) else json.dumps(args)
    except json.JSONDecodeError:
        pass
    return f"{fn.get('name')}({args})"


def image_placeholders(message: Message) -> list[str]:
    """One line per image a (tool) message carries, e.g. ``[image image/png 1280x900, 48,213 bytes /workspace/.render/index-1280.png]``."""
    lines = []
    for image in message.get("images") or []:
        try:
            lines.append(ImagePart.model_validate(image).placeholder())
        except ValueError:  # a hand-made record: say there was an image rather than fail
            lines.append("[image]")
    return lines


def transcript_text(messages: list[Message], max_chars: int = 1500) -> str:
    """One block a message; long contents are shortened in the middle; images show as a placeholder line."""
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
        lines += image_placeholders(m)
        for call in m.get("tool_calls") or []:
            lines.append("-> " + format_call(call))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def render_tree(trajectory: Trajectory, depth: int = 1, *, max_chars: int = 600, indent: str = "    ") -> str:
    """The transcript of an orchestrator episode with each subagent call indented under the
    tool call that made it.

    Args:
        trajectory: The orchestrator's trajectory.
        depth: How many levels of calls to open: 0 shows only the orchestrator's turns (each
            call collapsed to its answer, as the orchestrator read it); 1 opens each call's own
            turns; more opens calls made inside calls.
        max_chars: Longest message content shown (cut in the middle).
        indent: One level of indentation.

    Returns:
        Plain text, one block per message.
    """
    return "\n".join(_render(trajectory, depth, max_chars, indent, level=0))


def _render(trajectory: Trajectory, depth: int, max_chars: int, indent: str, level: int) -> list[str]:
    pad = indent * level
    lines: list[str] = []
    by_call = {c.metadata.get("call_id"): c for c in trajectory.children if c.metadata.get("call_id")}
    loose = [c for c in trajectory.children if not c.metadata.get("call_id")]
    for message in trajectory.messages:
        role = message.get("role", "?")
        head = f"{pad}[{role}]" + (f" {message['name']}" if role == "tool" and message.get("name") else "")
        lines.append(head)
        content = _clip(str(message.get("content") or ""), max_chars)
        lines += [pad + "  " + line for line in content.splitlines()] if content else []
        lines += [pad + "  " + line for line in image_placeholders(message)]
        for call in message.get("tool_calls") or []:
            lines.append(f"{pad}  -> {_clip(format_call(call), max_chars)}")
            child = by_call.get(call.get("id"))
            if child is None and call.get("function", {}).get("name") == "subagent" and loose:
                child = loose.pop(0)
            if child is not None:
                lines += _child_block(child, depth, max_chars, indent, level + 1)
    for child in loose:  # calls whose assistant turn is not in the record
        lines += _child_block(child, depth, max_chars, indent, level + 1)
    return lines


def _child_block(child: Trajectory, depth: int, max_chars: int, indent: str, level: int) -> list[str]:
    meta = child.metadata
    pad = indent * level
    usage = child.usage if isinstance(child.usage, Usage) else Usage()
    reward = "" if child.reward is None else f", reward {child.reward:g}"
    head = (
        f"{pad}+ subagent {meta.get('subagent', '?')} [{meta.get('model', child.policy_id)}] "
        f"{meta.get('call_status', child.status)}: {child.num_turns} turns, {usage.total_tokens} tokens, "
        f"${float(meta.get('cost_usd') or 0):.6f}, {float(meta.get('latency_s') or 0):.2f} s{reward}"
    )
    if depth <= 0:
        answer = _clip(json.dumps(child.final_answer or "", ensure_ascii=False), max_chars)
        return [head, f"{pad}  = {answer}"]
    return [head, *_render(child, depth - 1, max_chars, indent, level + 1)]


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]} [... {len(text) - limit} characters ...] {text[-half:]}"
