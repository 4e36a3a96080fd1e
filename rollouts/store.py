"""The trajectory store: append-only JSONL shards, one final :class:`Trajectory` a line.

Layout of a run directory::

    OUT/manifest.json               what produced the records (rollouts/manifest.py)
    OUT/trajectories/shard-00000.jsonl
    OUT/trajectories/shard-00001.jsonl   one new shard per writing session (and every
    ...                                  ``shard_max_records`` records)
    OUT/.lock                       held (flock) by the one process writing
    OUT/quarantine.jsonl            lines that were not valid records, moved out of their
                                    shard by the writer (with shard, line and error)

Durability: every record is one ``write`` of a whole line, flushed at once (so a ``kill -9``
loses nothing already written: the data is in the kernel), and fsynced every
``fsync_interval_s`` (so a power cut loses at most that much). A crash can leave a torn last
line; the writer truncates it on open and readers skip it, so the key simply counts as
missing and is run again. A complete line that is not a valid :class:`Trajectory` (a key-only
record, a field of the wrong type) counts as missing too, for the writer and for every reader
alike: the writer moves it to the quarantine file with a warning and its episode runs again.
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
from typing import IO, Any

from skillgym.io import atomic_write, fsync_dir
from skillgym.toolcalls import replace_lone_surrogates
from skillgym.types import Trajectory

log = logging.getLogger(__name__)

SHARD_RE = re.compile(r"^shard-(\d{5,})\.jsonl$")
QUARANTINE_FILE = "quarantine.jsonl"
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
        # A record counts as stored exactly when iter_trajectories (and so export) can read it:
        # both validate it as a whole Trajectory. Anything else is quarantined and run again.
        for shard in shards:
            bad: dict[int, str] = {}
            for lineno, line in _complete_lines(shard):
                try:
                    traj = Trajectory.model_validate_json(line)
                except ValueError as exc:
                    bad[lineno] = _first_error(exc)
                    continue
                key = (traj.task_id, traj.sample_index)
                if key in self.index:
                    self.duplicates += 1
                    continue
                self.index[key] = RecordInfo(traj.status, traj.reward, traj.num_turns, traj.usage.total_tokens)
            if bad:
                self._quarantine(shard, bad)

    def _quarantine(self, shard: Path, bad: dict[int, str]) -> None:
        """Move unreadable lines out of ``shard`` into ``quarantine.jsonl`` (with where they were
        and why), so the run resumes, their episodes run again, and nothing is thrown away."""
        target = self.root / QUARANTINE_FILE
        with target.open("ab") as out:
            for lineno, line in _complete_lines(shard):
                if lineno in bad:
                    entry = {
                        "shard": shard.name,
                        "line": lineno,
                        "error": bad[lineno],
                        "record": line.decode("utf-8", "replace").rstrip("\n"),
                    }
                    out.write((json.dumps(entry, ensure_ascii=False) + "\n").encode())
            out.flush()
            os.fsync(out.fileno())

        def keep_good(fh: IO[bytes]) -> None:
            for lineno, line in _complete_lines(shard):
                if lineno not in bad:
                    fh.write(line)

        atomic_write(shard, keep_good, binary=True)
        for lineno, error in bad.items():
            log.warning(
                "%s:%d: quarantined a record that is not a valid trajectory (%s) to %s; its episode will run again",
                shard,
                lineno,
                error,
                target,
            )

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
        line = _record_line(trajectory)
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


def _first_error(exc: ValueError) -> str:
    """The first line of a validation error, short enough for a log line."""
    return str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__


def _record_line(trajectory: Trajectory) -> bytes:
    """One record as a JSON line. Text that UTF-8 cannot hold (a lone surrogate from a model's
    ``\\ud800`` escape, a non-UTF-8 file name) is replaced by U+FFFD rather than losing the
    whole record, and the record says so in ``metadata["store_repairs"]``."""
    try:
        return (trajectory.model_dump_json() + "\n").encode()
    except ValueError:  # pydantic's serialization error: a string UTF-8 cannot encode
        pass
    counter = [0]
    data = _repair_strings(trajectory.model_dump(mode="python"), counter)
    data.setdefault("metadata", {})["store_repairs"] = (
        f"{counter[0]} lone UTF-16 surrogate(s) replaced by U+FFFD when the record was written"
    )
    return (Trajectory.model_validate(data).model_dump_json() + "\n").encode()


def _repair_strings(value: Any, counter: list[int]) -> Any:
    if isinstance(value, str):
        text, fixed = replace_lone_surrogates(value)
        counter[0] += fixed
        return text
    if isinstance(value, dict):
        return {_repair_strings(k, counter): _repair_strings(v, counter) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_repair_strings(v, counter) for v in value]
    return value
