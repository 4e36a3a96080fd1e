"""Research tasks from HotpotQA questions, with a seeded train/test split."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from skillgym.tasks import TaskList
from skillgym.types import Task

from .corpus import url_for
from .data import Question

TEST_FRACTION = 0.2


def task_rows(questions: Iterable[Question]) -> list[dict[str, Any]]:
    """What a task needs of a question (no context paragraphs): small enough to cache as JSON
    beside the index and load in milliseconds."""
    return [
        {"id": q.id, "question": q.question, "answer": q.answer, "type": q.type, "gold_titles": q.gold_titles}
        for q in questions
    ]


def _in_test(task_id: str, seed: int, test_fraction: float) -> bool:
    # A hash, not a shuffle: a question's split never depends on which other questions exist.
    digest = hashlib.sha256(f"web-research:{seed}:{task_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < test_fraction


class ResearchTasks(TaskList):
    """HotpotQA questions as tasks: prompt = the question; reference = gold answer, gold titles
    and their URLs (``sources``); metadata = question type (``bridge`` or ``comparison``).

    Args:
        rows: From :func:`task_rows`.
        seed: Picks the split (the same seed always gives the same split).
        test_fraction: Share of questions held out in ``test``.
        types: Keep only these question types.
    """

    def __init__(
        self,
        rows: Iterable[dict[str, Any]],
        *,
        seed: int = 0,
        test_fraction: float = TEST_FRACTION,
        types: tuple[str, ...] = ("bridge", "comparison"),
    ) -> None:
        tasks = []
        for row in rows:
            if row["type"] not in types:
                continue
            split = "test" if _in_test(row["id"], seed, test_fraction) else "train"
            tasks.append(
                Task(
                    id=row["id"],
                    prompt=row["question"],
                    reference={
                        "answer": row["answer"],
                        "gold_titles": list(row["gold_titles"]),
                        "sources": [url_for(t) for t in row["gold_titles"]],
                    },
                    metadata={"type": row["type"]},
                    split=split,
                )
            )
        super().__init__(tasks, name="web-research (HotpotQA)", splits=("train", "test"))

    def counts(self) -> dict[str, int]:
        return {s: len(self.tasks(s)) for s in ("train", "test")}
