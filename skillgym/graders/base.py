"""The grader protocol: score a finished episode in [0, 1] and explain the score."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from skillgym.sandbox.base import Sandbox
from skillgym.types import Grade, Message, Task


@runtime_checkable
class Grader(Protocol):
    def grade(self, task: Task, answer: str, messages: list[Message], sandbox: Sandbox | None) -> Grade:
        """``answer`` is the final answer (submit argument or last assistant text);
        ``sandbox`` is still open, so checks can run commands in it."""
        ...
