"""Episode trees: roll-ups of an orchestrator trajectory and its subagent calls, and a transcript
that shows each call indented under the turn that made it.

A subagent call is a child trajectory in ``Trajectory.children``; its ``metadata`` holds the
call's accounting (written by the runner): ``subagent``, ``model``, ``call_status``,
``latency_s``, ``cost_usd``, ``usage_source``. :func:`rollup` sums a tree; children of
children (a subagent that is itself an orchestrator) are summed too.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from skillgym.transcript import render_tree
from skillgym.types import Trajectory

from .roster import Prices

__all__ = ["ModelTotals", "Rollup", "render_tree", "rollup", "routing_accuracy"]


class ModelTotals(BaseModel):
    """What one model did across a tree."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Rollup(BaseModel):
    """Totals of an orchestrator episode and every subagent call under it.

    Attributes:
        per_model: Totals keyed by model label (the orchestrator under its policy id, each
            subagent under its roster entry's policy spec).
        subagent_calls: Number of subagent calls in the tree.
        calls_by_status: Calls per status (``ok``, ``truncated``, ``timeout``, ``error``).
        prompt_tokens, completion_tokens, cost_usd: Sums over ``per_model``.
        wall_seconds: The orchestrator episode's own wall time (policy turns plus env steps;
            a step includes the subagent calls it waited for).
        subagent_seconds: Sum of the calls' latencies (more than the time they added when
            calls ran concurrently).
    """

    per_model: dict[str, ModelTotals] = Field(default_factory=dict)
    subagent_calls: int = 0
    calls_by_status: dict[str, int] = Field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    wall_seconds: float = 0.0
    subagent_seconds: float = 0.0


def episode_seconds(trajectory: Trajectory) -> float:
    """Wall time of one episode from its timings (policy turns plus env steps)."""
    return sum(t.tool_seconds + (t.policy_seconds or 0.0) for t in trajectory.timings)


def rollup(trajectory: Trajectory, orchestrator_prices: Prices | None = None) -> Rollup:
    """Sum tokens, cost, time and calls over an orchestrator trajectory and its children.

    Args:
        trajectory: The orchestrator's trajectory (its children are the subagent calls).
        orchestrator_prices: Prices of the orchestrator's own tokens (default: free).

    Returns:
        The roll-up; ``per_model`` has one row for the orchestrator and one per subagent model.
    """
    prices = orchestrator_prices or Prices()
    out = Rollup(wall_seconds=round(episode_seconds(trajectory), 6))
    own = out.per_model.setdefault(trajectory.policy_id, ModelTotals())
    own.calls += 1
    own.prompt_tokens += trajectory.usage.prompt_tokens
    own.completion_tokens += trajectory.usage.completion_tokens
    own.cost_usd += prices.cost(trajectory.usage)
    own.seconds += sum(t.policy_seconds or 0.0 for t in trajectory.timings)

    def visit(children: list[Trajectory]) -> None:
        for child in children:
            meta = child.metadata
            model = str(meta.get("model") or child.policy_id)
            row = out.per_model.setdefault(model, ModelTotals())
            row.calls += 1
            row.prompt_tokens += child.usage.prompt_tokens
            row.completion_tokens += child.usage.completion_tokens
            row.cost_usd += float(meta.get("cost_usd") or 0.0)
            row.seconds += float(meta.get("latency_s") or 0.0)
            out.subagent_calls += 1
            status = str(meta.get("call_status") or child.status).split(":")[0]
            out.calls_by_status[status] = out.calls_by_status.get(status, 0) + 1
            out.subagent_seconds += float(meta.get("latency_s") or 0.0)
            visit(child.children)

    visit(trajectory.children)
    out.prompt_tokens = sum(r.prompt_tokens for r in out.per_model.values())
    out.completion_tokens = sum(r.completion_tokens for r in out.per_model.values())
    out.cost_usd = sum(r.cost_usd for r in out.per_model.values())
    out.subagent_seconds = round(out.subagent_seconds, 6)
    return out


def routing_accuracy(trajectories: list[Trajectory]) -> dict[str, Any]:
    """How often the orchestrator called the right subagent, over the tasks where it is known.

    A task says who should take it in its metadata (``expected_subagent``; None means "answer
    alone"), which the orchestrator env copies into the trajectory's metadata. The first
    subagent call is the routing decision; no call means "answered alone".

    Returns:
        ``{"known": n, "correct": k, "accuracy": k / n (None when n == 0), "confusion": {...}}``;
        ``confusion`` counts ``"expected -> chosen"``.
    """
    known = correct = 0
    confusion: dict[str, int] = {}
    for trajectory in trajectories:
        if "expected_subagent" not in trajectory.metadata:
            continue
        expected = trajectory.metadata["expected_subagent"]
        chosen = trajectory.children[0].metadata.get("subagent") if trajectory.children else None
        known += 1
        correct += int(chosen == expected)
        key = f"{expected or '(alone)'} -> {chosen or '(alone)'}"
        confusion[key] = confusion.get(key, 0) + 1
    return {"known": known, "correct": correct, "accuracy": correct / known if known else None, "confusion": confusion}
