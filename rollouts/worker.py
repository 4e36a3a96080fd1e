"""EpisodeWorker: runs episodes concurrently on one event loop, over a pool of env slots.

A slot is one env (with its own sandbox, started on first use and reset between episodes)
and a policy. Scripted policies (``expert``, ``random``) keep per-episode state, so each slot
gets its own; model-backed ones (``openai:``, ``hf:``) are built once per worker and shared
by every slot: they are made to serve concurrent episodes (one HTTP connection pool, one
model in memory), and one model loaded per slot would not fit. Slots are made lazily (or by
:meth:`EpisodeWorker.warm`), up to ``size``, and reused; a slot whose episode failed is
thrown away, because after a sandbox error or a timeout its state is unknown. The same class serves the local backend (in the
driver's loop) and each Ray actor (in the actor's loop), so both give the same records.

``run`` never raises for an episode's failure: it returns a ``status="failed"`` trajectory
with the error, and the engine decides whether to try again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from skillgym.env import seen_skill_hash
from skillgym.episode import EpisodeState, arun_episode
from skillgym.policies.base import Policy
from skillgym.rollouts.config import EnvRef, EpisodeKey
from skillgym.types import Trajectory

log = logging.getLogger(__name__)


SHARED_POLICY_KINDS = frozenset({"openai", "hf"})


@dataclass
class Slot:
    env: Any
    policy: Policy
    shared_policy: bool = False


def policy_is_shared(spec: str) -> bool:
    from skillgym.policies.spec import parse_policy_spec

    return parse_policy_spec(spec).kind in SHARED_POLICY_KINDS


def make_policy_for(spec: str, env: Any) -> Policy:
    from skillgym.policies.spec import make_policy

    return make_policy(spec, env)


class EpisodeWorker:
    def __init__(self, env_ref: EnvRef, policy_spec: str, size: int, timeout_s: float | None = None) -> None:
        if size < 1:
            raise ValueError(f"a worker needs at least one slot, got size={size}")
        self.env_ref = env_ref
        self.policy_spec = policy_spec
        self.size = size
        self.timeout_s = timeout_s
        # Blocking env work (reset, step, building envs) runs here: one thread per slot, so a
        # slow sandbox call never queues behind another episode's.
        self.executor = ThreadPoolExecutor(max_workers=size + 2, thread_name_prefix="skillgym-env")
        self._idle: list[Slot] = []
        self._slots: asyncio.Semaphore | None = None
        self._share = policy_is_shared(policy_spec)
        self._shared: Policy | None = None
        self._shared_lock: asyncio.Lock | None = None
        self._host = f"{socket.gethostname()}:{os.getpid()}"

    async def run(self, key: EpisodeKey, seed: int, attempt: int = 1) -> Trajectory:
        """One attempt at one episode: a finished trajectory, or a failed one saying why."""
        if self._slots is None:  # created here: it must belong to the loop that runs us
            self._slots = asyncio.Semaphore(self.size)
            # Sync policies' aact() defaults to asyncio.to_thread; give it room for every slot.
            asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=self.size + 4))
        async with self._slots:
            started = time.perf_counter()
            state = EpisodeState()
            slot: Slot | None = None
            try:
                slot = await self._acquire()
                episode = arun_episode(
                    slot.env, slot.policy, task_id=key.task_id, seed=seed, executor=self.executor, state=state
                )
                trajectory = await asyncio.wait_for(episode, self.timeout_s)
            except Exception as exc:  # the episode failed; the run goes on
                trajectory = self._failed(key, seed, slot, state, exc)
                self._discard(slot)
            else:
                self._idle.append(slot)
            trajectory.sample_index = key.sample_index
            trajectory.metadata["rollout"] = {
                "attempt": attempt,
                "wall_s": round(time.perf_counter() - started, 6),
                "worker": self._host,
            }
            return trajectory

    async def warm(self, count: int | None = None) -> int:
        """Build ``count`` slots (default: all) and start their sandboxes now, concurrently, so
        the first episodes do not pay for it. Returns how many slots are idle.

        A policy with an ``awarm(concurrency)`` coroutine is warmed too (an HTTP policy opens
        this loop's clients: imports, TLS context), for the same reason.
        """
        missing = min(self.size, self.size if count is None else count) - len(self._idle)
        slots = await asyncio.gather(*(self._new_slot(start_sandbox=True) for _ in range(max(0, missing))))
        self._idle.extend(slots)
        policies = {id(slot.policy): slot.policy for slot in self._idle}.values()
        for policy in policies:
            awarm = getattr(policy, "awarm", None)
            if awarm is not None:
                try:
                    await awarm(len(self._idle))
                except Exception as exc:  # a warm-up is an optimization: the episodes report real failures
                    log.debug("warming the policy failed: %s", exc)
        return len(self._idle)

    async def _acquire(self) -> Slot:
        if self._idle:
            return self._idle.pop()
        return await self._new_slot()

    async def _new_slot(self, start_sandbox: bool = False) -> Slot:
        loop = asyncio.get_running_loop()
        env = await loop.run_in_executor(self.executor, self._build_env, start_sandbox)
        try:
            if self._share:
                return Slot(env, await self._shared_policy(env), shared_policy=True)
            return Slot(env, make_policy_for(self.policy_spec, env))
        except Exception:
            await loop.run_in_executor(self.executor, env.close)
            raise

    async def _shared_policy(self, env: Any) -> Policy:
        if self._shared_lock is None:
            self._shared_lock = asyncio.Lock()
        async with self._shared_lock:  # concurrent warm-up must not load a model twice
            if self._shared is None:
                loop = asyncio.get_running_loop()
                self._shared = await loop.run_in_executor(self.executor, make_policy_for, self.policy_spec, env)
        return self._shared

    def _build_env(self, start_sandbox: bool) -> Any:
        env = self.env_ref.build()
        if start_sandbox and hasattr(env, "sandbox"):
            env.sandbox  # noqa: B018  (the property starts it; reset() would otherwise on first use)
        return env

    def _failed(
        self, key: EpisodeKey, seed: int, slot: Slot | None, state: EpisodeState, exc: BaseException
    ) -> Trajectory:
        if isinstance(exc, TimeoutError):
            error = f"TimeoutError: the episode took longer than {self.timeout_s} s (turn {state.turns + 1})"
        else:
            error = f"{type(exc).__name__}: {exc}"
        log.warning("episode %s/%d failed: %s", key.task_id, key.sample_index, error)
        partial: Trajectory | None = None
        if slot is not None and state.reset_done:
            try:  # keep what the episode got to: it says where it broke
                partial = slot.env.trajectory
            except Exception:
                partial = None
        spec = getattr(slot.env, "env_spec", None) if slot is not None else None
        return Trajectory.failed(
            error,
            env_id=spec.id if spec is not None else self.env_ref.env,
            env_version=spec.version if spec is not None else 0,
            task_id=key.task_id,
            skill_hash=seen_skill_hash(spec) if spec is not None else None,
            policy_id=slot.policy.policy_id if slot is not None else self.policy_spec,
            seed=seed,
            sample_index=key.sample_index,
            partial=partial,
            metadata={"traceback": "".join(traceback.format_exception(exc))[-4000:]},
        )

    def _discard(self, slot: Slot | None) -> None:
        """Close a slot whose state is unknown, off the loop (its env may still be mid-step)."""
        if slot is None:
            return

        closers = [slot.env.close] if slot.shared_policy else [slot.policy.close, slot.env.close]

        def close() -> None:
            for closer in closers:
                try:
                    closer()
                except Exception as exc:  # closing a broken env may fail; the slot is gone anyway
                    log.debug("closing a failed slot: %s", exc)

        self.executor.submit(close)

    async def aclose(self) -> None:
        """Close every idle slot and the shared policy (its async clients belong to this loop)."""
        aclose = getattr(self._shared, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except Exception as exc:
                log.debug("closing the shared policy's async clients: %s", exc)
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def close(self) -> None:
        """Close every idle slot and the shared policy, and wait for running env work to end."""
        idle, self._idle = self._idle, []
        closers = [
            c
            for slot in idle
            for c in ([slot.env.close] if slot.shared_policy else [slot.policy.close, slot.env.close])
        ]
        if self._shared is not None:
            closers.append(self._shared.close)
            self._shared = None
        for closer in closers:
            try:
                closer()
            except Exception as exc:
                log.debug("closing a slot: %s", exc)
        self.executor.shutdown(wait=True, cancel_futures=True)
