"""The frontend-design-v0 benchmark: expert vs random on the test briefs, with timings, as JSON on stdout.

    python -m skillgym.envs.frontend_design.measure --json [--limit N] [--seed S] [--no-random]

Reports each policy's mean reward and mean components, episode time (p50, p90, max),
``render_page`` time (p50, p90) and grader time (p50, p90), the size of the screenshots
``render_page`` returns as image parts, the machine (CPUs, load average before and after:
other work on the machine slows every number here) and the acceptance checks of issue 11
(expert mean reward >= 0.85, every expert episode <= 10 s).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if q == 0.5:
        return round(statistics.median(values), 2)
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def run_policy(env: Any, policy: Any, task_ids: list[str]) -> dict[str, Any]:
    """Play ``policy`` on each task once; its rewards, components and timings."""
    rewards, components, episode_s, render_s, grade_s, shot_bytes = [], [], [], [], [], []
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
            shot_bytes += [i["bytes"] for m in obs if m.get("role") == "tool" for i in m.get("images") or []]
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
        "episode_s_p50": _quantile(episode_s, 0.5),
        "episode_s_p90": _quantile(episode_s, 0.9),
        "episode_s_max": round(max(episode_s), 2) if episode_s else None,
        "render_page_calls": len(render_s),
        "render_page_s_p50": _quantile(render_s, 0.5),
        "render_page_s_p90": _quantile(render_s, 0.9),
        "grader_s_p50": _quantile(grade_s, 0.5),
        "grader_s_p90": _quantile(grade_s, 0.9),
        "screenshot_image_bytes_p50": int(statistics.median(shot_bytes)) if shot_bytes else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=0, help="at most this many test briefs (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-random", action="store_true", help="skip the random policy")
    parser.add_argument("--json", action="store_true", help="one line of JSON (default: indented JSON)")
    ns = parser.parse_args(argv)
    load_before = os.getloadavg()
    started = time.perf_counter()
    env = skillgym.make(ENV_ID, seed=ns.seed)
    try:
        ids = [t.id for t in env.env_spec.tasks.tasks("test")]
        ids = ids[: ns.limit] if ns.limit else ids
        # One untimed episode first: the sandbox's start is not an episode's cost.
        run_policy(env, env.env_spec.expert(), ids[:1])
        expert = run_policy(env, env.env_spec.expert(), ids)
        report: dict[str, Any] = {"env": ENV_ID, "split": "test", "briefs": len(ids), "expert": expert}
        if not ns.no_random:
            report["random"] = run_policy(env, RandomPolicy(seed=ns.seed), ids)
    finally:
        env.close()
    report["acceptance"] = {
        "expert_mean_reward_ge_0.85": (expert["mean_reward"] or 0.0) >= 0.85,
        "expert_episode_max_le_10s": expert["episode_s_max"] is not None and expert["episode_s_max"] <= 10.0,
    }
    report["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_1m_before": round(load_before[0], 2),
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    sys.stdout.write(json.dumps(report, indent=None if ns.json else 2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
