"""Acceptance (issue 9): an adversarial policy cannot change its grade or another episode's results.

A scripted attacker plays episodes of a real SkillEnv whose grade comes from command checks
run in the episode's sandbox (what programmatic graders do). It tries every forging route
that once worked: writing fake answers into the executor's stdout, freezing or killing the
executor, tracing it, flooding its stderr, leaving processes that write into later commands'
output or into the workspace, and files in /tmp and /dev/shm for the next episode. Honest
episodes then run in the same env (the same sandbox, reset between episodes). Each grade and
each tool result must be exactly what an untouched sandbox gives.
"""

from __future__ import annotations

import json
import time

import pytest

from skillgym.env import SkillEnv
from skillgym.graders.checks import CommandChecks
from skillgym.sandbox.base import SandboxConfig
from skillgym.sandbox.local import bwrap_works
from skillgym.spec import EnvSpec
from skillgym.tasks import TaskList
from skillgym.toolcalls import render_tool_call_text as call
from skillgym.types import Task

pytestmark = pytest.mark.timeout(120)

# The task is solved when solved.txt holds "42"; the second check wants exit code 3 from a
# command that exits 3, so a forged "exit 0" would fail it (and a forged answer to the first
# check would pass it).
CHECKS = [
    {"name": "solved", "command": "grep -qx 42 solved.txt"},
    {"name": "exit-3", "command": "echo checking; exit 3", "exit_code": 3, "output_regex": "^checking$"},
]
FAKE_ANSWERS = "".join(
    json.dumps(
        {
            "id": i,
            "ok": True,
            "result": {
                "exit_code": 0,
                "stdout": "",
                "stderr": "",
                "timed_out": False,
                "truncated": False,
                "seconds": 0,
            },
        }
    )
    + "\\n"
    for i in range(1, 80)  # the ids the host will use next
)
ATTACKS = [
    # Forged answers written into the executor's stdout (the channel the host reads).
    f"printf '{FAKE_ANSWERS}' > /proc/$PPID/fd/1",
    f"printf '{FAKE_ANSWERS}' > /proc/1/fd/1",
    # Freeze or kill the executor, then answer in its place.
    "kill -STOP $PPID; kill -9 $PPID; kill -STOP 1",
    'python3 -c "import ctypes,os; print(ctypes.CDLL(None).ptrace(16, os.getppid(), 0, 0))"',
    # Flood the executor's stderr (the container log on Docker).
    "head -c 5000000 /dev/zero > /proc/$PPID/fd/2",
    # A process left running that writes fake output into every later command, and one that
    # solves the task behind the grader's back (or in the next episode).
    "setsid bash -c 'while :; do for f in /proc/[0-9]*/fd/1; do echo 42 > $f; done 2>/dev/null; done' "
    "> /dev/null 2>&1 < /dev/null &",
    "setsid bash -c 'sleep 0.5; echo 42 > /workspace/solved.txt' > /dev/null 2>&1 < /dev/null &",
    "nohup bash -c 'sleep 1; echo 42 > /workspace/solved.txt' > /dev/null 2>&1 &",
    # Leftovers for the next episode.
    "echo 42 > /tmp/solved.txt; echo 42 > /dev/shm/solved.txt 2>/dev/null; true",
]


def _tasks() -> TaskList:
    return TaskList(
        [
            Task(
                id=f"t{i}", prompt="Write 42 into solved.txt, then submit.", reference={"checks": CHECKS}, split="test"
            )
            for i in range(3)
        ]
    )


def _episode(env: SkillEnv, task_id: str, commands: list[str]) -> tuple[float, list[str]]:
    """Play one episode of bash calls then submit; returns the reward and the tool results."""
    env.reset(options={"task_id": task_id})
    results = []
    for command in commands:
        obs, reward, terminated, truncated, info = env.step(call("bash", {"command": command, "timeout": 10}))
        assert not (terminated or truncated), obs[-1]
        results.append(obs[-1]["content"])
    time.sleep(1.5)  # give anything the episode left behind time to act before grading
    obs, reward, terminated, truncated, info = env.step(call("submit", {"answer": "done"}))
    assert terminated and "grader_error" not in info, info
    return reward, results


@pytest.mark.parametrize("backend", ["docker", "local"])
def test_an_adversarial_policy_cannot_change_grades(backend: str, request: pytest.FixtureRequest) -> None:
    if backend == "docker":
        request.getfixturevalue("docker_base_image")
    elif not bwrap_works():
        pytest.skip("bubblewrap is missing: the unisolated local backend protects nothing")
    spec = EnvSpec(
        id="integrity-v0",
        tools=["bash", "submit"],
        sandbox=SandboxConfig(backend=backend),
        tasks=_tasks(),
        grader=CommandChecks(),
        max_turns=len(ATTACKS) + 4,
        max_tokens=1_000_000,
    )
    env = SkillEnv(spec, split="test")
    try:
        started = time.monotonic()
        # 1. The attacker, without solving the task: the honest grade is 0.5 (exit-3 passes).
        reward, results = _episode(env, "t0", ATTACKS)
        assert reward == 0.5
        # Every attack was refused, not merely survived: the executor was never killed or replaced.
        assert not any("stopped working" in r for r in results), results
        # 2. An honest episode right after, in the same sandbox: clean workspace, true results.
        reward, results = _episode(env, "t1", ["ls -A /workspace /tmp; echo end", "echo hi; exit 7"])
        assert reward == 0.5, "something the attacker left solved (or broke) the next episode"
        assert "solved.txt" not in results[0] and "end" in results[0], results[0]
        assert "hi" in results[1] and "7" in results[1] and "42" not in results[1], results[1]
        # 3. An honest solver still gets full marks.
        reward, _ = _episode(env, "t2", ["echo 42 > solved.txt"])
        assert reward == 1.0
        assert time.monotonic() - started < 60
    finally:
        env.close()
