"""The async twin of :func:`skillgym.episode.run_episode`.

``env.reset`` and ``env.step`` block (sandbox round trips, graders); run on the event loop
they would stall every other episode in flight (SkyRL PR #53). Here they run in a thread
pool while the policy's turn is awaited, so one loop keeps hundreds of episodes moving.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from typing import Any

from skillgym.env import SkillEnv
from skillgym.episode import _collect, finish_trajectory
from skillgym.policies.base import Policy
from skillgym.types import Trajectory


@dataclass
class EpisodeState:
    """Filled in as the episode goes, so a caller whose episode failed or timed out can tell
    whether ``env.trajectory`` belongs to it (reset done) and how far it got."""

    reset_done: bool = False
    turns: int = 0
    observation: list | None = None  # the chat so far (the env copies it into its record only on step)


async def arun_episode(
    env: SkillEnv,
    policy: Policy,
    *,
    task_id: str,
    seed: int | None = None,
    max_steps: int | None = None,
    executor: Executor | None = None,
    state: EpisodeState | None = None,
) -> Trajectory:
    """Reset on ``task_id``, alternate ``await policy.aact`` and ``env.step`` (in ``executor``)
    until the episode ends, and return the completed trajectory, exactly as ``run_episode``."""
    loop = asyncio.get_running_loop()
    state = state if state is not None else EpisodeState()

    def blocking(fn: Any, *args: Any, **kwargs: Any) -> asyncio.Future:
        return loop.run_in_executor(executor, partial(fn, *args, **kwargs))

    observation, info = await blocking(env.reset, seed=seed, options={"task_id": task_id})
    state.reset_done, state.observation = True, observation
    # Policies may seed their own sampling from it (the env's seed is already in the record).
    info = {**info, "episode_seed": seed}
    policy.reset(observation, info)
    policy_seconds: list[float] = []
    extras: dict[str, list] = {"token_ids": [], "logprobs": []}
    usage = {"prompt_tokens": 0, "completion_tokens": 0}
    done = False
    for _ in range(max_steps or env.env_spec.max_turns):
        started = time.perf_counter()
        action = await policy.aact(observation, info)
        policy_seconds.append(time.perf_counter() - started)
        _collect(action, usage, extras)
        observation, _, terminated, truncated, _ = await blocking(env.step, action)
        state.turns, state.observation = state.turns + 1, observation
        if terminated or truncated:
            done = True
            break
    trajectory = env.trajectory
    if not done:
        trajectory.truncated = True
    return finish_trajectory(trajectory, policy, policy_seconds, usage, extras)
