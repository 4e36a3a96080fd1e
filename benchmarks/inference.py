"""Student inference: generated tokens/s and episodes/s, unbatched vs batched vs served.

    python -m skillgym.benchmarks.inference --json
    python -m skillgym.benchmarks.inference --json --models tiny,smollm2 --levels 1,4,16,64
    python -m skillgym.benchmarks.inference --json --part episodes --model runs/distill/student --tasks 100

Part ``levels`` (the default). For each model and concurrency level, the same simulated
episodes run through the ``hf:`` policy in each mode, one after another:

- ``unbatched``: one ``model.generate`` at a time behind a lock (the policy before issue 18,
  ``batch_size=0``);
- ``batched``: turns of concurrent episodes generated together, each conversation's keys and
  values carried to its next turn (the default);
- ``batched-nocache``: batched, every prompt encoded from scratch (``prefix_cache=False``);
- ``batched-bf16``: batched, the matrix products in bfloat16 (``matmul_dtype=bfloat16``; not
  in the default modes: ask for it with ``--modes batched,batched-bf16``);
- ``served``: the same model saved to a folder and served by ``skillgym serve``'s CPU backend
  (:mod:`skillgym.training.student_server`, its own process, batched), the episodes' turns
  sent over loopback HTTP by the ``openai:`` policy.

An episode is the codebase-explorer env's real system prompt, tool schemas and a task
prompt, then ``--turns`` assistant turns of ``--new-tokens`` tokens each, every turn followed
by a tool-output-like message. The models are built from a config with random weights
(nothing is downloaded): ``tiny`` is the tiny-cpu recipe's student (4 x 192, Qwen3);
``smollm2`` has SmolLM2-135M's shape (30 x 576, Llama, GQA 9/3) with the benchmark's small
vocabulary. A random model never stops early, so every turn generates ``--new-tokens``
tokens: tokens/s compares like with like. The tokenizer is trained on the env's text.

The report also says whether the modes agree: ``batched`` and ``batched-nocache`` must give
identical greedy tokens (``identical_to_nocache``), and so must ``served``
(``served_identical_to_batched``); the share of turns identical to the unbatched path is
informative (its one-row decode products round differently, so a near-tie can break the
other way). So is the share identical between ``batched-bf16`` and ``batched``
(``bf16_turns_identical_to_batched``): bfloat16 products change the numbers, not the method.

Part ``episodes``: a real student on a real env's held-out tasks, in process (``hf:``) and
served (``skillgym serve`` + ``openai:``), the same tasks at the same concurrency: success,
failed episodes (a policy that raised, e.g. on an HTTP 500), how many trajectories are
identical (messages and token ids), tokens/s and episodes/s side by side.

Numbers are only meaningful on an otherwise idle machine: run it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from typing import Any

MODES = ("unbatched", "batched", "batched-nocache", "batched-bf16", "served")
DEFAULT_MODES = ("unbatched", "batched", "batched-nocache", "served")
MODELS = ("tiny", "smollm2")


def rendered_conversations(material: dict[str, Any], count: int = 60) -> list[str]:
    """What the real student's tokenizer is trained on: whole rendered conversations (so the
    system prompt and tool schemas become a few boilerplate tokens, as in the main job)."""
    # Rendered by a throwaway tokenizer's own chat template: the same text apply_chat_template gives.
    renderer = build_tokenizer([material["system"], *material["prompts"]], boilerplate=False)
    texts = []
    for index in range(count):
        chat = [
            {"role": "system", "content": material["system"]},
            {"role": "user", "content": material["prompts"][index % len(material["prompts"])]},
        ]
        for turn in range(3):
            chat += [
                {"role": "assistant", "content": f"Looking at module_{index}_{turn}."},
                {"role": "user", "content": tool_output(index, turn)},
            ]
        texts.append(renderer.apply_chat_template(chat, tools=material["tools"], tokenize=False))
    return texts


def build_tokenizer(texts: list[str], boilerplate: bool = True) -> Any:
    from skillgym.training.tokenizer import train_tokenizer

    return train_tokenizer(texts, vocab_size=2048, boilerplate_min_fraction=0.02 if boilerplate else None)


def build_model(name: str, vocab_size: int) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    if name == "tiny":  # training/tiny-cpu.yaml's student
        config = Qwen3Config(
            vocab_size=vocab_size,
            hidden_size=192,
            intermediate_size=512,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=4,
            head_dim=48,
            max_position_embeddings=4096,
            rope_theta=1e6,
            tie_word_embeddings=True,
        )
        return Qwen3ForCausalLM(config).eval()
    if name == "smollm2":  # SmolLM2-135M's shape
        config = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            max_position_embeddings=8192,
            rope_theta=100000.0,
            tie_word_embeddings=True,
            rms_norm_eps=1e-5,
        )
        return LlamaForCausalLM(config).eval()
    raise ValueError(f"unknown model {name!r}; choose from {MODELS}")


def episode_material(count: int) -> dict[str, Any]:
    """The env's system prompt, tool schemas and task prompts (reading the spec starts no sandbox)."""
    from skillgym.registry import make

    env = make("codebase-explorer-v0")
    try:
        system = env.system_prompt()
        tools = list(env.tool_schemas)
        source = env.env_spec.tasks
        prompts: list[str] = []
        for split in ("test", "train"):
            try:
                prompts += [task.prompt for task in source.tasks(split)][: count - len(prompts)]
            except Exception:  # a task source without that split or API: synthetic prompts below
                break
    finally:
        env.close()
    rng = random.Random(0)
    while len(prompts) < count:
        prompts.append(f"Which function in module_{rng.randrange(100)}.py returns the retry delay?")
    return {"system": system, "tools": tools, "prompts": prompts[:count]}


def tool_output(episode: int, turn: int) -> str:
    rng = random.Random(episode * 1000 + turn)
    lines = [
        f"src/pkg/module_{rng.randrange(50)}.py:{rng.randrange(400)}: def f_{rng.randrange(999)}(x):" for _ in range(4)
    ]
    return "<tool_response>\n" + "\n".join(lines) + "\n</tool_response>"


async def run_level(policy: Any, material: dict[str, Any], concurrency: int, episodes: int, turns: int) -> dict:
    slots = asyncio.Semaphore(concurrency)
    generated = 0
    outputs: dict[tuple[int, int], list[int]] = {}

    async def episode(index: int) -> None:
        nonlocal generated
        async with slots:
            prompt = material["prompts"][index % len(material["prompts"])]
            chat = [{"role": "system", "content": material["system"]}, {"role": "user", "content": prompt}]
            info = {"tools": material["tools"], "task_id": f"bench-{index}", "env_id": "bench"}
            for turn in range(turns):
                action = await policy.aact(chat, info)
                generated += action["usage"]["completion_tokens"]
                outputs[(index, turn)] = action["token_ids"]
                chat = [
                    *chat,
                    {"role": "assistant", "content": action["content"]},
                    {"role": "user", "content": tool_output(index, turn)},
                ]

    started = time.perf_counter()
    await asyncio.gather(*(episode(i) for i in range(episodes)))
    wall = time.perf_counter() - started
    return {
        "concurrency": concurrency,
        "episodes": episodes,
        "turns": episodes * turns,
        "generated_tokens": generated,
        "wall_s": round(wall, 3),
        "tokens_per_s": round(generated / wall, 1),
        "episodes_per_s": round(episodes / wall, 3),
        "_outputs": outputs,
    }


def _policy(mode: str, model: Any, tokenizer: Any, args: argparse.Namespace, served: Any) -> Any:
    from skillgym.policies.hf_policy import HFPolicy
    from skillgym.policies.openai_policy import OpenAIPolicy

    if mode == "served":
        return OpenAIPolicy(
            served.model_name,
            base_url=served.base_url,
            sampling={"temperature": 0.0, "max_tokens": args.new_tokens},
            return_token_ids=True,
            max_concurrency=max(args.levels),
            max_retries=0,
        )
    options = dict(
        max_new_tokens=args.new_tokens,
        batch_size=0 if mode == "unbatched" else args.batch_size,
        prefix_cache=mode in ("batched", "batched-bf16"),
        matmul_dtype="bfloat16" if mode == "batched-bf16" else None,
    )
    return HFPolicy(model, tokenizer, **options)


def _serve_copy(model: Any, tokenizer: Any, args: argparse.Namespace, folder: str) -> Any:
    """Save the model and serve the copy with skillgym's CPU server (same batch size)."""
    from skillgym.training.serving import start_server

    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    extra = ["--batch-size", str(args.batch_size), "--max-new-tokens", str(args.new_tokens)]
    if args.threads:
        extra += ["--threads", str(args.threads)]
    return start_server(folder, backend="skillgym", log_dir=folder, timeout=600, extra_args=extra)


def bench_model(name: str, args: argparse.Namespace, tokenizer: Any, material: dict[str, Any]) -> dict[str, Any]:
    import tempfile

    import torch

    model = build_model(name, len(tokenizer))
    result: dict[str, Any] = {
        "model": name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "levels": [],
    }
    with tempfile.TemporaryDirectory(prefix=f"skillgym-bench-{name}-") as folder:
        served = _serve_copy(model, tokenizer, args, folder) if "served" in args.modes else None
        try:
            for level in args.levels:
                result["levels"].append(_bench_level(name, level, model, tokenizer, material, args, served, torch))
        finally:
            if served is not None:
                served.stop()
    return result


def _bench_level(
    name: str, level: int, model: Any, tokenizer: Any, material: dict, args: argparse.Namespace, served: Any, torch: Any
) -> dict[str, Any]:
    episodes = max(level, args.min_episodes)
    row: dict[str, Any] = {"concurrency": level, "episodes": episodes}
    outputs: dict[str, dict] = {}
    for mode in args.modes:
        policy = _policy(mode, model, tokenizer, args, served)
        warm = [{"role": "user", "content": "warm up"}]
        policy.act(warm, {"tools": material["tools"]})  # probe, first allocations, connections

        async def measure(policy: Any = policy) -> dict[str, Any]:
            try:
                return await run_level(policy, material, level, episodes, args.turns)
            finally:
                if hasattr(policy, "aclose"):
                    await policy.aclose()

        with torch.inference_mode():
            measured = asyncio.run(measure())
        outputs[mode] = measured.pop("_outputs")
        if getattr(policy, "batched", False):
            measured["generator"] = dict(policy.generator().stats, min_rows=policy.generator().min_rows)
        policy.close()
        row[mode] = measured
    if "unbatched" in row:
        base = row["unbatched"]["tokens_per_s"]
        for mode in args.modes:
            row[mode]["speedup_vs_unbatched"] = round(row[mode]["tokens_per_s"] / base, 2) if base else None
    if "batched" in outputs and "batched-nocache" in outputs:
        row["identical_to_nocache"] = outputs["batched"] == outputs["batched-nocache"]
    if "batched" in outputs and "served" in outputs:
        row["served_identical_to_batched"] = outputs["batched"] == outputs["served"]
    for other, key in (
        ("unbatched", "turns_identical_to_unbatched"),
        ("batched-bf16", "bf16_turns_identical_to_batched"),
    ):
        if "batched" in outputs and other in outputs:
            same = sum(outputs["batched"][turn] == outputs[other].get(turn) for turn in outputs["batched"])
            row[key] = f"{same}/{len(outputs['batched'])}"
    _progress(
        args, f"{name} c={level}: " + ", ".join(f"{mode} {row[mode]['tokens_per_s']} tok/s" for mode in args.modes)
    )
    return row


# -- part "episodes": a real student on a real env, in process and served -----------------------------


async def _drive_episodes(policy: Any, envs: list[Any], task_ids: list[str]) -> list[Any]:
    """Every task once, ``len(envs)`` episodes in flight; a policy that raises is a failed episode."""
    from skillgym.episode import arun_episode
    from skillgym.types import Trajectory

    pending = list(reversed(task_ids))
    done: dict[str, Any] = {}

    async def worker(env: Any) -> None:
        while pending:
            task_id = pending.pop()
            try:
                done[task_id] = await arun_episode(env, policy, task_id=task_id)
            except Exception as exc:
                spec = env.env_spec
                error = f"{type(exc).__name__}: {exc}"
                done[task_id] = Trajectory.failed(error, env_id=spec.id, env_version=spec.version, task_id=task_id)

    await asyncio.gather(*(worker(env) for env in envs))
    return [done[t] for t in task_ids]


def _episode_stats(trajectories: list[Any], wall: float) -> dict[str, Any]:
    n = max(len(trajectories), 1)
    generated = sum(t.usage.completion_tokens for t in trajectories)
    rewards = [t.reward or 0.0 for t in trajectories]
    return {
        "episodes": len(trajectories),
        "mean_reward": round(sum(rewards) / n, 4),
        "solved": round(sum(r > 0.5 for r in rewards) / n, 4),
        "failed_episodes": sum(t.status == "failed" for t in trajectories),
        "failures": sorted({t.error for t in trajectories if t.status == "failed" and t.error})[:5],
        "turns": sum(len(t.token_ids) for t in trajectories),
        "generated_tokens": generated,
        "wall_s": round(wall, 2),
        "tokens_per_s": round(generated / wall, 1),
        "episodes_per_s": round(len(trajectories) / wall, 3),
    }


def _first_difference(a: Any, b: Any) -> dict[str, Any] | None:
    for index, (x, y) in enumerate(zip(a.messages, b.messages)):
        if x != y:
            return {"task_id": a.task_id, "message": index, "in_process": x, "served": y}
    if len(a.messages) != len(b.messages) or a.token_ids != b.token_ids:
        return {"task_id": a.task_id, "messages": [len(a.messages), len(b.messages)], "token_ids_differ": True}
    return None


def bench_episodes(args: argparse.Namespace) -> dict[str, Any]:
    """The same held-out tasks through the in-process and the served student."""
    import skillgym
    from skillgym.policies.hf_policy import HFPolicy
    from skillgym.policies.openai_policy import OpenAIPolicy
    from skillgym.training.serving import start_server

    probe = skillgym.make(args.env, backend=args.sandbox)
    try:
        task_ids = [t.id for t in probe.env_spec.tasks.tasks("test")][: args.tasks]
    finally:
        probe.close()
    report: dict[str, Any] = {
        "model": str(args.model),
        "env": args.env,
        "tasks": len(task_ids),
        "concurrency": args.concurrency,
        "max_new_tokens": args.max_new_tokens,
        "sandbox": args.sandbox,
    }
    results: dict[str, list[Any]] = {}
    for path in ("in_process", "served"):
        envs = [skillgym.make(args.env, backend=args.sandbox) for _ in range(args.concurrency)]
        handle = None
        try:
            if path == "in_process":
                policy: Any = HFPolicy(str(args.model), max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
            else:
                extra = ["--batch-size", str(args.batch_size), "--max-new-tokens", str(args.max_new_tokens)]
                handle = start_server(
                    args.model, backend="skillgym", log_dir=args.log_dir, timeout=600, extra_args=extra
                )
                policy = OpenAIPolicy(
                    handle.model_name,
                    base_url=handle.base_url,
                    sampling={"temperature": 0.0, "max_tokens": args.max_new_tokens},
                    return_token_ids=True,
                    max_concurrency=args.concurrency,
                )
                report["served_by"] = handle.policy_spec

            async def run(policy: Any = policy, envs: list[Any] = envs) -> tuple[list[Any], float]:
                warm = [{"role": "user", "content": "warm up"}]
                await policy.aact(warm, {"tools": []})  # model probe / connections, off the clock
                loop = asyncio.get_running_loop()  # and every env's sandbox started, off the clock
                await asyncio.gather(*(loop.run_in_executor(None, env.reset) for env in envs))
                started = time.perf_counter()
                try:
                    return await _drive_episodes(policy, envs, task_ids), time.perf_counter() - started
                finally:
                    if hasattr(policy, "aclose"):
                        await policy.aclose()

            trajectories, wall = asyncio.run(run())
            policy.close()
        finally:
            for env in envs:
                env.close()
            if handle is not None:
                handle.stop()
        results[path] = trajectories
        report[path] = _episode_stats(trajectories, wall)
        _progress(args, f"{path}: {report[path]}")
    pairs = list(zip(results["in_process"], results["served"]))
    identical = [a.messages == b.messages and a.token_ids == b.token_ids for a, b in pairs]
    report["identical_trajectories"] = sum(identical)
    report["identical_messages"] = sum(a.messages == b.messages for a, b in pairs)
    report["same_reward"] = sum((a.reward or 0.0) == (b.reward or 0.0) for a, b in pairs)
    report["differences"] = [d for a, b in pairs if (d := _first_difference(a, b))][:3]
    return report


def _progress(args: argparse.Namespace, line: str) -> None:
    if not args.json:
        print(line, flush=True)
    else:
        print(line, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the report as JSON only (progress on stderr)")
    parser.add_argument("--models", default="tiny", help=f"comma-separated, from {MODELS}")
    parser.add_argument("--levels", default="1,4,16,64", help="concurrency levels")
    parser.add_argument("--modes", default=",".join(DEFAULT_MODES), help=f"comma-separated, from {MODES}")
    parser.add_argument("--turns", type=int, default=3, help="assistant turns per episode")
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens generated per turn")
    parser.add_argument("--min-episodes", type=int, default=4, help="episodes per level at least (else = concurrency)")
    parser.add_argument("--batch-size", type=int, default=64, help="the batched modes' batch size")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--part", choices=["levels", "episodes", "all"], default="levels")
    episodes = parser.add_argument_group("part episodes")
    episodes.add_argument("--model", default="runs/distill/student", help="the trained student's folder")
    episodes.add_argument("--env", default="codebase-explorer-v0")
    episodes.add_argument("--tasks", type=int, default=100, help="held-out tasks")
    episodes.add_argument("--concurrency", type=int, default=16, help="episodes in flight")
    episodes.add_argument("--max-new-tokens", type=int, default=96, help="tokens per turn (as the distill eval)")
    episodes.add_argument("--sandbox", default="local", choices=["auto", "local", "docker"])
    episodes.add_argument("--log-dir", default=None, help="the server's log (default: beside the model)")
    args = parser.parse_args(argv)
    args.levels = [int(x) for x in args.levels.split(",") if x]
    args.modes = [m for m in args.modes.split(",") if m]
    unknown = sorted(set(args.modes) - set(MODES)) + sorted(set(args.models.split(",")) - set(MODELS))
    if unknown:
        parser.error(f"unknown mode/model {unknown}; modes: {MODES}, models: {MODELS}")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    report: dict[str, Any] = {"threads": torch.get_num_threads(), "note": "timings need an otherwise idle machine"}
    if args.part in ("levels", "all"):
        material = episode_material(max(args.levels + [args.min_episodes]))
        tokenizer = build_tokenizer(rendered_conversations(material))
        report["levels"] = {
            "turns_per_episode": args.turns,
            "new_tokens_per_turn": args.new_tokens,
            "batch_size": args.batch_size,
            "modes": args.modes,
            "note": "random-weight models built from a config",
            "models": [bench_model(name, args, tokenizer, material) for name in args.models.split(",") if name],
        }
    if args.part in ("episodes", "all"):
        report["episodes"] = bench_episodes(args)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
