"""A random policy: the floor any trained model must beat.

It calls random tools with schema-shaped random arguments, sometimes writes noise, and
submits a random answer after a few turns.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from skillgym.policies.base import Action, Policy
from skillgym.types import Message

_WORDS = ["main", "config", "utils", "parse", "value", "data", "test", "error", "name", "path", "init", "run"]


class RandomPolicy(Policy):
    def __init__(self, seed: int | None = None, max_turns: int = 4):
        self.rng = np.random.default_rng(seed)
        self.max_turns = max_turns
        self.policy_id = "random"
        self._turn = 0

    def reset(self, observation: list[Message], info: dict[str, Any]) -> None:
        self._turn = 0

    def act(self, observation: list[Message], info: dict[str, Any]) -> Action:
        self._turn += 1
        tools = [t["function"] for t in info.get("tools", [])]
        if self._turn >= self.max_turns or not tools:
            return {"role": "assistant", "content": self._word()}
        if self.rng.random() < 0.15:
            return " ".join(self._word() for _ in range(int(self.rng.integers(1, 8))))
        fn = tools[int(self.rng.integers(len(tools)))]
        args = {
            name: self._value(prop)
            for name, prop in fn["parameters"].get("properties", {}).items()
            if name in fn["parameters"].get("required", []) or self.rng.random() < 0.3
        }
        call = {
            "id": f"r{self._turn}",
            "type": "function",
            "function": {"name": fn["name"], "arguments": json.dumps(args)},
        }
        return {"role": "assistant", "content": "", "tool_calls": [call]}

    def _word(self) -> str:
        return str(self.rng.choice(_WORDS))

    def _value(self, prop: dict[str, Any]) -> Any:
        kind = prop.get("type")
        if kind == "integer":
            # At most 50 values above the minimum (a minimum above 50, e.g. a width >= 320, is valid).
            low = prop.get("minimum", 0)
            return int(self.rng.integers(low, min(prop.get("maximum", low + 50), low + 50) + 1))
        if kind == "number":
            return float(self.rng.uniform(0.1, 5))
        if kind == "boolean":
            return bool(self.rng.random() < 0.5)
        return self._word()
