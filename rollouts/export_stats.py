"""The parts of an export that look across records: near-duplicate detection (MinHash) and the
stats report (``stats.json`` and the reward histogram PNG)."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from skillgym.types import Message, Trajectory

SHINGLE_WORDS = 5
NUM_PERM = 128


def conversation_text(messages: list[Message]) -> str:
    """Everything but the system prompt (the same in every episode, it would make all alike)."""
    parts = []
    for m in messages:
        if m.get("role") == "system":
            continue
        parts.append(m.get("content") or "")
        for call in m.get("tool_calls") or []:
            parts.append(f"{call['function']['name']} {call['function']['arguments']}")
    return "\n".join(parts)


def near_duplicates(conversations: list[list[Message]], threshold: float, seed: int = 0) -> set[int]:
    """Indices of conversations that nearly repeat an earlier one (estimated Jaccard similarity
    of word 5-gram shingles at least ``threshold``); the first of each group is kept."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
    dropped: set[int] = set()
    for index, messages in enumerate(conversations):
        words = conversation_text(messages).split()
        shingles = {" ".join(words[i : i + SHINGLE_WORDS]) for i in range(max(1, len(words) - SHINGLE_WORDS + 1))}
        signature = MinHash(num_perm=NUM_PERM, seed=seed)
        signature.update_batch([s.encode() for s in shingles])
        if lsh.query(signature):
            dropped.add(index)
        else:
            lsh.insert(str(index), signature)
    return dropped


def _summary(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    return {
        "min": ordered[0],
        "mean": round(statistics.fmean(ordered), 3),
        "p50": ordered[len(ordered) // 2],
        "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
        "max": ordered[-1],
    }


def _rendered_chars(row: dict[str, Any]) -> int:
    """Length of the conversation as the model trains on it (the Qwen3 training template)."""
    try:
        from skillgym.chat_template import render

        return len(render(row["messages"], json.loads(row["tools"]), training=True))
    except Exception:  # stats must not fail an export: fall back to the raw text length
        return sum(len(m.get("content") or "") for m in row["messages"])


def reward_histogram(values: list[float], bins: int = 10) -> dict[str, list[float]]:
    edges = [round(i / bins, 4) for i in range(bins + 1)]
    counts = [0] * bins
    for value in values:
        counts[min(bins - 1, max(0, int(value * bins)))] += 1
    return {"edges": edges, "counts": counts}


def build_stats(
    config: Any,
    manifest: Any,
    records: list[Trajectory],
    rows: dict[str, list[dict[str, Any]]],
    rejected: dict[str, int],
    has_histogram: bool,
) -> dict[str, Any]:
    all_rows = [r for split in rows.values() for r in split]
    turns = [r["num_turns"] for r in all_rows]
    tool_calls: Counter[str] = Counter(
        call["function"]["name"] for r in all_rows for m in r["messages"] for call in m.get("tool_calls") or []
    )
    ok_rewards = [t.reward for t in records if t.status == "ok" and t.reward is not None]
    return {
        "run_dir": str(config.run_dir),
        "config": config.model_dump(mode="json"),
        "source": None
        if manifest is None
        else {
            "env_id": manifest.env_id,
            "env_version": manifest.env_version,
            "skill_hash": manifest.skill_hash,
            "policy": manifest.policy,
            "git_revision": manifest.git_revision,
        },
        "records": len(records),
        "failed_records": sum(1 for t in records if t.status != "ok"),
        "kept": len(all_rows),
        # The skill texts behind the kept rows: a trained model's card names them.
        "skill_hashes": sorted({r["skill_hash"] for r in all_rows if r.get("skill_hash")}),
        "rejected": rejected,
        "splits": {
            name: {"rows": len(split), "tasks": len({r["task_id"] for r in split})} for name, split in rows.items()
        },
        "turns": {**(_summary([float(t) for t in turns]) or {}), "histogram": dict(sorted(Counter(turns).items()))},
        "messages_per_conversation": _summary([float(len(r["messages"])) for r in all_rows]),
        "rendered_chars": _summary([float(_rendered_chars(r)) for r in all_rows]),
        "tool_calls": {"total": sum(tool_calls.values()), "by_tool": dict(tool_calls.most_common())},
        "reward": {
            "all_ok_records": _summary(ok_rewards),
            "kept": _summary([r["reward"] for r in all_rows]),
            "histogram_all_ok_records": reward_histogram(ok_rewards),
        },
        "reward_histogram_png": "reward_histogram.png" if has_histogram else None,
    }


def write_histogram(records: list[Trajectory], kept: list[Trajectory], path: Path, min_reward: float) -> Path | None:
    """A PNG of the reward distribution: every ok record, and the kept ones over it."""
    ok = [t.reward for t in records if t.status == "ok" and t.reward is not None]
    if not ok:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only: never open a window, never need a display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = [i / 20 for i in range(21)]
    ax.hist(ok, bins=bins, color="#b0b0b0", label=f"all ok episodes ({len(ok)})")
    ax.hist([t.reward for t in kept], bins=bins, color="#2f6db5", label=f"exported ({len(kept)})")
    ax.axvline(min_reward, color="#c0392b", linestyle="--", linewidth=1, label=f"min reward {min_reward:g}")
    ax.set_xlabel("reward")
    ax.set_ylabel("episodes")
    ax.set_xlim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
