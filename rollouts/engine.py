"""run_rollouts: every (task, sample) episode of a config, once, into a resumable store.

    from skillgym.rollouts import RolloutConfig, run_rollouts
    summary = run_rollouts(RolloutConfig(env="codebase-explorer-v0", n_tasks=200, out=Path("runs/a")))

The driver owns the store and the schedule; a backend (local: one :class:`EpisodeWorker`
in this loop; ray: actors each owning one) only runs episodes. ``concurrency`` lanes pull
keys from one queue, so exactly that many episodes are in flight. An attempt that fails is
tried again up to ``max_attempts`` times, then its failed record is written: the store gets
one final record per key, and keys already in it are skipped, which makes re-running the
same command a resume.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from skillgym.env import seen_skill_hash
from skillgym.io import atomic_write_text
from skillgym.registry import make_spec
from skillgym.rollouts.config import EnvRef, EpisodeKey, RolloutConfig, RolloutProgress, RolloutSummary, episode_seed
from skillgym.rollouts.manifest import build_manifest, reconcile
from skillgym.rollouts.store import TrajectoryStore
from skillgym.rollouts.worker import EpisodeWorker
from skillgym.spec import EnvSpec
from skillgym.types import Task, Trajectory

ProgressCallback = Callable[[RolloutProgress], None]


class Backend(Protocol):
    async def start(self, episodes: int) -> None:
        """Get ready to run ``episodes`` episodes (build and warm what they need)."""

    async def run(self, key: EpisodeKey, seed: int, attempt: int) -> Trajectory: ...

    async def close(self) -> None: ...


class LocalBackend:
    """Episodes on this process's event loop; env work in the worker's thread pool."""

    def __init__(self, config: RolloutConfig) -> None:
        ref = EnvRef(env=config.env, env_kwargs=config.env_kwargs)
        self.worker = EpisodeWorker(ref, config.policy, config.concurrency, config.episode_timeout_s)

    async def start(self, episodes: int) -> None:
        await self.worker.warm(min(episodes, self.worker.size))

    async def run(self, key: EpisodeKey, seed: int, attempt: int) -> Trajectory:
        return await self.worker.run(key, seed, attempt)

    async def close(self) -> None:
        await self.worker.aclose()


def make_backend(config: RolloutConfig) -> Backend:
    if config.backend == "ray":
        from skillgym.rollouts.ray_backend import RayBackend

        return RayBackend(config)
    return LocalBackend(config)


def select_tasks(spec: EnvSpec, split: str, n_tasks: int | None) -> list[Task]:
    """The first ``n_tasks`` of ``split`` in the task source's stable order."""
    tasks = list(spec.tasks.tasks(split))
    if not tasks:
        raise ValueError(f"{spec.id} has no tasks in split {split!r}; pick another --split")
    if n_tasks is not None and n_tasks > len(tasks):
        raise ValueError(
            f"{spec.id} has {len(tasks)} tasks in split {split!r}, fewer than --tasks {n_tasks}; "
            f"ask for at most {len(tasks)}, or use --samples to run each task more than once"
        )
    return tasks[:n_tasks] if n_tasks is not None else tasks


def run_rollouts(
    config: RolloutConfig, progress_callback: ProgressCallback | None = None, *, force: bool = False
) -> RolloutSummary:
    """Run (or resume) ``config``; see :func:`arun_rollouts`."""
    return asyncio.run(arun_rollouts(config, progress_callback, force=force))


async def arun_rollouts(
    config: RolloutConfig, progress_callback: ProgressCallback | None = None, *, force: bool = False
) -> RolloutSummary:
    """Run every missing episode of ``config`` and write it to ``config.out``.

    Raises :class:`~skillgym.rollouts.manifest.ManifestMismatch` when ``config.out`` holds a
    run of another env, policy or config (unless ``force``), and
    :class:`~skillgym.rollouts.store.StoreError` when another process is writing there.
    """
    # The spec alone (tasks, skill, ids): reading it starts no sandbox.
    spec = await asyncio.to_thread(make_spec, config.env, **config.env_kwargs)
    tasks = select_tasks(spec, config.split, config.n_tasks)
    keys = [EpisodeKey(task_id=t.id, sample_index=s) for t in tasks for s in range(config.samples)]

    with TrajectoryStore(config.out) as store:
        reconcile(config.out, build_manifest(config, spec, [t.id for t in tasks]), force=force)
        todo = deque(k for k in keys if k.as_tuple() not in store)
        progress = RolloutProgress(total=len(keys), already_done=len(keys) - len(todo))
        errors: dict[str, None] = {}
        if progress_callback:
            progress_callback(progress.model_copy())
        started = time.perf_counter()
        if todo:
            backend = make_backend(config)
            await backend.start(len(todo))
            started = time.perf_counter()  # throughput counts episodes, not Ray's start-up

            async def lane() -> None:
                while todo:
                    key = todo.popleft()
                    trajectory = await _attempts(backend, config, spec, key, progress)
                    store.append(trajectory)
                    _account(progress, trajectory, errors)
                    progress.elapsed_s = time.perf_counter() - started
                    if progress_callback:
                        progress_callback(progress.model_copy())

            try:
                await asyncio.gather(*(lane() for _ in range(min(config.concurrency, len(todo)))))
                progress.elapsed_s = time.perf_counter() - started  # not counting the shutdown
            finally:
                await backend.close()
        summary = _summarize(config, spec.id, keys, store, progress, list(errors))
    atomic_write_text(config.out / "summary.json", summary.model_dump_json(indent=2) + "\n")
    return summary


async def _attempts(
    backend: Backend, config: RolloutConfig, spec: EnvSpec, key: EpisodeKey, progress: RolloutProgress
) -> Trajectory:
    """Up to ``max_attempts`` tries; the first ok trajectory, else the last failure."""
    seed = episode_seed(config.seed, key)
    trajectory: Trajectory | None = None
    for attempt in range(1, config.max_attempts + 1):
        if attempt > 1:
            progress.retries += 1
            await asyncio.sleep(config.retry_backoff_s * (attempt - 1))
        try:
            trajectory = await backend.run(key, seed, attempt)
        except Exception as exc:  # the backend itself broke (a Ray actor died): this attempt failed
            trajectory = Trajectory.failed(
                f"{type(exc).__name__}: {exc}",
                env_id=spec.id,
                env_version=spec.version,
                task_id=key.task_id,
                skill_hash=seen_skill_hash(spec),
                policy_id=config.policy,
                seed=seed,
                sample_index=key.sample_index,
                metadata={"rollout": {"attempt": attempt}},
            )
        if trajectory.status == "ok":
            break
    assert trajectory is not None
    trajectory.metadata.setdefault("rollout", {})["attempts"] = attempt
    return trajectory


def _account(progress: RolloutProgress, trajectory: Trajectory, errors: dict[str, None]) -> None:
    progress.turns += trajectory.num_turns
    progress.tokens += trajectory.usage.total_tokens
    if trajectory.status == "ok":
        progress.completed += 1
        progress.reward_sum += trajectory.reward or 0.0
    else:
        progress.failed += 1
        if len(errors) < 10:
            errors[(trajectory.error or "unknown error").splitlines()[0][:300]] = None


def _summarize(
    config: RolloutConfig,
    env_id: str,
    keys: list[EpisodeKey],
    store: TrajectoryStore,
    progress: RolloutProgress,
    errors: list[str],
) -> RolloutSummary:
    by_task: dict[str, list[float]] = {}
    records = failed = 0
    for key in keys:
        info = store.index.get(key.as_tuple())
        if info is None:
            continue
        records += 1
        if info.status == "ok":
            by_task.setdefault(key.task_id, []).append(info.reward or 0.0)
        else:
            failed += 1
    rewards = [r for values in by_task.values() for r in values]
    wall = progress.elapsed_s
    return RolloutSummary(
        out=str(config.out),
        env_id=env_id,
        policy=config.policy,
        backend=config.backend,
        total=len(keys),
        records=records,
        failed_records=failed,
        already_done=progress.already_done,
        completed=progress.completed,
        failed=progress.failed,
        retries=progress.retries,
        mean_reward=sum(rewards) / len(rewards) if rewards else None,
        turns=progress.turns,
        tokens=progress.tokens,
        wall_s=round(wall, 3),
        episodes_per_s=round(progress.finished / wall, 3) if wall > 0 else 0.0,
        turns_per_s=round(progress.turns / wall, 3) if wall > 0 else 0.0,
        rewards_by_task={task: sum(v) / len(v) for task, v in by_task.items()},
        errors=errors,
    )


__all__ = ["Backend", "LocalBackend", "arun_rollouts", "make_backend", "run_rollouts", "select_tasks"]
