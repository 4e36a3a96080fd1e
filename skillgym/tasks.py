"""Task sources: where an environment's tasks come from.

A source answers ``tasks(split)`` with a stable, ordered list, so that a seed picks the
same task on every machine. Procedural generators, task files (JSONL of :class:`Task`) and
in-memory lists all fit the same small protocol.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from pydantic import ValidationError

from skillgym.io import atomic_write, validation_message
from skillgym.types import Task


@runtime_checkable
class TaskSource(Protocol):
    def tasks(self, split: str) -> Sequence[Task]: ...

    def get(self, task_id: str) -> Task: ...


class TaskList:
    """Tasks held in memory, in a stable order (also the base of generated and file-backed sources).

    Args:
        tasks: The tasks; ``tasks(split)`` keeps their order within each split.
        name: How error messages name this source (e.g. ``"codebase-explorer"``).
        splits: The split names this source has; asking for another is an error. None: any
            split may be asked for (one with no tasks gives an empty list).
    """

    def __init__(self, tasks: Iterable[Task], *, name: str = "this source", splits: Sequence[str] | None = None):
        self._tasks = list(tasks)
        self.name = name
        self._split_names = tuple(splits) if splits is not None else None
        self._by_id: dict[str, Task] = {}
        self._splits: dict[str, list[Task]] = {}
        for task in self._tasks:
            if task.id in self._by_id:
                raise ValueError(f"duplicate task id {task.id!r}: every task in a source needs its own id")
            self._by_id[task.id] = task
            self._splits.setdefault(task.split, []).append(task)

    def tasks(self, split: str) -> list[Task]:
        """The tasks of ``split``, in the source's order (a new list each call)."""
        if self._split_names is not None and split not in self._split_names:
            raise ValueError(f"unknown split {split!r}; {self.name} has {', '.join(map(repr, self._split_names))}")
        return list(self._splits.get(split, ()))

    def get(self, task_id: str) -> Task:
        """The task with id ``task_id`` (a ``KeyError`` naming the source if there is none)."""
        try:
            return self._by_id[task_id]
        except KeyError:
            raise KeyError(f"no task with id {task_id!r} in {self.name} ({len(self._tasks)} tasks)") from None

    def __len__(self) -> int:
        return len(self._tasks)


def load_tasks_jsonl(path: str | Path) -> TaskList:
    """Read a JSONL task file; a bad line is reported by file, line number and field."""
    path = Path(path)
    tasks = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                tasks.append(Task.model_validate(json.loads(line)))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            except ValidationError as exc:
                raise ValueError(f"{path}:{lineno}: {validation_message(exc)}") from None
    return TaskList(tasks)


def save_tasks_jsonl(tasks: Iterable[Task], path: str | Path) -> None:
    """Write tasks atomically (temp file, then rename)."""
    atomic_write(path, lambda fh: fh.writelines(task.model_dump_json() + "\n" for task in tasks))
