"""Envs and policies for the rollout and export tests (no tests here).

The rollout engine builds envs from a ``module:function`` string in every worker (threads,
Ray actors, a subprocess killed with -9), so the tiny env of tests/test_env.py is wrapped in
importable factories here, with a scripted expert that solves it through its tools.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from skillgym.policies.base import Action, Policy
from skillgym.toolcalls import render_tool_call_text as call
from skillgym.types import Message

sys.path.insert(0, str(Path(__file__).resolve().parent))  # test_env is a sibling module

from test_env import make_env  # noqa: E402

ENTRY = "test_rollouts_support:make_number_env"
TESTS_DIR = str(Path(__file__).resolve().parent)


class NumberExpert(Policy):
    """Reads the file the prompt names, then submits the number in it: text actions first
    turn (markup), an OpenAI dict the second, so both action forms go through the engine."""

    policy_id = "number-expert"

    def reset(self, observation: list[Message], info: dict[str, Any]) -> None:
        self.path = re.search(r"(notes/\S+\.txt)", observation[-1]["content"])[1]  # type: ignore[index]

    def act(self, observation: list[Message], info: dict[str, Any]) -> Action:
        last = observation[-1]
        if last["role"] != "tool":
            return "Let me read the file.\n" + call("read_file", {"path": self.path})
        number = re.search(r"the number is (\d+)", last["content"])[1]  # type: ignore[index]
        arguments = json.dumps({"answer": number})
        tool_call = {"id": "c1", "type": "function", "function": {"name": "submit", "arguments": arguments}}
        return {"role": "assistant", "content": "Found it.", "tool_calls": [tool_call]}


_FLAKY_SEEN: set[str] = set()


class FlakyExpert(NumberExpert):
    """Always raises on task t5; raises on the first attempt only at task t6 (this process)."""

    def reset(self, observation: list[Message], info: dict[str, Any]) -> None:
        super().reset(observation, info)
        self.task_id = info["task_id"]

    def act(self, observation: list[Message], info: dict[str, Any]) -> Action:
        if self.task_id == "t5":
            raise RuntimeError("scripted policy failure on t5")
        if self.task_id == "t6" and "t6" not in _FLAKY_SEEN:
            _FLAKY_SEEN.add("t6")
            raise ConnectionError("transient failure on t6")
        return super().act(observation, info)


class SlowExpert(NumberExpert):
    """Reads the file through a bash call that blocks 0.4 s in the sandbox."""

    def act(self, observation: list[Message], info: dict[str, Any]) -> Action:
        if observation[-1]["role"] != "tool":
            return call("bash", {"command": f"sleep 0.4; cat {self.path}"})
        return super().act(observation, info)


WARMED: list[int] = []


class WarmExpert(NumberExpert):
    """Records the concurrency its ``awarm`` hook was given (as an HTTP policy opens clients)."""

    async def awarm(self, concurrency: int) -> None:
        WARMED.append(concurrency)


def make_number_env(backend: str = "local", expert: str = "good", split: str = "train", **overrides: Any):
    factory = {"good": NumberExpert, "flaky": FlakyExpert, "slow": SlowExpert, "warm": WarmExpert}[expert]
    return make_env(backend, expert=factory, **overrides)
