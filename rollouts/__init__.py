"""The rollout engine: run a policy on an env's tasks at scale, durably, and turn the result
into an SFT dataset.

    from skillgym.rollouts import RolloutConfig, run_rollouts, export_dataset
"""

from skillgym.episode import arun_episode  # the core driver, re-exported for rollout users
from skillgym.rollouts.config import EpisodeKey, RolloutConfig, RolloutProgress, RolloutSummary, episode_seed
from skillgym.rollouts.engine import arun_rollouts, run_rollouts
from skillgym.rollouts.manifest import ManifestMismatch, RunManifest, read_manifest
from skillgym.rollouts.store import StoreError, TrajectoryStore, iter_trajectories

__all__ = [
    "EpisodeKey",
    "ManifestMismatch",
    "RolloutConfig",
    "RolloutProgress",
    "RolloutSummary",
    "RunManifest",
    "StoreError",
    "TrajectoryStore",
    "arun_episode",
    "arun_rollouts",
    "episode_seed",
    "iter_trajectories",
    "read_manifest",
    "run_rollouts",
]
