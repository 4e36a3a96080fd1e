"""Rollout throughput: how close the engine keeps a slow LLM server saturated.

    python -m skillgym.benchmarks.rollout --json --sandbox docker --plot rollout.png

A loopback OpenAI-compatible server (``skillgym.testing.openai_server``) replays the env's
scripted expert and answers every request a fixed delay (default 200 ms) after it arrived,
its own work on the answer included, so the server's latency is the delay. It runs in its own
process, as a model server does, so its work does not share the driver's GIL. For each concurrency level the
full engine runs (``run_rollouts``: OpenAI policy over HTTP, env steps in real sandboxes,
durable store writes) and the report gives episodes/s, turns/s, the ideal turns/s
(concurrency / delay), efficiency (measured / ideal) and the framework overhead: the share
of wall time beyond the server's delay, ``(wall - turns * delay / concurrency) / wall``
(at concurrency 1: everything that is not waiting for the server). Wall time starts after
the env pool is warm (envs built, sandboxes started), as in a long run.

Targets (DESIGN.md / issues 3 and 16): at concurrency 64, >= 80% of ideal (320 turns/s at
200 ms); overhead at concurrency 1 <= 5%. Sandboxes are Docker containers by default (what
users run); ``--sandbox local`` uses bubblewrap.

Where the time goes (profiled with ``py-spy --gil`` at concurrency 32-64 on 2 cores): the
driver process is bound by its one interpreter lock, and most of that time is the async HTTP
client and the event loop machinery around it. That is why the client's async face is aiohttp
(about 0.5 ms of CPU per request; httpx's AsyncClient took 1.7 ms) with connections opened
before the clock starts (``OpenAIPolicy.awarm``); of what is left, serializing the request body
is the largest single item, env steps take about 5%. Docker adds about 1.6 ms of CPU per tool
call outside the driver (dockerd relaying the attach stream, the shim, the executor in the
container), and on a 2-core machine the server process and dockerd compete with the driver
for the same cores.

Which env. The default, ``skillgym.benchmarks.rollout:make_bench_spec``, is a small env whose
tools are cheap sandbox round trips (list a folder, read a file, submit: three turns), so the
numbers measure the framework. ``--env codebase-explorer-v0`` measures the real env, whose
repository-wide ``grep`` calls cost tens of milliseconds of CPU each: on a 2-core machine the
tools themselves, not the engine, then bound throughput.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

LEVELS = (1, 8, 32, 64, 128)
BENCH_ENV = "skillgym.benchmarks.rollout:make_bench_spec"
N_BENCH_TASKS = 4000


class _LookupExpert:
    """list_dir notes -> read_file the one the prompt names -> submit the number in it."""

    policy_id = "bench-expert"

    def reset(self, observation: list[dict], info: dict) -> None:
        self.path = observation[-1]["content"].split("written in ")[1].split("?")[0]

    def act(self, observation: list[dict], info: dict) -> dict:
        turn = sum(1 for m in observation if m["role"] == "assistant")
        if turn == 0:
            name, args = "list_dir", {"path": "notes"}
        elif turn == 1:
            name, args = "read_file", {"path": self.path}
        else:
            name, args = "submit", {"answer": observation[-1]["content"].rsplit(" ", 1)[-1].strip()}
        call = {"id": f"b{turn}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
        return {"role": "assistant", "content": "", "tool_calls": [call]}


def make_bench_spec(backend: str = "docker") -> Any:
    """The framework benchmark's env spec: cheap tools, a deterministic three-turn expert."""
    from skillgym.graders import AnswerMatch
    from skillgym.sandbox.base import SandboxConfig
    from skillgym.spec import EnvSpec

    skill, tasks, expert = _bench_parts()
    return EnvSpec(
        id="rollout-bench-v0",
        skill=skill,
        tools=["list_dir", "read_file", "submit"],
        sandbox=SandboxConfig(backend=backend),
        tasks=tasks,
        grader=AnswerMatch("normalized"),
        max_turns=6,
        expert=expert,
    )


@functools.cache
def _bench_parts() -> tuple[Any, Any, Any]:
    """Skill, task list and expert, made once per process: every env slot shares them (4000
    tasks take a while to validate, and slots are built while the clock is stopped anyway)."""
    from skillgym.policies.base import Policy
    from skillgym.tasks import TaskList
    from skillgym.types import SkillSpec, Task

    expert = type("LookupExpert", (_LookupExpert, Policy), {})
    tasks = [
        Task(
            id=f"lookup-{i:05d}",
            prompt=f"What number is written in notes/n{i % 8}.txt?",
            files={f"notes/n{k}.txt": f"the number is {i * 8 + k}" for k in range(8)},
            reference={"answer": str(i * 8 + i % 8)},
        )
        for i in range(N_BENCH_TASKS)
    ]
    skill = SkillSpec(
        name="lookup",
        description="Reads numbers from files.",
        instructions="Find the file, read it, submit the number.",
    )
    return skill, TaskList(tasks), expert


TARGET_LEVEL, TARGET_EFFICIENCY, TARGET_OVERHEAD_AT_1 = 64, 0.80, 0.05


def serve(env_id: str, delay_s: float) -> None:
    """Server process: print the base URL, serve until stdin closes."""
    import skillgym
    from skillgym.testing.openai_server import ReplayResponder, ScriptedOpenAIServer

    env = skillgym.make(env_id, backend="local")  # its tasks and expert; no sandbox starts
    responder = ReplayResponder.for_env(env, mode="structured")
    with ScriptedOpenAIServer(responder, delay_s=delay_s, record=False) as server:
        print(f"READY {server.base_url}", flush=True)
        sys.stdin.read()


class ServerProcess:
    def __init__(self, env_id: str, delay_s: float) -> None:
        argv = [
            sys.executable,
            "-m",
            "skillgym.benchmarks.rollout",
            "--serve",
            "--env",
            env_id,
            "--delay",
            str(delay_s),
        ]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("READY "):
            self.close()
            raise RuntimeError(f"the benchmark server did not start (it printed {line!r}); run with --serve to see why")
        self.base_url = line.split()[1]

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def sandbox_backend(requested: str) -> str:
    if requested != "auto":
        return requested
    from skillgym.sandbox import docker_available

    return "docker" if docker_available() else "local"


def run_level(args: argparse.Namespace, base_url: str, concurrency: int, root: Path, sandbox: str) -> dict[str, Any]:
    from skillgym.rollouts import RolloutConfig, iter_trajectories, run_rollouts

    episodes = 10 if concurrency == 1 else max(concurrency * args.episodes_per_slot, 40)
    config = RolloutConfig(
        env=args.env,
        env_kwargs={"backend": sandbox},
        policy=f"openai:expert@{base_url}?max_retries=0&timeout=60",
        n_tasks=episodes,
        concurrency=concurrency,
        backend=args.backend,
        num_actors=args.actors,
        out=root / f"c{concurrency}",
        max_attempts=1,
    )
    summary = run_rollouts(config)
    records = list(iter_trajectories(config.out))
    policy_s = [t.policy_seconds for r in records for t in r.timings if t.policy_seconds is not None]
    step_s = [t.tool_seconds for r in records for t in r.timings]
    ideal = concurrency / args.delay
    wall = summary.wall_s
    return {
        "concurrency": concurrency,
        "episodes": summary.completed + summary.failed,
        "failed": summary.failed,
        "mean_reward": summary.mean_reward,
        "turns": summary.turns,
        "wall_s": round(wall, 3),
        "episodes_per_s": round(summary.episodes_per_s, 2),
        "turns_per_s": round(summary.turns_per_s, 2),
        "ideal_turns_per_s": round(ideal, 2),
        "efficiency": round(summary.turns_per_s / ideal, 4),
        "overhead_pct": round(100 * (wall - summary.turns * args.delay / concurrency) / wall, 2),
        "mean_policy_turn_s": round(statistics.fmean(policy_s), 5) if policy_s else None,
        "mean_env_step_s": round(statistics.fmean(step_s), 5) if step_s else None,
    }


def plot(results: list[dict[str, Any]], path: Path, delay: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = [r["concurrency"] for r in results]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    left.plot(
        levels,
        [r["ideal_turns_per_s"] for r in results],
        "--",
        color="#999999",
        label=f"ideal (concurrency / {delay:g} s)",
    )
    left.plot(levels, [r["turns_per_s"] for r in results], "o-", color="#2f6db5", label="measured")
    left.set(xscale="log", yscale="log", xlabel="concurrent episodes", ylabel="turns / s", title="rollout throughput")
    left.set_xticks(levels, [str(x) for x in levels])
    left.legend(fontsize=8)
    right.plot(levels, [100 * r["efficiency"] for r in results], "o-", color="#2f6db5", label="efficiency")
    right.plot(levels, [r["overhead_pct"] for r in results], "s-", color="#c0392b", label="framework overhead")
    right.axhline(100 * TARGET_EFFICIENCY, color="#999999", linestyle=":", linewidth=1)
    right.set(
        xscale="log",
        xlabel="concurrent episodes",
        ylabel="% of wall time / of ideal",
        ylim=(0, 105),
        title="efficiency",
    )
    right.set_xticks(levels, [str(x) for x in levels])
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--plot", type=Path, default=None, help="write a PNG of throughput and efficiency")
    parser.add_argument("--delay", type=float, default=0.2, help="server delay per request, seconds")
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)), help="concurrency levels, comma separated")
    parser.add_argument("--episodes-per-slot", type=int, default=5, help="episodes per concurrent slot (levels > 1)")
    parser.add_argument("--env", default=BENCH_ENV, help="env id or module:function (default: the light bench env)")
    parser.add_argument(
        "--sandbox",
        default="docker",
        choices=["auto", "local", "docker"],
        help="sandbox backend (default docker: the isolation users run)",
    )
    parser.add_argument("--backend", default="local", choices=["local", "ray"], help="rollout backend")
    parser.add_argument("--actors", type=int, default=2, help="Ray actors (with --backend ray)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.env, args.delay)
        return 0

    sandbox = sandbox_backend(args.sandbox)
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    server = ServerProcess(args.env, args.delay)
    results = []
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="skillgym-rollout-bench-") as tmp:
            for concurrency in levels:
                results.append(run_level(args, server.base_url, concurrency, Path(tmp), sandbox))
                if not args.json:
                    r = results[-1]
                    print(
                        f"concurrency {concurrency:4d}: {r['turns_per_s']:8.1f} turns/s  ({100 * r['efficiency']:.1f}% of "
                        f"{r['ideal_turns_per_s']:.0f}), overhead {r['overhead_pct']:.2f}%",
                        file=sys.stderr,
                    )
    finally:
        server.close()
    by_level = {r["concurrency"]: r for r in results}
    report = {
        "benchmark": "rollout",
        "env": args.env,
        "sandbox_backend": sandbox,
        "rollout_backend": args.backend,
        "policy": "openai (aiohttp) -> loopback ScriptedOpenAIServer(ReplayResponder) in a separate process",
        "server_delay_s": args.delay,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "results": results,
        "targets": {
            f"efficiency_at_{TARGET_LEVEL}": {
                "target": TARGET_EFFICIENCY,
                "measured": by_level[TARGET_LEVEL]["efficiency"] if TARGET_LEVEL in by_level else None,
                "met": by_level[TARGET_LEVEL]["efficiency"] >= TARGET_EFFICIENCY if TARGET_LEVEL in by_level else None,
            },
            "overhead_pct_at_1": {
                "target": 100 * TARGET_OVERHEAD_AT_1,
                "measured": by_level[1]["overhead_pct"] if 1 in by_level else None,
                "met": by_level[1]["overhead_pct"] <= 100 * TARGET_OVERHEAD_AT_1 if 1 in by_level else None,
            },
        },
        "total_s": round(time.perf_counter() - started, 1),
    }
    if args.plot:
        plot(results, args.plot, args.delay)
        report["plot"] = str(args.plot)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
