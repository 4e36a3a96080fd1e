"""The trajectory store: append-only JSONL shards, one final :class:`Trajectory` a line.

Layout of a run directory::

    OUT/manifest.json               what produced the records (rollouts/manifest.py)
    OUT/trajectories/shard-00000.jsonl
    OUT/trajectories/shard-00001.jsonl   one new shard per writing session (and every
    ...                                  ``shard_max_records`` records)
    OUT/.lock                       held (flock) by the one process writing

Durability: every record is one ``write`` of a whole line, flushed at once (so a ``kill -9``
loses nothing already written: the data is in the kernel), and fsynced every
``fsync_interval_s`` (so a power cut loses at most that much). A crash can leave a torn last
line; the writer truncates it on open and readers skip it, so the key simply counts as
missing and is run again.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from skillgym.io import fsync_dir
from skillgym.types import Trajectory

log = logging.getLogger(__name__)

SHARD_RE = re.compile(r"^shard-(\d{5,})\.jsonl$")
Key = tuple[str, int]


class StoreError(RuntimeError):
    """The run directory cannot be written (another writer holds it, or it is unreadable)."""


@dataclass
class RecordInfo:
    """What the engine needs to know about a stored record without keeping it in memory."""

    status: str
    reward: float | None
    turns: int
    tokens: int


def shard_paths(root: Path) -> list[Path]:
    """The run's shards in write order."""
    folder = Path(root) / "trajectories"
    if not folder.is_dir():
        return []
    shards = [p for p in folder.iterdir() if SHARD_RE.match(p.name)]
    return sorted(shards, key=lambda p: int(SHARD_RE.match(p.name)[1]))  # type: ignore[index]


def _complete_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, line) for every newline-terminated line; a torn tail is not one."""
    with path.open("rb") as fh:
        for lineno, line in enumerate(fh, start=1):
            if line.endswith(b"\n"):
                yield lineno, line


def iter_trajectories(root: Path) -> Iterator[Trajectory]:
    """Every stored trajectory, once per key (the first record wins), in write order.

    Read-only: safe while a writer appends (a line being written is skipped as torn).
    A line that is not a valid record is skipped with a warning naming file and line.
    """
    seen: set[Key] = set()
    for shard in shard_paths(root):
        for lineno, line in _complete_lines(shard):
            try:
                traj = Trajectory.model_validate_json(line)
            except ValueError as exc:
                log.warning("%s:%d: skipping a record that does not parse (%s)", shard, lineno, str(exc)[:200])
                continue
            key = (traj.task_id, traj.sample_index)
            if key not in seen:
                seen.add(key)
                yield traj


def repair_torn_tail(path: Path) -> int:
    """Cut a trailing partial line (left by a crash mid-write). Returns the bytes removed."""
    size = path.stat().st_size
    if size == 0:
        return 0
    with path.open("rb+") as fh:
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return 0
        # Walk back to the last newline in blocks; the torn line is at most one record long.
        end, block = size, 1 << 16
        keep = 0
        while end > 0:
            start = max(0, end - block)
            fh.seek(start)
            chunk = fh.read(end - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            end = start
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
    return size - keep


class TrajectoryStore:
    """The single writer of a run directory. Use as a context manager::

        with TrajectoryStore(out) as store:
            if key not in store: store.append(trajectory)
    """

    def __init__(self, root: Path, *, shard_max_records: int = 10_000, fsync_interval_s: float = 1.0) -> None:
        self.root = Path(root)
        self.shard_max_records = shard_max_records
        self.fsync_interval_s = fsync_interval_s
        self.index: dict[Key, RecordInfo] = {}
        self.duplicates = 0  # records whose key was already stored (never written by us)
        self.repaired_bytes = 0
        self._lock_fh: IO[str] | None = None
        self._fh: IO[bytes] | None = None
        self._shard_records = 0
        self._next_shard = 0
        self._last_sync = time.monotonic()
        self._unsynced = False

    # -- lifecycle ----------------------------------------------------------------------------
    def open(self) -> TrajectoryStore:
        (self.root / "trajectories").mkdir(parents=True, exist_ok=True)
        self._take_lock()
        shards = shard_paths(self.root)
        for shard in shards:
            self.repaired_bytes += repair_torn_tail(shard)
        if self.repaired_bytes:
            log.warning("%s: cut %d bytes of a torn last record (an interrupted write)", self.root, self.repaired_bytes)
        self._scan(shards)
        self._next_shard = int(SHARD_RE.match(shards[-1].name)[1]) + 1 if shards else 0  # type: ignore[index]
        return self

    def _take_lock(self) -> None:
        lock_path = self.root / ".lock"
        fh = lock_path.open("a+")
        try:
            # flock dies with the process, so a kill -9 never leaves a stale lock behind.
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            raise StoreError(
                f"{self.root} is being written by another process (pid {holder}); wait for it to "
                "finish or stop it, then run the same command again to resume"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._lock_fh = fh

    def _scan(self, shards: list[Path]) -> None:
        for shard in shards:
            for lineno, line in _complete_lines(shard):
                try:
                    record = json.loads(line)
                    key = (str(record["task_id"]), int(record.get("sample_index", 0)))
                except (ValueError, KeyError, TypeError):
                    log.warning("%s:%d: ignoring a record that does not parse; its episode will run again", shard, lineno)
                    continue
                if key in self.index:
                    self.duplicates += 1
                    continue
                self.index[key] = _info(record)

    def close(self) -> None:
        if self._fh is not None:
            self._sync()
            self._fh.close()
            self._fh = None
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    def __enter__(self) -> TrajectoryStore:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ------------------------------------------------------------------------------
    def __contains__(self, key: Key) -> bool:
        return key in self.index

    def __len__(self) -> int:
        return len(self.index)

    def append(self, trajectory: Trajectory) -> bool:
        """Write one final record; False (and nothing written) when its key is already stored."""
        if self._lock_fh is None:
            raise StoreError("the store is not open: use `with TrajectoryStore(out) as store:`")
        key = (trajectory.task_id, trajectory.sample_index)
        if key in self.index:
            return False
        line = (trajectory.model_dump_json() + "\n").encode()
        fh = self._shard()
        fh.write(line)
        fh.flush()  # one whole line reaches the kernel now: a kill -9 cannot lose it
        self._shard_records += 1
        self._unsynced = True
        self.index[key] = RecordInfo(
            trajectory.status, trajectory.reward, trajectory.num_turns, trajectory.usage.total_tokens
        )
        if time.monotonic() - self._last_sync >= self.fsync_interval_s:
            self._sync()
        return True

    def _shard(self) -> IO[bytes]:
        if self._fh is not None and self._shard_records >= self.shard_max_records:
            self._sync()
            self._fh.close()
            self._fh = None
        if self._fh is None:
            path = self.root / "trajectories" / f"shard-{self._next_shard:05d}.jsonl"
            self._next_shard += 1
            # "xb": a shard is never reopened for writing, so a crash can only tear its tail.
            self._fh = path.open("xb")
            self._shard_records = 0
            fsync_dir(path.parent)
        return self._fh

    def _sync(self) -> None:
        if self._fh is not None and self._unsynced:
            os.fsync(self._fh.fileno())
            self._unsynced = False
        self._last_sync = time.monotonic()


def _info(record: dict) -> RecordInfo:
    usage = record.get("usage") or {}
    turns = sum(1 for m in record.get("messages") or [] if m.get("role") == "assistant")
    tokens = int(usage.get("prompt_tokens", 0)) + int(usage.get("completion_tokens", 0))
    return RecordInfo(record.get("status", "ok"), record.get("reward"), turns, tokens)
