"""Side-by-side evaluation metrics over trajectories (pure functions, no I/O).

Success is ``reward >= threshold``. Intervals are percentile bootstraps over *tasks* (the
unit that was sampled), so several samples of one task do not shrink the interval.
pass^k is the chance that k independent samples of a task all succeed (estimated without
bias from n ≥ k samples per task as C(c, k) / C(n, k), c = successes), averaged over tasks.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from math import comb
from statistics import mean, median

import numpy as np
from pydantic import BaseModel

from skillgym.graders.compactness import trace_chars
from skillgym.types import Trajectory


class PolicyMetrics(BaseModel):
    policy: str
    episodes: int
    tasks: int
    failed_episodes: int
    success_rate: float
    success_ci95: tuple[float, float]
    pass_k: dict[int, float]
    mean_reward: float
    mean_turns: float
    tokens_per_episode: float
    answer_chars: float
    trace_chars: float
    answer_to_trace: float
    latency_p50_s: float
    latency_mean_s: float


def _by_task(trajs: Sequence[Trajectory]) -> dict[str, list[Trajectory]]:
    grouped: dict[str, list[Trajectory]] = defaultdict(list)
    for t in trajs:
        grouped[t.task_id].append(t)
    return grouped


def success(t: Trajectory, threshold: float) -> bool:
    return t.status == "ok" and (t.reward or 0.0) >= threshold


def bootstrap_ci(per_task: Sequence[float], n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    if not per_task:
        return (0.0, 0.0)
    values = np.asarray(per_task, dtype=float)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(values), size=(n_boot, len(values)))
    means = values[draws].mean(axis=1)
    return (round(float(np.percentile(means, 2.5)), 4), round(float(np.percentile(means, 97.5)), 4))


def pass_hat_k(outcomes: Sequence[bool], k: int) -> float:
    n, c = len(outcomes), sum(outcomes)
    return comb(c, k) / comb(n, k) if n >= k else float("nan")


def episode_seconds(t: Trajectory) -> float:
    return sum((s.policy_seconds or 0.0) + s.tool_seconds for s in t.timings)


def policy_metrics(policy: str, trajs: Sequence[Trajectory], threshold: float = 0.5) -> PolicyMetrics:
    grouped = _by_task(trajs)
    per_task_success = [mean(success(t, threshold) for t in group) for group in grouped.values()]
    max_k = min((len(g) for g in grouped.values()), default=0)
    pass_k = (
        {
            k: round(mean(pass_hat_k([success(t, threshold) for t in g], k) for g in grouped.values()), 4)
            for k in range(1, max_k + 1)
        }
        if max_k
        else {}
    )
    ok = [t for t in trajs if t.status == "ok"] or list(trajs)
    answers = [len(t.final_answer or "") for t in ok]
    traces = [trace_chars(t.messages) for t in ok]
    latencies = [episode_seconds(t) for t in ok]
    return PolicyMetrics(
        policy=policy,
        episodes=len(trajs),
        tasks=len(grouped),
        failed_episodes=sum(t.status == "failed" for t in trajs),
        success_rate=round(mean(per_task_success), 4) if per_task_success else 0.0,
        success_ci95=bootstrap_ci(per_task_success),
        pass_k=pass_k,
        mean_reward=round(mean((t.reward or 0.0) for t in trajs), 4) if trajs else 0.0,
        mean_turns=round(mean(t.num_turns for t in ok), 3) if ok else 0.0,
        tokens_per_episode=round(mean(t.usage.total_tokens for t in ok), 1) if ok else 0.0,
        answer_chars=round(mean(answers), 1) if answers else 0.0,
        trace_chars=round(mean(traces), 1) if traces else 0.0,
        answer_to_trace=round(sum(answers) / max(1, sum(traces)), 4),
        latency_p50_s=round(median(latencies), 4) if latencies else 0.0,
        latency_mean_s=round(mean(latencies), 4) if latencies else 0.0,
    )
