"""Export a run's trajectories as an SFT dataset (``skillgym export``).

    from skillgym.rollouts.export import ExportConfig, export_dataset
    report = export_dataset(ExportConfig(run_dir=Path("runs/a"), out=Path("data/a"), min_reward=1.0))

The result is a ``datasets.DatasetDict`` saved with ``save_to_disk`` (``train`` and, with a
validation fraction, ``validation``), in the conversational format TRL's ``SFTTrainer``
reads: a ``messages`` column (OpenAI format: assistant ``tool_calls`` with JSON-string
``arguments``, ``tool`` messages) and a ``tools`` column. ``tools`` is a JSON string, which
TRL 1.16 accepts (``json.loads`` in ``SFTTrainer``'s tokenization) and which Arrow keeps
byte-exact: stored as a list of structs, schemas of different tools would be merged into one
struct type and every schema would come back padded with the other tools' keys set to None.
For the same reason a tool call's ``arguments`` stays the JSON string the trajectory holds.
Metadata columns (task id, reward, env, policy) ride along; ``stats.json`` and a reward
histogram (``reward_histogram.png``) are written next to the data.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from skillgym.rollouts.children import child_records
from skillgym.rollouts.manifest import read_manifest
from skillgym.rollouts.store import iter_trajectories, shard_paths
from skillgym.types import Message, Trajectory

MESSAGE_KEYS = ("role", "content", "reasoning_content", "tool_calls", "tool_call_id", "name")


class ExportConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_dir: Path
    out: Path
    min_reward: float = Field(default=1.0, description="Keep episodes whose reward is at least this.")
    max_turns: int | None = Field(default=None, ge=1, description="Drop episodes with more assistant turns.")
    dedupe: bool = Field(default=False, description="Drop near-duplicate conversations (MinHash).")
    dedupe_threshold: float = Field(
        default=0.9, gt=0, le=1, description="Estimated Jaccard similarity that counts as a duplicate."
    )
    val_fraction: float = Field(
        default=0.0, ge=0, lt=1, description="Share of tasks (not rows) held out for validation."
    )
    tools: Literal["all", "used"] = Field(
        default="all", description="Offer every tool schema, or only those the episode called."
    )
    keep_truncated: bool = Field(default=False, description="Keep episodes cut off by the turn or token budget.")
    children: str | None = Field(
        default=None,
        description="Export the calls orchestrators made to this roster entry (their child trajectories), "
        "not the orchestrator episodes themselves.",
    )
    ungraded: Literal["parent", "drop"] = Field(
        default="parent",
        description="With children: a call with no grade of its own takes its orchestrator episode's reward "
        "(parent) or is left out (drop).",
    )
    seed: int = 0
    overwrite: bool = False


class ExportReport(BaseModel):
    out: str
    records: int
    kept: int
    rows: dict[str, int]
    tasks: dict[str, int]
    rejected: dict[str, int]
    stats_path: str
    histogram_path: str | None


def sft_messages(trajectory: Trajectory) -> list[Message]:
    """The conversation in the OpenAI format, with exactly the keys the dataset schema has."""
    out: list[Message] = []
    for message in trajectory.messages:
        row: Message = {key: None for key in MESSAGE_KEYS}
        row["role"] = message.get("role")
        content = message.get("content")
        row["content"] = content if isinstance(content, str) else ("" if content is None else json.dumps(content))
        if isinstance(message.get("reasoning_content"), str):
            row["reasoning_content"] = message["reasoning_content"]
        if message.get("tool_calls"):
            row["tool_calls"] = [_tool_call(call) for call in message["tool_calls"]]
        for key in ("tool_call_id", "name"):
            if message.get(key) is not None:
                row[key] = str(message[key])
        out.append(row)
    return out


def _tool_call(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    arguments = function.get("arguments")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments if arguments is not None else {}, ensure_ascii=False)
    return {
        "id": call.get("id"),
        "type": call.get("type") or "function",
        "function": {"name": function.get("name"), "arguments": arguments},
    }


def used_tool_names(trajectory: Trajectory) -> set[str]:
    return {
        (call.get("function") or {}).get("name")
        for m in trajectory.messages
        if m.get("role") == "assistant"
        for call in m.get("tool_calls") or []
    }


def dataset_features() -> Any:
    from datasets import Features, List, Value

    call = {
        "id": Value("string"),
        "type": Value("string"),
        "function": {"name": Value("string"), "arguments": Value("string")},
    }
    message = {key: Value("string") for key in MESSAGE_KEYS if key != "tool_calls"} | {"tool_calls": List(call)}
    return Features(
        {
            "messages": List(message),
            "tools": Value("string"),
            "task_id": Value("string"),
            "sample_index": Value("int32"),
            "reward": Value("float64"),
            "num_turns": Value("int32"),
            "env_id": Value("string"),
            "env_version": Value("int32"),
            "skill_hash": Value("string"),
            "policy_id": Value("string"),
        }
    )


def to_row(trajectory: Trajectory, tools: Literal["all", "used"]) -> dict[str, Any]:
    schemas = trajectory.tools
    if tools == "used":
        used = used_tool_names(trajectory)
        schemas = [s for s in schemas if (s.get("function") or {}).get("name") in used]
    return {
        "messages": sft_messages(trajectory),
        "tools": json.dumps(schemas, ensure_ascii=False),
        "task_id": trajectory.task_id,
        "sample_index": trajectory.sample_index,
        "reward": trajectory.reward,
        "num_turns": trajectory.num_turns,
        "env_id": trajectory.env_id,
        "env_version": trajectory.env_version,
        "skill_hash": trajectory.skill_hash,
        "policy_id": trajectory.policy_id,
    }


def rejection(trajectory: Trajectory, config: ExportConfig) -> str | None:
    """Why a record is left out (the key of stats.json's ``rejected``), or None to keep it."""
    if trajectory.status != "ok":
        return "failed"
    if not any(m.get("role") == "assistant" for m in trajectory.messages):
        return "no_assistant_turn"
    if trajectory.truncated and not config.keep_truncated:
        return "truncated"
    if trajectory.reward is None or trajectory.reward < config.min_reward:
        return "below_min_reward"
    if config.max_turns is not None and trajectory.num_turns > config.max_turns:
        return "too_many_turns"
    return None


def split_tasks(task_ids: list[str], val_fraction: float, seed: int) -> set[str]:
    """The task ids held out for validation: whole tasks, so no task is in both splits."""
    tasks = sorted(set(task_ids))
    if val_fraction <= 0 or len(tasks) < 2:
        return set()
    random.Random(seed).shuffle(tasks)
    n_val = min(len(tasks) - 1, max(1, round(val_fraction * len(tasks))))
    return set(tasks[:n_val])


def export_dataset(config: ExportConfig) -> ExportReport:
    """Filter, convert, split and save; raises ``FileExistsError`` / ``FileNotFoundError`` with
    what to do when ``out`` exists (without ``overwrite``) or ``run_dir`` holds no records."""
    from datasets import Dataset, DatasetDict

    from skillgym.rollouts.export_stats import build_stats, near_duplicates, write_histogram

    if not shard_paths(config.run_dir):
        raise FileNotFoundError(
            f"{config.run_dir} holds no trajectories (no trajectories/shard-*.jsonl); run `skillgym rollout` first"
        )
    if config.out.exists() and not config.overwrite:
        raise FileExistsError(f"{config.out} exists; pick another --out or pass --overwrite")
    manifest = read_manifest(config.run_dir)

    records = list(iter_trajectories(config.run_dir))
    if config.children is not None:
        records = child_records(records, config.children, ungraded=config.ungraded)
        if not records:
            raise ValueError(f"{config.run_dir} holds no finished calls to subagent {config.children!r}")
    records.sort(key=lambda t: (t.task_id, t.sample_index))
    rejected: Counter[str] = Counter()
    kept: list[Trajectory] = []
    for trajectory in records:
        reason = rejection(trajectory, config)
        if reason is None:
            kept.append(trajectory)
        else:
            rejected[reason] += 1
    if config.dedupe:
        duplicates = near_duplicates([sft_messages(t) for t in kept], config.dedupe_threshold, config.seed)
        rejected["near_duplicate"] += len(duplicates)
        kept = [t for i, t in enumerate(kept) if i not in duplicates]

    val_tasks = split_tasks([t.task_id for t in kept], config.val_fraction, config.seed)
    rows: dict[str, list[dict[str, Any]]] = {"train": [], "validation": []}
    for trajectory in kept:
        rows["validation" if trajectory.task_id in val_tasks else "train"].append(to_row(trajectory, config.tools))
    features = dataset_features()
    names = ["train", "validation"] if config.val_fraction > 0 else ["train"]
    data = DatasetDict({name: Dataset.from_list(rows[name], features=features) for name in names})

    tmp = config.out.with_name(f".{config.out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    _save_quietly(data, tmp)
    histogram = write_histogram(records, kept, tmp / "reward_histogram.png", config.min_reward)
    stats = build_stats(config, manifest, records, rows, dict(rejected), histogram is not None)
    (tmp / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    _replace_dir(tmp, config.out)
    return ExportReport(
        out=str(config.out),
        records=len(records),
        kept=len(kept),
        rows={name: len(rows[name]) for name in names},
        tasks={name: len({r["task_id"] for r in rows[name]}) for name in names},
        rejected=dict(rejected),
        stats_path=str(config.out / "stats.json"),
        histogram_path=str(config.out / "reward_histogram.png") if histogram else None,
    )


def _save_quietly(data: Any, path: Path) -> None:
    """save_to_disk without its tqdm bars: library code does not print (the CLI shows progress)."""
    from datasets.utils import logging as ds_logging

    was_enabled = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        data.save_to_disk(str(path))
    finally:
        if was_enabled:
            ds_logging.enable_progress_bar()


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished export into place: readers never see a half-written dataset."""
    out.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.{os.getpid()}.old")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
