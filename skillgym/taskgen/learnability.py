"""The learnability filter: keep tasks the teacher solves sometimes, but not always.

A task the teacher always solves teaches a student little it would not get anyway; one it
never solves may be broken or out of reach. With p the teacher's success rate over k
attempts, 4p(1-p) is 0 at both ends and 1 at p = 1/2 (the variance of a Bernoulli trial,
scaled), which is exactly where a reward signal is most informative for RL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel

from skillgym.types import Task


def learnability(p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"a success rate must be in [0, 1], got {p}")
    return 4.0 * p * (1.0 - p)


class LearnabilityResult(BaseModel):
    task_id: str
    rewards: list[float]
    pass_rate: float
    score: float
    kept: bool


def score_rewards(
    task_id: str, rewards: list[float], *, success: float = 0.5, threshold: float = 0.0
) -> LearnabilityResult:
    """Success means reward >= ``success``; kept when 4p(1-p) > ``threshold``."""
    if not rewards:
        raise ValueError(f"task {task_id!r}: no rewards to score")
    p = sum(r >= success for r in rewards) / len(rewards)
    score = learnability(p)
    return LearnabilityResult(
        task_id=task_id, rewards=rewards, pass_rate=p, score=round(score, 6), kept=score > threshold
    )


def filter_learnable(
    tasks: Iterable[Task],
    env: Any,
    policy: Any,
    *,
    k: int = 4,
    success: float = 0.5,
    threshold: float = 0.0,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[Task], list[LearnabilityResult]]:
    """Run ``policy`` ``k`` times on each task in ``env``; keep the learnable tasks.

    Kept tasks carry ``metadata["learnability"]`` and ``metadata["teacher_pass_rate"]``.
    """
    from skillgym.episode import run_episode

    if k < 2:
        raise ValueError(f"k must be at least 2 to estimate a success rate, got {k}")
    kept, results = [], []
    for task in tasks:
        rewards = [float(run_episode(env, policy, task=task, seed=i).reward or 0.0) for i in range(k)]
        result = score_rewards(task.id, rewards, success=success, threshold=threshold)
        results.append(result)
        if result.kept:
            kept.append(
                task.model_copy(
                    update={
                        "metadata": {
                            **task.metadata,
                            "learnability": result.score,
                            "teacher_pass_rate": result.pass_rate,
                        }
                    }
                )
            )
        if progress:
            progress(1)
    return kept, results
