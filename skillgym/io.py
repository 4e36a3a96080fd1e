"""Atomic file writes: a reader (or a run resumed after a crash) sees the old file or the new
one, never half of one. Also the two readers every config file shares: a YAML mapping with
errors that name the file, and pydantic's first error as one line.

Every module that replaces a file in place writes through these helpers: the data goes to a
hidden temporary file in the same folder (same file system, so the rename is atomic), is
flushed to disk, and is renamed over the target; the folder entry is then flushed too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "fsync_dir",
    "read_yaml_mapping",
    "validation_message",
]


def fsync_dir(folder: str | Path) -> None:
    """Make a new or renamed file's directory entry durable (a rename is a write to the folder)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temporary(path: Path) -> Path:
    # Hidden, and unique per process, so two writers never share a temporary file and globs
    # over the folder (``*.json``, ``*.jsonl``) never pick one up.
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_write(path: str | Path, write: Callable[[IO[Any]], None], *, binary: bool = False) -> Path:
    """Write ``path`` atomically through ``write(fh)``, which receives the open temporary file.

    Args:
        path: The file to create or replace; its folder must exist.
        write: Writes the content to the file handle it is given.
        binary: Open the temporary file in binary mode (else UTF-8 text).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    tmp = _temporary(path)
    try:
        with tmp.open("wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically.

    Args:
        path: The file to create or replace; its folder must exist.
        text: The whole new content.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    return atomic_write(path, lambda fh: fh.write(text))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write_text`)."""
    return atomic_write(path, lambda fh: fh.write(data), binary=True)


def atomic_write_json(path: str | Path, data: Any, *, indent: int | None = 2, **dumps: Any) -> Path:
    """Write ``data`` as JSON (with a final newline) to ``path`` atomically.

    Args:
        path: The file to create or replace; its folder must exist.
        data: A JSON-serializable value.
        indent: Passed to :func:`json.dumps`.
        **dumps: Further :func:`json.dumps` options (``sort_keys``, ``ensure_ascii``, ``default``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    return atomic_write_text(path, json.dumps(data, indent=indent, **dumps) + "\n")


def validation_message(exc: Any) -> str:
    """``field 'a.b': message`` for the first error of a pydantic ``ValidationError`` (the one
    line an error names; ``(top level)`` when the error has no location)."""
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "(top level)"
    return f"field {field!r}: {first['msg']}"


def read_yaml_mapping(path: str | Path, error: type[Exception] = ValueError, kind: str = "file") -> dict[str, Any]:
    """The mapping at the top of a YAML config file (an empty file is an empty mapping).

    Args:
        path: The file.
        error: The exception class to raise (a caller's own, e.g. ``RosterError``).
        kind: What the file is, for the messages (``roster``, ``recipe``).

    Returns:
        The mapping.

    Raises:
        error: One line naming the file: it does not exist, is not valid YAML (with the line),
            or holds something other than a mapping.
    """
    import yaml  # the writers above must not pay for PyYAML

    path = Path(path).expanduser()
    if not path.is_file():
        raise error(f"{kind} file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{path}{where}: not valid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{path}: a {kind} is a mapping of keys to values, got {type(data).__name__}")
    return data
