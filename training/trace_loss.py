"""Where a student loses its teacher: teacher-forced log-probabilities of a rollout run's turns.

    python -m skillgym.training.trace_loss STUDENT RUN_DIR [--per-group 4] [--worst 3] [--json]

For each episode of ``RUN_DIR`` (typically the teacher's held-out episodes, the distill's
``eval/runs/expert``), every assistant turn is scored under ``STUDENT`` given the conversation
before it, rendered exactly as the student is served (its own chat template, the env's tools).
A turn the student decodes greedily as the teacher wrote it has every token at its argmax; the
report gives, per group of tasks (the task id up to its first ``-``: codebase-explorer's
question type), the share of such turns, the mean log-probability of a turn, and each scored
episode's least likely tokens with the token the student would have written instead.
The scores come from one float32 forward pass of the model over the conversation, not from
the batched generator that serves it (whose products may be bfloat16 and are batch-invariant but
not bit-identical to this pass), so a near tie can come out the other way when served.

Why: a student's success rate says which question types fail, not where. On the distilled
SmolLM2, ``callers`` failed at one token: after ``cd repo && awk '`` it put 0.6 on the
``methods`` program's next token, whatever the question (training/EXPERIMENTS.md §16, round 7).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any


def turn_spans(
    tokenizer: Any, chat_template: str, messages: list[dict], tools: list[dict] | None
) -> tuple[list[int], list[tuple[int, int, int]]]:
    """(token ids of the whole conversation, one (message index, start, end) per assistant turn):
    tokens ``start:end`` are what the student generates for that turn given ``ids[:start]``.

    Raises:
        ValueError: When the rendering of a turn's prompt is not a prefix of the whole
            conversation's (a template that rewrites earlier turns, e.g. Qwen3's inference
            template dropping ``<think>`` blocks), so teacher forcing would score another text.
    """

    def encode(upto: int, generation_prompt: bool) -> list[int]:
        return list(
            tokenizer.apply_chat_template(
                messages[:upto],
                tools=tools or None,
                chat_template=chat_template,
                add_generation_prompt=generation_prompt,
                tokenize=True,
                return_dict=True,
            )["input_ids"]
        )

    ids = encode(len(messages), False)
    spans = []
    for index, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        prompt, through = encode(index, True), encode(index + 1, False)
        if ids[: len(prompt)] != prompt or ids[: len(through)] != through:
            raise ValueError(
                f"turn {index}: the served prompt is not a prefix of the conversation under this chat "
                "template, so the student never sees the teacher's text as scored here"
            )
        spans.append((index, len(prompt), len(through)))
    return ids, spans


def score_episode(
    model: Any, tokenizer: Any, chat_template: str, messages: list[dict], tools: list[dict] | None, worst: int
) -> list[dict[str, Any]]:
    """One record per assistant turn: tokens, log-probability, whether greedy decoding
    reproduces it, and its ``worst`` least likely tokens (position in the turn, the teacher's
    token, its log-probability, the student's argmax)."""
    import torch

    ids, spans = turn_spans(tokenizer, chat_template, messages, tools)
    with torch.no_grad():
        logits = model(torch.tensor([ids], device=model.device)).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    turns = []
    for index, start, end in spans:
        targets = torch.tensor(ids[start:end], device=logprobs.device)
        rows = logprobs[start - 1 : end - 1]  # the logits at position p predict token p + 1
        chosen = rows.gather(1, targets[:, None])[:, 0]
        argmax = rows.argmax(dim=-1)
        order = torch.argsort(chosen)[:worst].tolist()
        turns.append(
            {
                "message": index,
                "tokens": end - start,
                "logprob": round(float(chosen.sum()), 4),
                "greedy_exact": bool((argmax == targets).all()),
                "worst": [
                    {
                        "position": p,
                        "token": tokenizer.decode([int(targets[p])]),
                        "logprob": round(float(chosen[p]), 4),
                        "argmax": tokenizer.decode([int(argmax[p])]),
                    }
                    for p in order
                ],
            }
        )
    return turns


def trace_loss(student: str, run_dir: Path, per_group: int | None = 4, worst: int = 3) -> dict[str, Any]:
    """Score the first ``per_group`` episodes of each task group of ``run_dir`` (None: all)
    under ``student`` (an ``hf:`` path: a model folder, an adapter checkpoint, or
    ``smollm2-135m``); the JSON-ready report described in the module docstring."""
    from skillgym.models import resolve_model
    from skillgym.policies.hf_policy import HFPolicy
    from skillgym.rollouts.export import sft_messages
    from skillgym.rollouts.store import iter_trajectories

    policy = HFPolicy(resolve_model(student))
    taken: dict[str, int] = defaultdict(int)
    episodes = []
    for trajectory in iter_trajectories(run_dir):
        group = trajectory.task_id.split("-", 1)[0]
        if trajectory.status != "ok" or (per_group is not None and taken[group] >= per_group):
            continue
        taken[group] += 1
        # The rows SFT trained on; apply_chat_template drops their None-valued keys itself.
        messages = sft_messages(trajectory)
        turns = score_episode(policy.model, policy.tokenizer, policy.chat_template, messages, trajectory.tools, worst)
        episodes.append({"task_id": trajectory.task_id, "group": group, "turns": turns})
    if not episodes:
        raise ValueError(f"{run_dir}: no finished episode to score")
    groups: dict[str, dict[str, Any]] = {}
    for name in sorted(taken):
        turns = [t for e in episodes if e["group"] == name for t in e["turns"]]
        groups[name] = {
            "episodes": taken[name],
            "turns": len(turns),
            "greedy_exact": round(sum(t["greedy_exact"] for t in turns) / max(1, len(turns)), 4),
            "mean_turn_logprob": round(sum(t["logprob"] for t in turns) / max(1, len(turns)), 4),
        }
    return {"student": student, "run": str(run_dir), "groups": groups, "episodes": episodes}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("student", help="hf: path of the student (model folder, adapter checkpoint, smollm2-135m)")
    parser.add_argument("run_dir", type=Path, help="a rollout run folder (the teacher's episodes)")
    parser.add_argument("--per-group", type=int, default=4, help="episodes scored per task group (0: all)")
    parser.add_argument("--worst", type=int, default=3, help="least likely tokens listed per turn")
    parser.add_argument("--json", action="store_true", help="print the whole report as JSON")
    args = parser.parse_args(argv)
    report = trace_loss(args.student, args.run_dir, per_group=args.per_group or None, worst=args.worst)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for name, group in report["groups"].items():
            print(
                f"{name}: greedy reproduces {group['greedy_exact']:.0%} of {group['turns']} turns, "
                f"mean turn log-prob {group['mean_turn_logprob']:.2f}"
            )
        for episode in report["episodes"]:
            first = episode["turns"][0]["worst"][:1] if episode["turns"] else []
            for token in first:
                print(
                    f"  {episode['task_id']}: turn 1 token {token['position']} {token['token']!r} "
                    f"logp {token['logprob']:.2f}, student writes {token['argmax']!r}"
                )
    return report


if __name__ == "__main__":
    main()
