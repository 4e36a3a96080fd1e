"""The episode driver: run one episode of a policy in an env and return its trajectory.

Every episode runs through :func:`arun_episode`: a rollout, an eval cell, a GRPO sample,
a subagent call nested inside an orchestrator's tool call. :func:`run_episode` is the
same coroutine driven without an event loop, for synchronous callers.

``env.reset`` and ``env.step`` block (sandbox round trips, graders). Run on an event loop
they would stall every other episode in flight (SkyRL PR #53), so :func:`arun_episode` runs
them in an executor while the policy's turn is awaited: one loop keeps hundreds of
episodes moving.

Who records what. The env assembles the trajectory: ``reset`` opens it (with the policy's
id), ``step`` adds each turn and its timing, and after each step the driver hands the
policy's side of that turn (seconds, usage, token ids, logprobs) to
:meth:`SkillEnv.record_policy_turn <skillgym.env.SkillEnv.record_policy_turn>`. The driver
adds nothing to the record itself; ``env.trajectory`` at the end is the result.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from typing import Any

from skillgym.env import SkillEnv
from skillgym.policies.base import Action, Policy
from skillgym.types import Message, Task, Trajectory

__all__ = ["EpisodeState", "arun_episode", "run_episode"]


@dataclass
class EpisodeState:
    """Filled in as the episode goes, so a caller whose episode failed or timed out can tell
    whether ``env.trajectory`` belongs to it (``reset_done``) and how far it got."""

    reset_done: bool = False
    turns: int = 0
    observation: list[Message] | None = None  # the chat as of the last completed reset/step


Blocking = Callable[..., Awaitable[Any]]


async def _drive(
    env: SkillEnv,
    act: Callable[[list[Message], dict[str, Any]], Awaitable[Action]],
    blocking: Blocking,
    policy: Policy,
    *,
    task: Task | dict[str, Any] | None,
    task_id: str | None,
    seed: int | None,
    max_steps: int | None,
    state: EpisodeState,
) -> Trajectory:
    """The one episode loop. ``act`` is the policy's turn and ``blocking(fn, *args)`` runs env
    work; the two drivers differ only in those two."""
    options: dict[str, Any] = {"policy_id": policy.policy_id}
    if task is not None:
        options["task"] = task
    elif task_id is not None:
        options["task_id"] = task_id
    observation, info = await blocking(env.reset, seed=seed, options=options)
    state.reset_done, state.observation = True, observation
    policy.reset(observation, info)
    limit = max_steps or env.env_spec.max_turns
    for _ in range(limit):
        started = time.perf_counter()
        action = await act(observation, info)
        seconds = time.perf_counter() - started
        observation, _, terminated, truncated, _ = await blocking(env.step, action)
        state.turns, state.observation = state.turns + 1, observation
        env.record_policy_turn(seconds, **_policy_extras(action))
        if terminated or truncated:
            break
    else:
        env.truncate(f"the driver's step limit of {limit} was reached")
    return env.trajectory


def _policy_extras(action: Action) -> dict[str, Any]:
    """What a policy reports beside its message (see :mod:`skillgym.policies.base`)."""
    if not isinstance(action, dict):
        return {}
    return {key: action.get(key) for key in ("usage", "token_ids", "logprobs")}


async def arun_episode(
    env: SkillEnv,
    policy: Policy,
    *,
    task: Task | dict[str, Any] | None = None,
    task_id: str | None = None,
    seed: int | None = None,
    max_steps: int | None = None,
    executor: Executor | None = None,
    state: EpisodeState | None = None,
) -> Trajectory:
    """Run one episode: reset, then alternate ``await policy.aact`` and ``env.step`` until the
    episode ends.

    Args:
        env: The env (its sandbox is started on the first reset and kept for the next episode).
        policy: Plays the assistant turns (``aact``).
        task: The task to run; or ``task_id``, one of the env's task ids; with neither, the
            env draws a task of its split with ``seed``.
        seed: Passed to ``env.reset``.
        max_steps: Turn limit of this run (default: the env's ``max_turns``); reaching it
            marks the trajectory truncated.
        executor: Where blocking env calls run (default: the loop's default executor).
        state: Filled in as the episode goes (see :class:`EpisodeState`).

    Returns:
        The episode's trajectory (a copy of ``env.trajectory``).
    """
    loop = asyncio.get_running_loop()

    def blocking(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Awaitable[Any]:
        return loop.run_in_executor(executor, partial(fn, *args, **kwargs))

    return await _drive(
        env,
        policy.aact,
        blocking,
        policy,
        task=task,
        task_id=task_id,
        seed=seed,
        max_steps=max_steps,
        state=state if state is not None else EpisodeState(),
    )


def run_episode(
    env: SkillEnv,
    policy: Policy,
    *,
    task: Task | dict[str, Any] | None = None,
    task_id: str | None = None,
    seed: int | None = None,
    max_steps: int | None = None,
    state: EpisodeState | None = None,
) -> Trajectory:
    """The synchronous face of :func:`arun_episode`: the same loop, with ``policy.act`` and
    env calls made directly in the calling thread.

    It needs no event loop, so it works anywhere a plain function does: a script, a worker
    thread, or inside a tool call of an episode that itself runs under :func:`arun_episode`.
    Arguments and result are those of :func:`arun_episode`.
    """

    async def act(observation: list[Message], info: dict[str, Any]) -> Action:
        return policy.act(observation, info)

    async def blocking(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    # Nothing in this coroutine ever suspends (``act`` and ``blocking`` return at once), so
    # one send() runs it to the end: no loop, no thread hop per call.
    coroutine = _drive(
        env,
        act,
        blocking,
        policy,
        task=task,
        task_id=task_id,
        seed=seed,
        max_steps=max_steps,
        state=state if state is not None else EpisodeState(),
    )
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("run_episode: the episode tried to wait on an event loop; use arun_episode")
