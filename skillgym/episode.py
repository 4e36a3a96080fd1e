"""Run one episode of a policy in an env and return its lossless trajectory."""

from __future__ import annotations

import time
from typing import Any

from skillgym.env import SkillEnv
from skillgym.policies.base import Policy
from skillgym.types import Task, Trajectory


def run_episode(
    env: SkillEnv,
    policy: Policy,
    *,
    seed: int | None = None,
    task: Task | None = None,
    task_id: str | None = None,
    max_steps: int | None = None,
) -> Trajectory:
    """Reset, alternate act/step until the episode ends, and return ``env.trajectory``
    completed with the policy id, per-turn policy time, usage, token ids and logprobs."""
    options: dict[str, Any] = {}
    if task is not None:
        options["task"] = task
    elif task_id is not None:
        options["task_id"] = task_id
    observation, info = env.reset(seed=seed, options=options)
    policy.reset(observation, info)
    policy_seconds: list[float] = []
    extras: dict[str, list] = {"token_ids": [], "logprobs": []}
    usage = {"prompt_tokens": 0, "completion_tokens": 0}
    limit = max_steps or env.env_spec.max_turns
    done = False
    for _ in range(limit):
        started = time.perf_counter()
        action = policy.act(observation, info)
        policy_seconds.append(time.perf_counter() - started)
        _collect(action, usage, extras)
        observation, _, terminated, truncated, step_info = env.step(action)
        if terminated or truncated:
            done = True
            break
    trajectory = env.trajectory
    if not done:
        trajectory.truncated = True
    return finish_trajectory(trajectory, policy, policy_seconds, usage, extras)


def _collect(action: Any, usage: dict[str, int], extras: dict[str, list]) -> None:
    if isinstance(action, dict):
        for key in usage:
            usage[key] += int((action.get("usage") or {}).get(key, 0))
        for key in extras:
            if action.get(key) is not None:
                extras[key].append(action[key])


def finish_trajectory(
    trajectory: Trajectory,
    policy: Policy,
    policy_seconds: list[float],
    usage: dict[str, int],
    extras: dict[str, list],
) -> Trajectory:
    trajectory.policy_id = policy.policy_id
    for timing, seconds in zip(trajectory.timings, policy_seconds):
        timing.policy_seconds = round(seconds, 6)
    trajectory.usage.prompt_tokens = usage["prompt_tokens"]
    trajectory.usage.completion_tokens = usage["completion_tokens"]
    trajectory.token_ids = extras["token_ids"] or None
    trajectory.logprobs = extras["logprobs"] or None
    return trajectory
