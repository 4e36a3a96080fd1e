"""The subagent calls orchestrators made, as training data for the subagent.

The prompts an orchestrator writes differ from hand-made tasks. :func:`child_records` takes
the calls to one roster entry out of orchestrator trajectories (their ``children``) and makes
each a standalone record of the subagent's env, so ``skillgym export RUN --children NAME``
turns them into SFT rows for that subagent (or ``skillgym orchestrate children RUN --name
NAME --out DIR`` keeps them as a run of their own): Part 2's calls go back into Part 1. It
lives with the export, not the orchestrator, because it reads only stored trajectory trees.

Rewards. A call whose prompt was one of the subagent env's own tasks carries its own grade. A
call the orchestrator wrote itself has none; ``ungraded="parent"`` gives it the reward of the
orchestrator episode it served (did the task succeed with this answer?), recorded as
``metadata["reward_source"] = "parent"``; ``"drop"`` leaves such calls out.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from skillgym.rollouts.store import TrajectoryStore, iter_trajectories, shard_paths
from skillgym.types import Trajectory

__all__ = ["child_records", "read_trajectories", "write_child_run"]


def read_trajectories(source: str | Path) -> list[Trajectory]:
    """Trajectories from a run directory (``skillgym rollout``'s store) or a JSONL file."""
    path = Path(source)
    if path.is_dir():
        if not shard_paths(path):
            raise FileNotFoundError(f"{path} holds no trajectories (no trajectories/shard-*.jsonl)")
        return list(iter_trajectories(path))
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: give a run directory or a JSONL file of trajectories")
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                out.append(Trajectory.model_validate_json(line))
            except ValueError as exc:
                raise ValueError(f"{path}:{lineno}: not a trajectory: {exc}") from None
    return out


def child_records(
    trajectories: Iterable[Trajectory], name: str, *, ungraded: Literal["parent", "drop"] = "parent"
) -> list[Trajectory]:
    """The calls to subagent ``name`` (at any depth) as standalone records.

    Args:
        trajectories: Orchestrator trajectories.
        name: The roster entry whose calls to keep.
        ungraded: ``parent`` (an ungraded call takes its orchestrator episode's reward) or
            ``drop``.

    Returns:
        One record per call that finished (failed calls and timeouts are left out), with
        ``sample_index`` counting calls that share a task id, and ``metadata`` naming the
        parent episode (``parent_task_id``, ``parent_policy_id``, ``call_id``).
    """
    out: list[Trajectory] = []
    seen: dict[str, int] = {}

    def visit(parent: Trajectory) -> None:
        for child in parent.children:
            visit(child)
            meta = child.metadata
            if meta.get("subagent") != name or child.status != "ok":
                continue
            record = child.model_copy(deep=True, update={"children": []})
            if record.reward is None or not meta.get("graded"):
                if ungraded == "drop" or parent.reward is None:
                    continue
                record.reward, record.metadata["reward_source"] = parent.reward, "parent"
            else:
                record.metadata["reward_source"] = "own"
            record.metadata.update(parent_task_id=parent.task_id, parent_policy_id=parent.policy_id)
            record.sample_index = seen.get(record.task_id, 0)
            seen[record.task_id] = record.sample_index + 1
            out.append(record)

    for trajectory in trajectories:
        visit(trajectory)
    return out


def write_child_run(records: Iterable[Trajectory], out: str | Path) -> int:
    """Append records to a run directory that ``skillgym export`` reads; returns how many were new."""
    written = 0
    with TrajectoryStore(Path(out)) as store:
        for record in records:
            written += store.append(record)
    return written
