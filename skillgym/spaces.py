"""Gymnasium spaces for chat: observations are message lists, actions are assistant turns."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

ROLES = ("system", "user", "assistant", "tool")
_CHARSET = 'abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,:;{}"<>/_-\n'


class ChatObservation(spaces.Space):
    """A list of OpenAI-format messages (dicts with a known ``role`` and text ``content``)."""

    def __init__(self, seed: int | None = None):
        super().__init__(shape=None, dtype=None, seed=seed)

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def contains(self, x: Any) -> bool:
        return isinstance(x, list) and all(
            isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content", ""), (str, type(None)))
            for m in x
        )

    def sample(self, mask: Any = None, probability: Any = None) -> list[dict[str, str]]:
        return [{"role": "user", "content": _random_text(self.np_random, 64)}]

    def __repr__(self) -> str:
        return "ChatObservation()"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, ChatObservation)


class AssistantAction(spaces.Space):
    """One assistant turn: raw model text (tool calls in ``<tool_call>`` markup) or an
    OpenAI assistant message dict. Any string is a member: the env must cope with it."""

    def __init__(self, max_length: int = 256, seed: int | None = None):
        self.max_length = max_length
        super().__init__(shape=None, dtype=None, seed=seed)

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) or (isinstance(x, dict) and x.get("role", "assistant") == "assistant")

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        return _random_text(self.np_random, int(self.np_random.integers(1, self.max_length + 1)))

    def __repr__(self) -> str:
        return f"AssistantAction(max_length={self.max_length})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, AssistantAction)


def _random_text(rng: np.random.Generator, n: int) -> str:
    idx = rng.integers(0, len(_CHARSET), size=n)
    return "".join(_CHARSET[i] for i in idx)
