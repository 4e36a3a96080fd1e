"""The subagent contract: the answer handed back must be compact, shorter than the trace.

An orchestrator pays for every token a subagent returns, so a right answer buried in a
page of text is worth less than the same answer alone.
"""

from __future__ import annotations

from skillgym.types import Message


def trace_chars(messages: list[Message]) -> int:
    """Characters of everything the subagent saw and did after the task prompt."""
    total = 0
    for m in messages:
        if m.get("role") in ("assistant", "tool"):
            total += len(m.get("content") or "")
            for call in m.get("tool_calls") or []:
                total += len(str(call.get("function", {}).get("arguments", "")))
    return total


def compactness(answer: str, messages: list[Message], budget_chars: int = 200) -> float:
    """1.0 up to ``budget_chars``; falls linearly to 0 at four times the budget; halved when
    the answer is not shorter than the trace that produced it (nothing was condensed)."""
    n = len(answer.strip())
    score = 1.0 if n <= budget_chars else max(0.0, 1.0 - (n - budget_chars) / (3.0 * budget_chars))
    trace = trace_chars(messages)
    if trace and n >= trace:
        score *= 0.5
    return round(score, 6)
