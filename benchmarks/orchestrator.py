"""Orchestrator benchmark: does delegating through ``subagent`` keep the subagent's success, and
how close do concurrent subagent calls keep a slow model server busy?

    python -m skillgym.benchmarks.orchestrator --json                      # both parts, full scale
    python -m skillgym.benchmarks.orchestrator --json --part accuracy --tasks 100 \\
        --policies expert,hf:runs/distill/student-untrained,openai:student@http://127.0.0.1:8000/v1
    python -m skillgym.benchmarks.orchestrator --json --part accuracy --tasks 100 \\
        --policies "served:hf:runs/distill/student?max_new_tokens=96"
    python -m skillgym.benchmarks.orchestrator --json --part throughput --episodes 32 --calls 4 --delay 0.2

Accuracy (issue 13, acceptance a-c). For each subagent policy, the same held-out
codebase-explorer tasks run twice: standalone (the policy plays codebase-explorer-v0) and
posed to orchestrator-v0, where the scripted router delegates each task to the
codebase-explorer roster entry played by that policy. The report gives both success rates
(mean reward and share of tasks solved), how many tasks agree, routing accuracy, and checks
that the roll-ups add up: per episode, the subagent model's tokens equal the child's tokens and
its cost equals tokens x prices. A policy ``served:hf:PATH[?...]`` is the ``hf:`` student
served over HTTP for the run (``skillgym orchestrate serve``'s :func:`serve_roster`: the
CPU student server, one per model); both the standalone runs and the roster's subagent then
use the served ``openai:`` spec, and ``lost_episodes`` counts standalone episodes and
subagent calls that ended in an error (a server's HTTP 500 among them).

Throughput. A loopback OpenAI-compatible server (its own process) answers every request after
a fixed delay and plays both models: the orchestrator's first turn makes ``--calls`` parallel
``subagent`` calls, each subagent submits at once, and the orchestrator's second turn submits.
``--episodes`` orchestrator episodes run concurrently, each ``--rounds`` times. One episode
ideally takes 3 x delay (turn, the calls side by side, turn), so the ideal wall time is
rounds x 3 x delay; efficiency = ideal / measured. The same-run baseline runs the same
subagent work without an orchestrator (episodes x calls one-turn episodes at once, rounds
times; ideal rounds x delay), so what the orchestrator layer costs is the gap between the
two efficiencies. Wall time starts after one warm-up round (envs built, sandboxes started).
Numbers on a shared or small machine are a rough guide only.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import platform
import sys
import time
from typing import Any

import skillgym
from skillgym.types import Trajectory

TASKS = 100
POLICIES = ("expert", "random:0")
DESCRIPTION = (
    "Answers questions about a Python codebase: where a function or class is defined, which functions call "
    "it, how many methods a class has, a constant's value, a parameter's default. Give it the question; it "
    "returns a compact exact answer."
)
DISTRACTOR = {
    "name": "poet",
    "description": "Writes short poems and stories about the sea and the weather.",
    "env": "skillgym.benchmarks.orchestrator:make_worker_spec",
    "policy": "expert",
}


# -- accuracy ---------------------------------------------------------------------------------------


def accuracy(policies: list[str], n_tasks: int, backend: str, prices: tuple[float, float]) -> list[dict[str, Any]]:
    """Standalone vs orchestrated success for each subagent policy on the first ``n_tasks``
    held-out codebase-explorer tasks."""
    results = []
    for policy in policies:
        handles: list[Any] = []
        try:
            results.append(_accuracy_one(policy, n_tasks, backend, prices, handles))
        finally:
            for handle in handles:
                handle.stop()
    return results


def _accuracy_one(
    policy: str, n_tasks: int, backend: str, prices: tuple[float, float], handles: list[Any]
) -> dict[str, Any]:
    import skillgym
    from skillgym.orchestrator import Roster, render_tree, routing_accuracy
    from skillgym.orchestrator.serving import serve_roster
    from skillgym.policies.spec import make_policy

    served = policy.startswith("served:")
    player = policy.removeprefix("served:")
    roster: Any = {
        "subagents": [
            {
                "name": "codebase-explorer",
                "description": DESCRIPTION,
                "env": "codebase-explorer-v0",
                "env_args": {"backend": backend},
                "policy": player,
                "limits": {"timeout_s": 600},
                "prices": {"input_per_million": prices[0], "output_per_million": prices[1]},
            },
            {**DISTRACTOR, "env_args": {"backend": backend}},
        ]
    }
    if served:
        if not player.startswith("hf:"):
            raise ValueError(f"{policy!r}: served: takes an hf: policy spec")
        roster, servers = serve_roster(Roster.model_validate(roster))
        handles.extend(servers)
        player = roster.get("codebase-explorer").policy
    standalone_env = skillgym.make("codebase-explorer-v0", backend=backend)
    env = skillgym.make(
        "orchestrator-v0",
        roster=roster,
        tasks="codebase-explorer-v0",
        task_limit=n_tasks,
        split="test",
        backend=backend,
    )
    try:
        tasks = env.env_spec.tasks.tasks("test")
        agent = make_policy(player, standalone_env)
        started = time.perf_counter()
        alone = [_standalone(standalone_env, agent, t.id) for t in tasks]
        alone_s = time.perf_counter() - started
        router = env.env_spec.expert()
        started = time.perf_counter()
        trees = [skillgym.run_episode(env, router, task=t) for t in tasks]
        tree_s = time.perf_counter() - started
        agent.close()
    finally:
        standalone_env.close()
        env.close()
    result = _accuracy_report(policy, alone, trees, alone_s, tree_s, prices, model=player.partition("?")[0])
    if served:
        result["served_as"] = player
    result["routing"] = routing_accuracy(trees)
    result["example_tree"] = render_tree(trees[0], depth=0) if trees else ""
    return result


def _standalone(env: Any, agent: Any, task_id: str) -> Any:
    """One standalone episode; a policy that raises (a server answering 500) is a failed
    episode with no reward, as in a rollout, and the run goes on (inside the orchestrator the
    same failure is a subagent call whose status says why)."""
    try:
        return skillgym.run_episode(env, agent, task_id=task_id)
    except Exception as exc:
        spec = env.env_spec
        error = f"{type(exc).__name__}: {exc}"
        return Trajectory.failed(error, env_id=spec.id, env_version=spec.version, task_id=task_id)


def _accuracy_report(
    policy: str,
    alone: list[Any],
    trees: list[Any],
    alone_s: float,
    tree_s: float,
    prices: tuple[float, float],
    model: str | None = None,
) -> dict[str, Any]:
    model = model or policy.partition("?")[0]
    a = [t.reward or 0.0 for t in alone]
    o = [t.reward or 0.0 for t in trees]
    sums_ok = True
    tokens = cost = latency = 0.0
    for tree in trees:
        rolled = tree.metadata["rollup"]
        children = tree.children
        row = rolled["per_model"].get(model, {"prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0})
        child_in = sum(c.usage.prompt_tokens for c in children)
        child_out = sum(c.usage.completion_tokens for c in children)
        expected_cost = (child_in * prices[0] + child_out * prices[1]) / 1e6
        sums_ok &= row["prompt_tokens"] == child_in and row["completion_tokens"] == child_out
        sums_ok &= abs(row["cost_usd"] - expected_cost) < 1e-9
        tokens += child_in + child_out
        cost += row["cost_usd"]
        latency += rolled["subagent_seconds"]
    n = max(len(trees), 1)
    return {
        "policy": policy,
        "tasks": len(trees),
        "standalone": {"mean_reward": sum(a) / n, "solved": sum(r > 0.5 for r in a) / n, "seconds": round(alone_s, 2)},
        "orchestrated": {"mean_reward": sum(o) / n, "solved": sum(r > 0.5 for r in o) / n, "seconds": round(tree_s, 2)},
        "same_outcome": sum((x > 0.5) == (y > 0.5) for x, y in zip(a, o)),
        "failed_calls": sum(c.metadata.get("call_status") != "ok" for t in trees for c in t.children),
        "failed_standalone": sum(t.status == "failed" for t in alone),
        "lost_episodes": sum(t.status == "failed" for t in alone)
        + sum(str(c.metadata.get("call_status", "")).startswith("error") for t in trees for c in t.children),
        "subagent_tokens": int(tokens),
        "subagent_cost_usd": cost,
        "subagent_seconds": round(latency, 3),
        "rollup_sums_ok": bool(sums_ok),
    }


# -- throughput ---------------------------------------------------------------------------------------


class _WorkerExpert:
    """The distractor subagent's player: answers at once."""

    policy_id = "worker-expert"

    def reset(self, observation: list[dict], info: dict) -> None:
        pass

    def act(self, observation: list[dict], info: dict) -> str:
        from skillgym.toolcalls import render_tool_call_text

        return render_tool_call_text("submit", {"answer": "done"})

    async def aact(self, observation: list[dict], info: dict) -> str:
        return self.act(observation, info)

    def close(self) -> None:
        pass


def make_worker_spec(backend: str = "local") -> Any:
    """A one-turn subagent env (``submit`` only), for throughput and as a routing distractor."""
    from skillgym.graders import AnswerMatch
    from skillgym.sandbox.base import SandboxConfig
    from skillgym.spec import EnvSpec
    from skillgym.tasks import TaskList

    return EnvSpec(
        id="worker-v0",
        tools=["submit"],
        sandbox=SandboxConfig(backend=backend),
        tasks=TaskList([]),
        grader=AnswerMatch("normalized"),
        max_turns=2,
        expert=_WorkerExpert,
    )


def _responder(calls: int):
    def respond(request: dict[str, Any]) -> dict[str, Any]:
        turn = sum(1 for m in request.get("messages", []) if m.get("role") == "assistant")
        if request.get("model") == "orchestrator" and turn == 0:
            tool_calls = [
                {
                    "id": f"s{i}",
                    "type": "function",
                    "function": {
                        "name": "subagent",
                        "arguments": json.dumps({"prompt": f"part {i} of the job", "config": "worker"}),
                    },
                }
                for i in range(calls)
            ]
            return {"role": "assistant", "content": "", "tool_calls": tool_calls}
        return {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "done",
                    "type": "function",
                    "function": {"name": "submit", "arguments": json.dumps({"answer": "done"})},
                }
            ],
        }

    return respond


async def _drive(envs: list[Any], policies: list[Any], tasks: list[Any], rounds: int) -> list[Any]:
    from skillgym.episode import arun_episode

    async def one(env: Any, policy: Any) -> list[Any]:
        return [await arun_episode(env, policy, task=tasks[r % len(tasks)]) for r in range(rounds)]

    out = await asyncio.gather(*(one(e, p) for e, p in zip(envs, policies)))
    return [t for per_env in out for t in per_env]


def _run(coro_factory: Any, workers: int) -> Any:
    loop = asyncio.new_event_loop()
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(workers))
    try:
        return loop.run_until_complete(coro_factory())
    finally:
        loop.close()


def throughput(episodes: int, calls: int, delay: float, rounds: int, backend: str) -> dict[str, Any]:
    """Concurrent orchestrator episodes with parallel subagent calls against a slow server."""
    import skillgym
    from skillgym.env import SkillEnv
    from skillgym.policies.openai_policy import OpenAIPolicy
    from skillgym.testing.openai_server import ScriptedOpenAIServer
    from skillgym.types import Task

    tasks = [Task(id=f"job-{i}", prompt=f"Do job {i}.", reference={"answer": "done"}) for i in range(8)]
    workers = episodes * (calls + 2) + 16
    with ScriptedOpenAIServer(_responder(calls), delay_s=delay, process=True, record=False) as server:
        roster = {
            "subagents": [
                {
                    "name": "worker",
                    "description": "Does one part of a job.",
                    "env": "skillgym.benchmarks.orchestrator:make_worker_spec",
                    "env_args": {"backend": backend},
                    "policy": f"openai:worker@{server.base_url}?max_retries=0",
                    "limits": {"timeout_s": 120},
                }
            ]
        }
        envs = [skillgym.make("orchestrator-v0", roster=roster, tasks=tasks, backend=backend) for _ in range(episodes)]
        policies = [OpenAIPolicy("orchestrator", base_url=server.base_url, max_retries=0) for _ in envs]
        worker_spec = make_worker_spec(backend)
        flat_envs = [SkillEnv(worker_spec) for _ in range(episodes * calls)]
        flat_policies = [OpenAIPolicy("worker", base_url=server.base_url, max_retries=0) for _ in flat_envs]
        flat_tasks = [
            Task(id=f"part-{i}", prompt=f"part {i} of the job", reference={"answer": "done"}) for i in range(calls)
        ]

        async def measure() -> tuple[list[Any], float, int, list[Any], float]:
            # One loop for warm-up and measurement: HTTP clients and connections stay warm.
            # The two phases run one after the other, each warmed first, and the orchestrator's
            # envs (with their subagent sandboxes) close before the baseline's start: at 32 x 4
            # both sets at once would be some 300 sandboxes.
            loop = asyncio.get_running_loop()
            await _drive(envs, policies, tasks, 1)  # envs, sandboxes, subagent slots
            before, started = server.request_count, time.perf_counter()
            trees = await _drive(envs, policies, tasks, rounds)
            tree_wall, requests = time.perf_counter() - started, server.request_count - before
            await asyncio.gather(*(loop.run_in_executor(None, env.close) for env in envs))
            await _drive(flat_envs, flat_policies, flat_tasks, 1)
            started = time.perf_counter()
            flat = await _drive(flat_envs, flat_policies, flat_tasks, rounds)
            flat_wall = time.perf_counter() - started
            await asyncio.gather(*(p.aclose() for p in [*policies, *flat_policies]))  # this loop's connections
            return trees, tree_wall, requests, flat, flat_wall

        try:
            trees, tree_wall, tree_requests, flat, flat_wall = _run(measure, workers)
        finally:
            for env in [*envs, *flat_envs]:
                env.close()
            for policy in [*policies, *flat_policies]:
                policy.close()
    ok = sum(t.reward == 1.0 and len(t.children) == calls for t in trees)
    ideal_tree, ideal_flat = rounds * 3 * delay, rounds * delay
    return {
        "episodes_concurrent": episodes,
        "calls_per_turn": calls,
        "delay_s": delay,
        "rounds": rounds,
        "sandbox": backend,
        "orchestrator": {
            "episodes": len(trees),
            "episodes_ok": ok,
            "subagent_calls": sum(len(t.children) for t in trees),
            "requests": tree_requests,
            "wall_s": round(tree_wall, 3),
            "ideal_s": round(ideal_tree, 3),
            "efficiency": round(ideal_tree / tree_wall, 4),
            "episodes_per_s": round(len(trees) / tree_wall, 2),
            "mean_subagent_seconds_per_episode": round(
                sum(t.metadata["rollup"]["subagent_seconds"] for t in trees) / max(len(trees), 1), 4
            ),
        },
        "baseline_flat_subagents": {
            "episodes": len(flat),
            "episodes_ok": sum(t.status == "ok" and t.terminated for t in flat),
            "wall_s": round(flat_wall, 3),
            "ideal_s": round(ideal_flat, 3),
            "efficiency": round(ideal_flat / flat_wall, 4),
            "episodes_per_s": round(len(flat) / flat_wall, 2),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--part", choices=["all", "accuracy", "throughput"], default="all")
    parser.add_argument("--tasks", type=int, default=TASKS, help="held-out tasks per policy (accuracy)")
    parser.add_argument(
        "--policies",
        default=",".join(POLICIES),
        help="subagent policy specs, comma separated (accuracy); e.g. hf:runs/distill/student",
    )
    parser.add_argument("--prices", default="3,15", help="subagent $ per million input,output tokens (accuracy)")
    parser.add_argument("--episodes", type=int, default=32, help="concurrent orchestrator episodes (throughput)")
    parser.add_argument("--calls", type=int, default=4, help="parallel subagent calls per turn (throughput)")
    parser.add_argument("--delay", type=float, default=0.2, help="server delay per request, seconds (throughput)")
    parser.add_argument("--rounds", type=int, default=3, help="episodes per concurrent slot (throughput)")
    parser.add_argument("--sandbox", default="local", choices=["auto", "local", "docker"])
    args = parser.parse_args(argv)
    report: dict[str, Any] = {
        "benchmark": "orchestrator",
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    if args.part in ("all", "accuracy"):
        prices = tuple(float(x) for x in args.prices.split(","))
        if len(prices) != 2:
            parser.error("--prices takes two numbers: input,output")
        policies = [p.strip() for p in args.policies.split(",") if p.strip()]
        report["accuracy"] = accuracy(policies, args.tasks, args.sandbox, prices)  # type: ignore[arg-type]
    if args.part in ("all", "throughput"):
        report["throughput"] = throughput(args.episodes, args.calls, args.delay, args.rounds, args.sandbox)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for row in report.get("accuracy", []):
            print(
                f"{row['policy']}: standalone {row['standalone']['mean_reward']:.3f}, orchestrated "
                f"{row['orchestrated']['mean_reward']:.3f} on {row['tasks']} tasks; same outcome on "
                f"{row['same_outcome']}; routing {row['routing']['accuracy']}; sums ok: {row['rollup_sums_ok']}"
            )
        if "throughput" in report:
            t = report["throughput"]
            print(
                f"orchestrator efficiency {t['orchestrator']['efficiency']:.2%} "
                f"({t['orchestrator']['episodes_per_s']} episodes/s); flat subagent baseline "
                f"{t['baseline_flat_subagents']['efficiency']:.2%}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
