"""Steps/s through the OpenEnv server vs in-process ``env.step``, same tasks, same run.

    python -m skillgym.benchmarks.openenv_server --json --tasks 20

The expert's actions for ``--tasks`` test tasks of the env are recorded once (an in-process
episode each); then the same actions are replayed twice, one after another in this process:
``in_process`` (``env.reset`` + ``env.step`` on one env) and ``openenv`` (one WebSocket
session on a loopback :class:`~skillgym.adapters.openenv.OpenEnvServer`: reset and step
messages, JSON both ways). Both use the same sandbox backend; the difference is the
protocol's cost (serialisation, the socket, the server's thread hop). Rewards must match
(``rewards_equal``). The WebSocket client is the ``websockets`` package speaking OpenEnv's
wire format (OpenEnv's own client lives in a separate environment, see the README).

Numbers are only meaningful on an otherwise idle machine: run it alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import skillgym
from skillgym.adapters.openenv import OpenEnvServer, ServerThread
from skillgym.episode import run_episode


def _record(env_id: str, n: int) -> tuple[list[str], dict[str, list[Any]], dict[str, float]]:
    env = skillgym.make(env_id, split="test")
    try:
        ids = [t.id for t in env.env_spec.tasks.tasks("test")[:n]]
        actions, rewards = {}, {}
        for tid in ids:
            traj = run_episode(env, env.env_spec.expert(), task_id=tid)
            actions[tid] = [
                {k: v for k, v in m.items() if k in ("role", "content", "tool_calls")}
                for m in traj.messages
                if m["role"] == "assistant"
            ]
            rewards[tid] = traj.reward
        return ids, actions, rewards
    finally:
        env.close()


def _in_process(env_id: str, ids: list[str], actions: dict[str, list[Any]]) -> tuple[float, int, dict[str, float]]:
    env = skillgym.make(env_id, split="test")
    try:
        env.reset(options={"task_id": ids[0]})  # sandbox warm, as the server's session will be after its first reset
        seconds, steps, rewards = 0.0, 0, {}
        for tid in ids:
            env.reset(options={"task_id": tid})
            for action in actions[tid]:
                start = time.perf_counter()
                _, reward, *_ = env.step(action)
                seconds += time.perf_counter() - start
                steps += 1
            rewards[tid] = float(reward)
        return seconds, steps, rewards
    finally:
        env.close()


def _openenv(env_id: str, ids: list[str], actions: dict[str, list[Any]]) -> tuple[float, int, dict[str, float]]:
    from websockets.sync.client import connect

    with ServerThread(OpenEnvServer(env_id, {"split": "test"})) as running:
        url = running.base_url.replace("http://", "ws://") + "/ws"
        with connect(url, max_size=None) as ws:

            def call(kind: str, data: dict[str, Any]) -> dict[str, Any]:
                ws.send(json.dumps({"type": kind, "data": data}))
                reply = json.loads(ws.recv())
                if reply["type"] == "error":
                    raise RuntimeError(reply["data"])
                return reply["data"]

            call("reset", {"task_id": ids[0]})
            seconds, steps, rewards = 0.0, 0, {}
            for tid in ids:
                call("reset", {"task_id": tid})
                for action in actions[tid]:
                    start = time.perf_counter()
                    result = call("step", {"message": action})
                    seconds += time.perf_counter() - start
                    steps += 1
                rewards[tid] = float(result["reward"])
    return seconds, steps, rewards


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="codebase-explorer-v0")
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="print only the JSON report")
    args = parser.parse_args(argv)
    ids, actions, expected = _record(args.env, args.tasks)
    report: dict[str, Any] = {"env": args.env, "tasks": len(ids)}
    results = {}
    for name, run in (("in_process", _in_process), ("openenv", _openenv)):
        seconds, steps, rewards = run(args.env, ids, actions)
        results[name] = rewards
        report[name] = {
            "steps": steps,
            "step_seconds": round(seconds, 4),
            "steps_per_s": round(steps / seconds, 2) if seconds else None,
            "mean_reward": round(sum(rewards.values()) / len(rewards), 4),
        }
    report["rewards_equal"] = results["in_process"] == results["openenv"] == expected
    if report["in_process"]["steps_per_s"] and report["openenv"]["steps_per_s"]:
        report["openenv_vs_in_process"] = round(
            report["openenv"]["steps_per_s"] / report["in_process"]["steps_per_s"], 3
        )
    json.dump(report, sys.stdout, indent=None if args.json else 2)
    sys.stdout.write("\n")
    return 0 if report["rewards_equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
