"""The Ray backend: a few async actors, each owning its envs (and so its sandboxes) and running
many episodes at once, while the driver hands out keys and alone writes the store.

Each actor wraps the same :class:`EpisodeWorker` the local backend uses, so both backends
make the same records. The driver sends one key per call to the least-loaded actor; the
trajectory comes back as JSON as soon as its episode ends, so records stream into the store
and a dead actor costs only its in-flight episodes (Ray restarts it; the engine retries).
"""

from __future__ import annotations

import asyncio
import math
import os
import sys
from pathlib import Path
from typing import Any

from skillgym.rollouts.config import EnvRef, EpisodeKey, RolloutConfig
from skillgym.rollouts.worker import EpisodeWorker
from skillgym.types import Trajectory


class RolloutActor:
    """Lives in a Ray worker process (wrapped with ``ray.remote`` at start-up)."""

    def __init__(self, env_ref: dict[str, Any], policy_spec: str, size: int, timeout_s: float | None) -> None:
        self.worker = EpisodeWorker(EnvRef.model_validate(env_ref), policy_spec, size, timeout_s)

    async def ready(self, warm: int) -> int:
        """Build and start ``warm`` envs of this actor (so the first episodes do not wait for them)."""
        await self.worker.warm(warm)
        return os.getpid()

    async def run(self, key: dict[str, Any], seed: int, attempt: int) -> str:
        trajectory = await self.worker.run(EpisodeKey.model_validate(key), seed, attempt)
        return trajectory.model_dump_json()  # plain JSON: no pickled pydantic classes across processes

    async def close(self) -> None:
        await self.worker.aclose()


def _driver_paths() -> list[str]:
    """The driver's own source folders (not site-packages), so that a ``module:function`` env
    factory importable here is importable in the actors too."""
    paths = [os.getcwd()]
    for entry in sys.path:
        if entry and "site-packages" not in entry and "dist-packages" not in entry and Path(entry).is_dir():
            paths.append(str(Path(entry).resolve()))
    return list(dict.fromkeys(paths))


class RayBackend:
    def __init__(self, config: RolloutConfig) -> None:
        self.config = config
        self.actors: list[Any] = []
        self._load: list[int] = []
        self._started_ray = False

    async def start(self, episodes: int) -> None:
        import ray

        address = self.config.ray_address or os.environ.get("RAY_ADDRESS")
        if not ray.is_initialized() and address:
            # An existing cluster: no local-only options (CPUs, dashboard belong to the cluster). Workers
            # import skillgym from their own install; PYTHONPATH helps only where nodes share paths.
            existing = os.environ.get("PYTHONPATH", "")
            pythonpath = os.pathsep.join([*_driver_paths(), *([existing] if existing else [])])
            ray.init(
                address=address,
                log_to_driver=False,
                configure_logging=False,
                runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
            )
            self._started_ray = True
        if not ray.is_initialized():
            existing = os.environ.get("PYTHONPATH", "")
            pythonpath = os.pathsep.join([*_driver_paths(), *([existing] if existing else [])])
            # Small on purpose: rollouts wait on sandboxes and servers, not on local CPUs.
            ray.init(
                num_cpus=max(2, self.config.num_actors),
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
                runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
            )
            self._started_ray = True
        per_actor = math.ceil(self.config.concurrency / self.config.num_actors)
        actor_cls = ray.remote(RolloutActor)
        env_ref = EnvRef(env=self.config.env, env_kwargs=self.config.env_kwargs).model_dump(mode="json")
        # Round-robin over the cluster's live nodes, so actors (and the sandboxes their envs start on
        # their own node) spread out. Hard affinity: with SPREAD or soft affinity Ray put every
        # zero-CPU actor on the head node (ray 2.60); the cost is that an actor whose node dies is
        # not restarted elsewhere.
        nodes = sorted(n["NodeID"] for n in ray.nodes() if n.get("Alive"))

        def placement(i: int) -> Any:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            return NodeAffinitySchedulingStrategy(nodes[i % len(nodes)], soft=False) if len(nodes) > 1 else "DEFAULT"

        self.actors = [
            actor_cls.options(
                max_concurrency=per_actor + 4, max_restarts=3, num_cpus=0, scheduling_strategy=placement(i)
            ).remote(env_ref, self.config.policy, per_actor, self.config.episode_timeout_s)
            for i in range(self.config.num_actors)
        ]
        self._load = [0] * len(self.actors)
        warm = min(per_actor, math.ceil(episodes / len(self.actors)))
        await asyncio.gather(*(actor.ready.remote(warm) for actor in self.actors))

    async def run(self, key: EpisodeKey, seed: int, attempt: int) -> Trajectory:
        index = min(range(len(self.actors)), key=self._load.__getitem__)
        self._load[index] += 1
        try:
            data = await self.actors[index].run.remote(key.model_dump(), seed, attempt)
        finally:
            self._load[index] -= 1
        return Trajectory.model_validate_json(data)

    async def close(self) -> None:
        import ray

        try:
            await asyncio.wait_for(asyncio.gather(*(a.close.remote() for a in self.actors), return_exceptions=True), 60)
        except TimeoutError:
            pass  # killing them below closes their sandboxes' processes too
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        if self._started_ray:
            ray.shutdown()
