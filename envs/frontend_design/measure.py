"""Expert vs random on the test briefs, with timings, as JSON on stdout.

    python -m skillgym.envs.frontend_design.measure [--limit N] [--seed S]

Reports each policy's mean reward and mean components, the expert's episode time (p50, max),
``render_page`` time (p50) and grader time (p50), measured on this machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import skillgym
from skillgym.policies.random import RandomPolicy

from . import ENV_ID


class _Timed:
    """A stand-in for a tool or grader method that records how long each call took."""

    def __init__(self, target: Any, times: list[float]) -> None:
        self.target, self.times = target, times

    def __call__(self, *args: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self.target(*args)
        finally:
            self.times.append(time.perf_counter() - t0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)


def run_policy(env: Any, policy: Any, task_ids: list[str]) -> dict[str, Any]:
    rewards, components, episode_s, render_s, grade_s = [], [], [], [], []
    tool = env.tools["render_page"]
    grader = env.env_spec.grader
    env.tools["render_page"] = _Timed(tool, render_s)
    grader.grade = _Timed(type(grader).grade.__get__(grader), grade_s)  # an instance attribute shadows the method
    try:
        for task_id in task_ids:
            t0 = time.perf_counter()
            obs, info = env.reset(options={"task_id": task_id})
            policy.reset(obs, info)
            reward, done = 0.0, False
            while not done:
                obs, reward, term, trunc, info = env.step(policy.act(obs, info))
                done = term or trunc
            episode_s.append(time.perf_counter() - t0)
            rewards.append(reward)
            components.append(info.get("reward_components", {}))
    finally:
        env.tools["render_page"] = tool
        del grader.grade
    keys = sorted({k for c in components for k in c})
    return {
        "episodes": len(rewards),
        "mean_reward": round(statistics.fmean(rewards), 4) if rewards else None,
        "mean_components": {k: round(statistics.fmean(c.get(k, 0.0) for c in components), 4) for k in keys},
        "episode_s_p50": round(statistics.median(episode_s), 2) if episode_s else None,
        "episode_s_max": round(max(episode_s), 2) if episode_s else None,
        "render_page_s_p50": round(statistics.median(render_s), 2) if render_s else None,
        "grader_s_p50": round(statistics.median(grade_s), 2) if grade_s else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=0, help="at most this many test briefs (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    ns = parser.parse_args(argv)
    env = skillgym.make(ENV_ID, seed=ns.seed)
    try:
        ids = [t.id for t in env.env_spec.tasks.tasks("test")]
        ids = ids[: ns.limit] if ns.limit else ids
        report = {
            "env": ENV_ID,
            "split": "test",
            "briefs": len(ids),
            "expert": run_policy(env, env.env_spec.expert(), ids),
            "random": run_policy(env, RandomPolicy(seed=ns.seed), ids),
        }
    finally:
        env.close()
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
