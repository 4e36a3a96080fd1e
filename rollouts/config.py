"""The records of a rollout run: what to run (:class:`RolloutConfig`), which episode is which
(:class:`EpisodeKey`), how far along it is (:class:`RolloutProgress`) and how it ended
(:class:`RolloutSummary`)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class EnvSelection(BaseModel):
    """Which env a run uses: shared by every stage config (rollout, eval, distill)."""

    env: str = Field(description="A registered env id (codebase-explorer-v0), skill:<name>, or 'module:function'.")
    env_kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for the env factory.")


class RunOptions(BaseModel):
    """How a run executes and where it writes: shared by every stage config."""

    concurrency: int = Field(default=8, ge=1, description="Episodes in flight at once, over all actors.")
    backend: Literal["local", "ray"] = Field(
        default="local", description="Rollout backend: one process, or Ray actors."
    )
    ray_address: str | None = Field(
        default=None, description="Ray cluster to join (ray backend); None: $RAY_ADDRESS if set, else a local Ray."
    )
    seed: int = 0
    out: Path = Field(description="Output folder; running again with the same config resumes it.")


class RolloutConfig(RunOptions, EnvSelection):
    """Everything one ``skillgym rollout`` needs.

    The fields in :meth:`identity` decide which records a run produces; a run directory
    accepts only a config with the same identity (see ``rollouts/manifest.py``). Backend,
    concurrency and actor count change how fast the records come, not what they are.
    """

    model_config = ConfigDict(extra="forbid")

    policy: str = Field(default="expert", description="Policy spec, as every CLI command reads it.")
    split: str = "train"
    n_tasks: int | None = Field(default=None, ge=1, description="The first N tasks of the split; None: all.")
    samples: int = Field(default=1, ge=1, description="Episodes per task (sample_index 0..samples-1).")
    num_actors: int = Field(default=2, ge=1, description="Ray actors (ray backend only).")
    max_attempts: int = Field(default=2, ge=1, description="Tries per episode before it is recorded as failed.")
    episode_timeout_s: float | None = Field(default=900.0, gt=0, description="Wall-time limit of one attempt.")
    retry_backoff_s: float = Field(default=0.5, ge=0, description="Pause before retry n is n times this.")

    def identity(self) -> dict[str, Any]:
        """The fields that decide the records (compared when resuming)."""
        return self.model_dump(
            mode="json", include={"env", "env_kwargs", "policy", "split", "n_tasks", "samples", "seed"}
        )


class EpisodeKey(BaseModel):
    """One episode of a run: the store holds exactly one record per key."""

    model_config = ConfigDict(frozen=True)

    task_id: str
    sample_index: int = Field(ge=0)

    def as_tuple(self) -> tuple[str, int]:
        return (self.task_id, self.sample_index)


def episode_seed(run_seed: int, key: EpisodeKey) -> int:
    """A stable 31-bit seed from (run seed, task, sample): the same on every backend and machine
    (Python's ``hash`` is salted per process, so it cannot be used here)."""
    digest = hashlib.sha256(f"{run_seed}\x00{key.task_id}\x00{key.sample_index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


class EnvRef(BaseModel):
    """How to build a fresh env anywhere (the driver, a thread, a Ray actor): picklable on purpose."""

    env: str
    env_kwargs: dict[str, Any] = Field(default_factory=dict)

    def build(self) -> Any:
        """A new SkillEnv: ``skillgym.make`` takes every id form (``name-vN``, ``skill:NAME``,
        ``module:function``)."""
        import skillgym

        return skillgym.make(self.env, **self.env_kwargs)


class RolloutProgress(BaseModel):
    """A snapshot handed to the progress callback after every finished episode."""

    total: int = Field(description="Episodes the run covers, including those already in the store.")
    already_done: int = Field(default=0, description="Found in the store when the run started.")
    completed: int = 0
    failed: int = 0
    reward_sum: float = 0.0
    turns: int = 0
    tokens: int = 0
    retries: int = 0
    elapsed_s: float = 0.0

    @property
    def finished(self) -> int:
        """Episodes finished in this invocation (ok or failed)."""
        return self.completed + self.failed

    @property
    def mean_reward(self) -> float | None:
        return self.reward_sum / self.completed if self.completed else None

    @property
    def episodes_per_s(self) -> float:
        return self.finished / self.elapsed_s if self.elapsed_s > 0 else 0.0


class RolloutSummary(BaseModel):
    """How a run ended (also written to ``OUT/summary.json``)."""

    out: str
    env_id: str
    policy: str
    backend: str
    total: int = Field(description="Episodes (task, sample) the run covers.")
    records: int = Field(description="Of those, how many the store now holds (ok or failed).")
    failed_records: int = Field(description="Of the stored ones, how many failed.")
    already_done: int = Field(description="Found in the store when this invocation started.")
    completed: int = Field(description="Finished ok in this invocation.")
    failed: int = Field(description="Recorded as failed in this invocation.")
    retries: int
    mean_reward: float | None = Field(description="Over every ok record of the run.")
    turns: int
    tokens: int
    wall_s: float
    episodes_per_s: float
    turns_per_s: float
    rewards_by_task: dict[str, float] = Field(
        default_factory=dict, description="Mean reward of each task's ok episodes, over the whole store."
    )
    errors: list[str] = Field(default_factory=list, description="Up to ten distinct errors of failed episodes.")
