"""The Policy protocol: given the chat so far, produce the next assistant turn.

An action is raw model text (tool calls in ``<tool_call>`` markup) or an OpenAI assistant
message dict. A dict may carry extras the env ignores but the episode runner records:
``usage`` ({prompt_tokens, completion_tokens}), ``token_ids`` and ``logprobs``.
"""

from __future__ import annotations

import abc
import asyncio
from typing import Any

from skillgym.types import Message

Action = str | dict[str, Any]


class Policy(abc.ABC):
    policy_id: str = "policy"

    def reset(self, observation: list[Message], info: dict[str, Any]) -> None:  # noqa: B027 (optional hook)
        """Called at the start of each episode with reset()'s observation and info."""

    @abc.abstractmethod
    def act(self, observation: list[Message], info: dict[str, Any]) -> Action:
        """The next assistant turn."""

    async def aact(self, observation: list[Message], info: dict[str, Any]) -> Action:
        """Async variant; the default runs ``act`` in a worker thread so the loop never blocks."""
        return await asyncio.to_thread(self.act, observation, info)

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release clients, models or servers."""
