"""The grader protocol: score a finished episode in [0, 1] and explain the score."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from skillgym.sandbox.base import Sandbox
from skillgym.types import Grade, Message, Task

MAX_ANSWER_CHARS = 100_000
"""The most characters of a final answer any grader sees. ``SkillEnv`` cuts a longer answer to
this length once, before grading, and records ``answer_truncated`` (the answer's length and the
limit) in the grade details; the trajectory keeps the whole answer. Every built-in matcher is
linear, so this bounds grading time too, and an LLM judge's prompt stays a sane size."""


@runtime_checkable
class Grader(Protocol):
    """Scores a finished episode in [0, 1] and explains the score."""

    def grade(self, task: Task, answer: str, messages: list[Message], sandbox: Sandbox | None) -> Grade:
        """Score one finished episode.

        Args:
            task: The task the episode worked on (its ``reference`` holds the gold answer, checks, ...).
            answer: The final answer (the submit argument or the last assistant text), at most
                :data:`MAX_ANSWER_CHARS` characters when the env calls.
            messages: The whole chat of the episode.
            sandbox: The episode's sandbox, still open, so checks can run commands in it
                (None when there is none).

        Returns:
            The grade: score, named components and details.
        """
        ...
