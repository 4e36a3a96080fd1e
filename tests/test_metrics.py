"""Evaluation metrics: success, bootstrap interval, pass^k."""

from __future__ import annotations

import pytest

from skillgym.rollouts.metrics import bootstrap_ci, pass_hat_k, policy_metrics
from skillgym.types import Trajectory


def traj(task: str, reward: float, status: str = "ok", answer: str = "x") -> Trajectory:
    return Trajectory(
        env_id="e-v0",
        env_version=0,
        task_id=task,
        reward=reward,
        status=status,
        final_answer=answer,
        messages=[
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "", "tool_calls": []},
            {"role": "tool", "content": "y" * 40},
            {"role": "assistant", "content": answer},
        ],
    )


def test_pass_hat_k_matches_definition():
    assert pass_hat_k([True, True, False], 1) == pytest.approx(2 / 3)
    assert pass_hat_k([True, True, False], 2) == pytest.approx(1 / 3)  # C(2,2)/C(3,2)
    assert pass_hat_k([True, True, False], 3) == 0.0


def test_bootstrap_ci_brackets_the_mean_and_is_degenerate_for_constant_data():
    lo, hi = bootstrap_ci([1.0] * 10)
    assert (lo, hi) == (1.0, 1.0)
    lo, hi = bootstrap_ci([1.0, 0.0] * 50)
    assert lo < 0.5 < hi and hi - lo < 0.3


def test_policy_metrics_groups_by_task():
    trajs = [traj("a", 1.0), traj("a", 0.0), traj("b", 1.0), traj("b", 1.0), traj("c", 0.0, status="failed")]
    m = policy_metrics("p", trajs)
    assert m.tasks == 3 and m.episodes == 5 and m.failed_episodes == 1
    assert m.success_rate == pytest.approx((0.5 + 1.0 + 0.0) / 3, abs=1e-4)
    assert m.pass_k[1] == pytest.approx(0.5, abs=1e-4)
    assert m.answer_to_trace < 1.0
