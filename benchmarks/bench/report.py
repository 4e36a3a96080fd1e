"""``bench report``: one table per benchmark, baselines side by side, as Markdown, JSON and PNG.

Per baseline: score (mean reward) with a 95% bootstrap interval over tasks, the suite's
score components (HotpotQA's exact match and F1), tokens and estimated cost per model per
task, wall time p50/p95 of an orchestrator episode, subagent calls per task, routing accuracy
and failed episodes.

Tokens. A model behind an API reports its tokens; a scripted policy (the scripted router,
an env's expert) reports none. Those turns are counted with one reference tokenizer
(SmolLM2-135M's, when its converted folder is in the cache; else about four characters a token)
over the same chat a model would have read and written: per assistant turn, the conversation
before it as input and the turn as output. The report names the tokenizer and marks the rows
it counted. Cost = tokens x the roster's prices for that model.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from functools import lru_cache
from pathlib import Path
from typing import Any

from skillgym.orchestrator import Prices, load_roster, routing_accuracy
from skillgym.rollouts.metrics import bootstrap_ci
from skillgym.rollouts.store import iter_trajectories
from skillgym.types import Message, Trajectory

from .run import BenchRun, baseline_dir, read_bench_runs

__all__ = ["bench_table", "build_report", "reference_tokenizer", "write_report"]

APPROX = "approx-4-chars"


@lru_cache(maxsize=1)
def reference_tokenizer() -> tuple[str, Any]:
    """(name, tokenizer or None): SmolLM2-135M's tokenizer from the skillgym cache if present."""
    try:
        from tokenizers import Tokenizer

        from skillgym.cache import cache_root

        path = cache_root() / "models" / "smollm2-135m" / "tokenizer.json"
        if path.is_file():
            return "SmolLM2-135M tokenizer", Tokenizer.from_file(str(path))
    except Exception:  # a missing or unreadable tokenizer only changes how tokens are counted
        pass
    return APPROX, None


def _message_text(message: Message) -> str:
    parts = [str(message.get("role") or ""), str(message.get("content") or "")]
    for call in message.get("tool_calls") or []:
        parts.append(json.dumps(call.get("function", call), ensure_ascii=False, sort_keys=True))
    return "\n".join(parts)


def _count(texts: list[str]) -> int:
    name, tokenizer = reference_tokenizer()
    if tokenizer is None:
        return sum(max(1, len(t) // 4) for t in texts)
    return sum(len(e.ids) for e in tokenizer.encode_batch(texts))


def reference_usage(messages: list[Message]) -> tuple[int, int]:
    """(input, output) tokens of a chat counted with the reference tokenizer: per assistant
    turn, every message before it as input and the turn as output."""
    sizes = [_count([_message_text(m)]) for m in messages]
    prompt = completion = 0
    running = 0
    for message, size in zip(messages, sizes):
        if message.get("role") == "assistant":
            prompt += running
            completion += size
        running += size
    return prompt, completion


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _model_rows(trajs: list[Trajectory], record: BenchRun, played: dict[str, Any]) -> dict[str, dict[str, Any]]:
    roster = load_roster(played)
    prices = {s.name: s.prices for s in roster.subagents}
    orchestrator_prices = roster.orchestrator_prices
    rows: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0, "counted": False}
    )

    def add(label: str, usage: tuple[int, int], price: Prices, counted: bool) -> None:
        row = rows[label]
        row["calls"] += 1
        row["prompt_tokens"] += usage[0]
        row["completion_tokens"] += usage[1]
        row["cost_usd"] += (usage[0] * price.input_per_million + usage[1] * price.output_per_million) / 1e6
        row["counted"] = row["counted"] or counted

    def visit(children: list[Trajectory]) -> None:
        for child in children:
            meta = child.metadata
            label = f"{meta.get('subagent', '?')}: {meta.get('model') or child.policy_id}"
            estimated = meta.get("usage_source") == "estimated" or child.usage.total_tokens == 0
            usage = (
                reference_usage(child.messages)
                if estimated
                else (child.usage.prompt_tokens, child.usage.completion_tokens)
            )
            add(label, usage, prices.get(str(meta.get("subagent")), Prices()), estimated)
            visit(child.children)

    for traj in trajs:
        own_counted = traj.usage.total_tokens == 0
        usage = (
            reference_usage(traj.messages) if own_counted else (traj.usage.prompt_tokens, traj.usage.completion_tokens)
        )
        add(f"orchestrator: {record.orchestrator}", usage, orchestrator_prices, own_counted)
        visit(traj.children)
    n = max(len(trajs), 1)
    out = {}
    for label, row in rows.items():
        out[label] = {
            **row,
            "prompt_tokens_per_task": round(row["prompt_tokens"] / n, 1),
            "completion_tokens_per_task": round(row["completion_tokens"] / n, 1),
            "cost_usd_per_task": row["cost_usd"] / n,
        }
    return out


def _played_roster(folder: Path) -> dict[str, Any] | None:
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return None
    data = json.loads(manifest.read_text(encoding="utf-8"))
    return data.get("config", {}).get("env_kwargs", {}).get("roster")


def baseline_result(folder: Path, record: BenchRun, name: str) -> dict[str, Any]:
    """The row of one baseline (``folder`` is the bench folder)."""
    run_dir = baseline_dir(folder.parent, record.bench, name)
    played = _played_roster(run_dir)
    trajs = list(iter_trajectories(run_dir)) if played is not None else []
    if not trajs:
        return {"baseline": name, "tasks": 0, "note": "no records (not run yet)"}
    ok = [t for t in trajs if t.status == "ok"]
    rewards = [float(t.reward or 0.0) for t in trajs]  # a failed episode scores 0
    components: dict[str, list[float]] = defaultdict(list)
    for t in ok:
        for key, value in t.reward_components.items():
            components[key].append(float(value))
    walls = [float(t.metadata.get("rollup", {}).get("wall_seconds") or 0.0) for t in trajs]
    calls = [int(t.metadata.get("rollup", {}).get("subagent_calls") or 0) for t in trajs]
    models = _model_rows(trajs, record, played)
    routing = routing_accuracy(trajs)
    return {
        "baseline": name,
        "tasks": len(trajs),
        "failed": len(trajs) - len(ok),
        "score": statistics.fmean(rewards),
        "score_ci95": list(bootstrap_ci(rewards)),
        "components": {
            k: {"mean": statistics.fmean(v), "ci95": list(bootstrap_ci(v))} for k, v in sorted(components.items())
        },
        "models": models,
        "tokens_per_task": sum(m["prompt_tokens"] + m["completion_tokens"] for m in models.values()) / len(trajs),
        "cost_usd_per_task": sum(m["cost_usd"] for m in models.values()) / len(trajs),
        "wall_s_p50": _percentile(walls, 0.5),
        "wall_s_p95": _percentile(walls, 0.95),
        "subagent_calls_per_task": statistics.fmean(calls),
        "routing_accuracy": routing["accuracy"],
        "routing": routing,
        "policies": {s["name"]: s.get("policy", "expert") for s in played.get("subagents", [])},
    }


def bench_table(folder: Path, record: BenchRun) -> dict[str, Any]:
    """Every baseline's row for one benchmark, plus what was skipped and the notes."""
    rows = [baseline_result(folder, record, b.name) for b in record.baselines if b.name not in record.skipped]
    return {
        "bench": record.bench,
        "orchestrator": record.orchestrator,
        "tasks_asked": record.tasks,
        "suite": record.suite,
        "rows": rows,
        "skipped": record.skipped,
        "notes": {b.name: b.note for b in record.baselines if b.note},
        "stages": [s.model_dump() for s in record.stages],
        "tokenizer": reference_tokenizer()[0],
    }


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _markdown(table: dict[str, Any]) -> str:
    rows = [r for r in table["rows"] if r.get("tasks")]
    # HotpotQA's own measures; in the mixed set they would cover only its hotpotqa third.
    hotpot = table["bench"] == "hotpotqa"
    component_keys = sorted({k for r in rows for k in r["components"] if hotpot and k in ("exact_match", "f1")})
    head = [
        "baseline",
        "tasks",
        "score",
        "95% CI",
        *component_keys,
        "tokens/task",
        "$/task",
        "wall p50 s",
        "wall p95 s",
    ]
    head += ["calls/task", "routing", "failed"]
    lines = [f"### {table['bench']} (orchestrator: `{table['orchestrator']}`)", ""]
    if table["suite"].get("note"):
        lines += [table["suite"]["note"] + ".", ""]
    held = table["suite"].get("held_out_codebase")
    if held:
        lines += [
            f"Held-out codebase: `{held['name']}` {held.get('version') or ''} ({held.get('files')} files, "
            f"hash {str(held.get('content_hash'))[:12]}); the students were trained on "
            f"{held['students_trained_on']}.",
            "",
        ]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ci = r["score_ci95"]
        cells = [r["baseline"], str(r["tasks"]), _fmt(r["score"]), f"[{ci[0]:.2f}, {ci[1]:.2f}]"]
        cells += [_fmt(r["components"].get(k, {}).get("mean")) for k in component_keys]
        cells += [f"{r['tokens_per_task']:,.0f}", f"{r['cost_usd_per_task']:.6f}"]
        cells += [_fmt(r["wall_s_p50"], 2), _fmt(r["wall_s_p95"], 2), _fmt(r["subagent_calls_per_task"], 2)]
        cells += [_fmt(r["routing_accuracy"], 2), str(r["failed"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for r in rows:
        models = "; ".join(
            f"{label}{' *' if m['counted'] else ''} {m['prompt_tokens_per_task']:,.0f} in / "
            f"{m['completion_tokens_per_task']:,.0f} out, ${m['cost_usd_per_task']:.6f}"
            for label, m in r["models"].items()
        )
        lines.append(f"- {r['baseline']} per model per task: {models}")
    lines.append(
        f"- `*`: the backend reported no tokens; counted with the {table['tokenizer']} (input = chat before each turn)."
    )
    for name, note in table["notes"].items():
        lines.append(f"- {name}: {note}")
    for name, why in table["skipped"].items():
        lines.append(f"- {name}: not run ({why})")
    if table["stages"]:
        times = ", ".join(f"{s['baseline']} {s['seconds']:.0f} s ({s['ran']} run)" for s in table["stages"])
        lines.append(f"- stage times: {times}")
    return "\n".join(lines) + "\n"


def _plot(table: dict[str, Any], path: Path) -> Path | None:
    rows = [r for r in table["rows"] if r.get("tasks")]
    if not rows:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the bench extra is not installed: Markdown and JSON still come out
        return None
    use_cost = any(r["cost_usd_per_task"] > 0 for r in rows)
    xs = [r["cost_usd_per_task"] if use_cost else r["tokens_per_task"] for r in rows]
    ys = [r["score"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r, x, y in zip(rows, xs, ys):
        low, high = r["score_ci95"]
        ax.errorbar([x], [y], yerr=[[y - low], [high - y]], fmt="o", capsize=4)
        ax.annotate(r["baseline"], (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8)
    # Pareto front: no other baseline is both cheaper (or as cheap) and better.
    front = sorted(
        (x, y) for x, y in zip(xs, ys) if not any(x2 <= x and y2 > y or x2 < x and y2 >= y for x2, y2 in zip(xs, ys))
    )
    if len(front) > 1:
        ax.step(
            [p[0] for p in front], [p[1] for p in front], where="post", linestyle="--", color="grey", label="Pareto"
        )
        ax.legend(loc="lower right")
    if use_cost and min(xs) > 0:
        ax.set_xscale("log")
    ax.set_xlabel("estimated cost per task (USD, roster prices)" if use_cost else "tokens per task")
    ax.set_ylabel("score (95% CI)")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(f"{table['bench']}: score vs cost")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def build_report(paths: list[Path]) -> list[dict[str, Any]]:
    """The tables of every benchmark recorded under ``paths``."""
    return [bench_table(folder, record) for folder, record in read_bench_runs(paths)]


def write_report(paths: list[Path], out: Path) -> dict[str, Path]:
    """Write ``report.md``, ``report.json`` and one ``<bench>.png`` per benchmark into ``out``.

    Returns:
        Name -> path of each file written.
    """
    tables = build_report(paths)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    md = ["# Part 2 benchmarks", ""]
    for table in tables:
        md.append(_markdown(table))
        png = _plot(table, out / f"{table['bench']}.png")
        if png is not None:
            md.append(f"![{table['bench']}]({png.name})\n")
            written[png.name] = png
    (out / "report.md").write_text("\n".join(md), encoding="utf-8")
    (out / "report.json").write_text(json.dumps(tables, indent=1, default=str) + "\n", encoding="utf-8")
    written["report.md"] = out / "report.md"
    written["report.json"] = out / "report.json"
    return written
