"""The operations a sandbox executes: the one implementation behind every built-in tool.

This module runs *inside* the sandbox (a container's python3, or a local subprocess), so it
uses the standard library only and must stay importable on any Python >= 3.9. Every
function takes the workspace root first and returns a JSON-serializable dict; a problem the
model caused (bad path, missing file, ambiguous edit) raises :class:`OpError` with a
message written for the model to read and act on.

Paths: the model always sees the workspace as ``/workspace``. A relative path, or an
absolute path under ``/workspace``, is resolved against the real root (which is
``/workspace`` in a container and a temp dir in a local sandbox); anything that resolves
outside the root, symlinks included, is refused.
"""

from __future__ import annotations

import base64
import fnmatch
import io
import os
import re
import shutil
import signal
import subprocess
import tarfile
import time

VIRTUAL_ROOT = "/workspace"
TRUNCATION_MARKER = "\n[... output truncated: {n} more characters not shown ...]"
DEFAULT_MAX_OUTPUT = 30_000
MAX_READ_LINES = 2000
MAX_LINE_CHARS = 2000
MAX_GREP_MATCHES = 200
MAX_GLOB_RESULTS = 500


class OpError(Exception):
    """An error caused by the request; its message goes back to the model verbatim."""


def truncate(text: str, limit: int) -> tuple[str, bool]:
    if len(text) <= limit:
        return text, False
    return text[:limit] + TRUNCATION_MARKER.format(n=len(text) - limit), True


def resolve(root: str, path: str) -> str:
    """Map a model-visible path to a real path inside ``root`` or raise OpError."""
    if not isinstance(path, str) or path == "":
        path = "."
    if "\x00" in path:
        raise OpError(f"path {path!r} contains a NUL byte")
    rel = path
    if path == VIRTUAL_ROOT or path.startswith(VIRTUAL_ROOT + "/"):
        rel = path[len(VIRTUAL_ROOT):].lstrip("/") or "."
    elif os.path.isabs(path):
        real_root = os.path.realpath(root)
        if not (path == real_root or path.startswith(real_root + os.sep)):
            raise OpError(f"path {path!r} is outside the workspace; use a path under {VIRTUAL_ROOT}")
        rel = os.path.relpath(path, real_root)
    real_root = os.path.realpath(root)
    full = os.path.realpath(os.path.join(real_root, rel))
    if full != real_root and not full.startswith(real_root + os.sep):
        raise OpError(f"path {path!r} is outside the workspace; use a path under {VIRTUAL_ROOT}")
    return full


def display(root: str, full: str) -> str:
    """The model-visible form of a real path."""
    rel = os.path.relpath(full, os.path.realpath(root))
    return VIRTUAL_ROOT if rel == "." else VIRTUAL_ROOT + "/" + rel.replace(os.sep, "/")


def run(root: str, cmd: str, timeout: float = 30.0, max_output: int = DEFAULT_MAX_OUTPUT, cwd: str = ".") -> dict:
    """Run a shell command in the workspace; kill its whole process group on timeout."""
    if not isinstance(cmd, str) or not cmd.strip():
        raise OpError("command is empty")
    workdir = resolve(root, cwd)
    shell = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"
    env = dict(os.environ, HOME=os.environ.get("HOME", workdir), PWD=workdir)
    started = time.monotonic()
    proc = subprocess.Popen(
        [shell, "-c", cmd],
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env=env,
    )
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc.pid)
        out, err = proc.communicate()
    else:
        # Background children (``cmd &``) must not outlive the call.
        _kill_group(proc.pid)
    stdout, t1 = truncate(out.decode("utf-8", "replace"), max_output)
    stderr, t2 = truncate(err.decode("utf-8", "replace"), max_output)
    return {
        "exit_code": proc.returncode,
        "stdout": stdout,
        "stderr": stderr,
        "timed_out": timed_out,
        "truncated": t1 or t2,
        "seconds": round(time.monotonic() - started, 4),
    }


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def read_file(root: str, path: str, offset: int = 1, limit: int = MAX_READ_LINES) -> dict:
    """Lines ``offset``..``offset+limit-1`` (1-based), numbered like ``cat -n``."""
    full = resolve(root, path)
    if os.path.isdir(full):
        raise OpError(f"{path!r} is a directory; use list_dir to see what it contains")
    if not os.path.exists(full):
        raise OpError(f"file {path!r} does not exist")
    offset = max(1, int(offset))
    limit = max(1, min(int(limit), MAX_READ_LINES))
    with open(full, "rb") as fh:
        data = fh.read()
    if b"\x00" in data[:8192]:
        raise OpError(f"{path!r} is a binary file ({len(data)} bytes); it cannot be shown as text")
    lines = data.decode("utf-8", "replace").splitlines()
    chosen = lines[offset - 1 : offset - 1 + limit]
    numbered = []
    for i, line in enumerate(chosen, start=offset):
        if len(line) > MAX_LINE_CHARS:
            line = line[:MAX_LINE_CHARS] + " [... line truncated ...]"
        numbered.append(f"{i:6d}\t{line}")
    return {
        "path": display(root, full),
        "content": "\n".join(numbered),
        "total_lines": len(lines),
        "first_line": offset,
        "last_line": offset + len(chosen) - 1,
    }


def read_text(root: str, path: str) -> dict:
    """A whole file, raw (for graders and checks, not for the model)."""
    full = resolve(root, path)
    if not os.path.isfile(full):
        raise OpError(f"file {path!r} does not exist")
    with open(full, encoding="utf-8", errors="replace") as fh:
        return {"content": fh.read()}


def write_file(root: str, path: str, content: str) -> dict:
    full = resolve(root, path)
    if os.path.isdir(full):
        raise OpError(f"{path!r} is a directory")
    os.makedirs(os.path.dirname(full), exist_ok=True)
    try:
        with open(full, "w", encoding="utf-8") as fh:
            fh.write(content)
    except OSError as exc:
        raise OpError(f"cannot write {path!r}: {exc.strerror}") from None
    return {"path": display(root, full), "bytes": len(content.encode("utf-8"))}


def edit_file(root: str, path: str, old_string: str, new_string: str, replace_all: bool = False) -> dict:
    """Replace an exact string; it must occur exactly once unless ``replace_all``."""
    full = resolve(root, path)
    if not os.path.isfile(full):
        raise OpError(f"file {path!r} does not exist")
    if old_string == "":
        raise OpError("old_string is empty; to create or overwrite a file use write_file")
    if old_string == new_string:
        raise OpError("old_string and new_string are identical; nothing would change")
    with open(full, encoding="utf-8", errors="replace") as fh:
        text = fh.read()
    count = text.count(old_string)
    if count == 0:
        raise OpError(f"old_string was not found in {path!r}; read the file and copy the text exactly")
    if count > 1 and not replace_all:
        raise OpError(
            f"old_string occurs {count} times in {path!r}; add surrounding context to make it unique "
            "or set replace_all to true"
        )
    text = text.replace(old_string, new_string) if replace_all else text.replace(old_string, new_string, 1)
    try:
        with open(full, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise OpError(f"cannot write {path!r}: {exc.strerror}") from None
    return {"path": display(root, full), "replacements": count if replace_all else 1}


def _walk_files(base: str):
    """Files under ``base`` in a stable order, skipping hidden and cache folders."""
    if os.path.isfile(base):
        yield base
        return
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__pycache__")
        for name in sorted(filenames):
            yield os.path.join(dirpath, name)


def glob(root: str, pattern: str, path: str = ".") -> dict:
    """Files matching a glob (``**`` spans folders), relative to ``path``."""
    if not pattern:
        raise OpError("pattern is empty")
    base = resolve(root, path)
    if not os.path.isdir(base):
        raise OpError(f"{path!r} is not a directory")
    regex = _glob_regex(pattern)
    matches = []
    for full in _walk_files(base):
        if regex.match(os.path.relpath(full, base).replace(os.sep, "/")):
            matches.append(display(root, full))
    shown = matches[:MAX_GLOB_RESULTS]
    return {"matches": shown, "total": len(matches), "truncated": len(matches) > len(shown)}


def _glob_regex(pattern: str) -> re.Pattern:
    """Translate a glob with ``**`` into a regex; ``*`` stays within one folder."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    if "/" not in pattern:
        out = "(?:.*/)?" + out  # a bare "*.py" matches at any depth, like ripgrep's --glob
    return re.compile(out + r"\Z")


def grep(
    root: str,
    pattern: str,
    path: str = ".",
    glob: str | None = None,
    context: int = 0,
    ignore_case: bool = False,
    max_matches: int = MAX_GREP_MATCHES,
) -> dict:
    """Regex search; each hit is ``path:line:text``, context lines ``path-line-text``."""
    try:
        regex = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
    except re.error as exc:
        raise OpError(f"invalid regular expression {pattern!r}: {exc}") from None
    base = resolve(root, path)
    if not os.path.exists(base):
        raise OpError(f"path {path!r} does not exist")
    context = max(0, min(int(context), 20))
    max_matches = max(1, min(int(max_matches), 1000))
    name_filter = _glob_regex(glob) if glob else None
    lines_out: list[str] = []
    n_matches, n_files = 0, 0
    for full in _walk_files(base):
        rel = os.path.relpath(full, base if os.path.isdir(base) else os.path.dirname(base))
        if name_filter and not name_filter.match(rel.replace(os.sep, "/")):
            continue
        try:
            with open(full, "rb") as fh:
                data = fh.read(4_000_000)
        except OSError:
            continue
        if b"\x00" in data[:8192]:
            continue
        lines = data.decode("utf-8", "replace").splitlines()
        hits = [i for i, line in enumerate(lines) if regex.search(line)]
        hit_set = set(hits)
        if not hits:
            continue
        n_files += 1
        shown_name = display(root, full)
        last_printed = -1
        for i in hits:
            if n_matches >= max_matches:
                break
            lo, hi = max(0, i - context), min(len(lines), i + context + 1)
            if context and last_printed >= 0 and lo > last_printed + 1:
                lines_out.append("--")
            for j in range(max(lo, last_printed + 1), hi):
                sep = ":" if j in hit_set else "-"
                text = lines[j][:MAX_LINE_CHARS]
                lines_out.append(f"{shown_name}{sep}{j + 1}{sep}{text}")
            last_printed = hi - 1
            n_matches += 1
        if n_matches >= max_matches:
            break
    return {
        "matches": lines_out,
        "count": n_matches,
        "files": n_files,
        "truncated": n_matches >= max_matches,
    }


def list_dir(root: str, path: str = ".") -> dict:
    full = resolve(root, path)
    if not os.path.isdir(full):
        raise OpError(f"{path!r} is not a directory" if os.path.exists(full) else f"{path!r} does not exist")
    entries = []
    for name in sorted(os.listdir(full)):
        entries.append(name + "/" if os.path.isdir(os.path.join(full, name)) else name)
    return {"path": display(root, full), "entries": entries}


def put_files(root: str, files: dict) -> dict:
    """Write many text files at once (workspace seeding)."""
    for rel, content in files.items():
        write_file(root, rel, content)
    return {"written": len(files)}


def put_archive(root: str, data_b64: str, path: str = ".") -> dict:
    """Extract a base64 tar into the workspace, refusing members that would escape it."""
    dest = resolve(root, path)
    raw = base64.b64decode(data_b64)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = tar.getmembers()
        real_root = os.path.realpath(root)
        for member in members:
            target = os.path.realpath(os.path.join(dest, member.name))
            # Compare with a trailing separator: "/ws2" starts with "/ws" but is outside it.
            inside = target == real_root or target.startswith(real_root + os.sep)
            if not inside or member.issym() or member.islnk() or member.isdev():
                raise OpError(f"archive member {member.name!r} would land outside the workspace")
        tar.extractall(dest)
    return {"extracted": len(members)}


def reset(root: str, keep: list | None = None, scrub: bool = False) -> dict:
    """Empty the workspace, except mount points listed in ``keep`` (relative paths).

    ``scrub`` also kills every process this executor may signal (``kill(-1)`` spares the
    caller) and empties ``/tmp``, so nothing an episode left running or lying around
    reaches the next one. Only sandboxes whose processes live in their own uid or pid
    namespace may ask for it: on an unisolated host it would signal the user's processes.
    """
    if scrub:
        try:
            os.kill(-1, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        _empty_folder("/tmp")
    return {"removed": _empty_folder(os.path.realpath(root), keep={k.strip("/") for k in (keep or [])})}


def _empty_folder(folder: str, keep: set | None = None) -> int:
    """Delete everything in ``folder`` but the names in ``keep``; returns how many entries went."""
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    removed = 0
    for name in names:
        if keep and name in keep:
            continue
        full = os.path.join(folder, name)
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full, ignore_errors=True)
        else:
            try:
                os.unlink(full)
            except OSError:
                pass
        removed += 1
    return removed


def ping(root: str) -> dict:
    return {"pong": True}


OPS = {
    "run": run,
    "read_file": read_file,
    "read_text": read_text,
    "write_file": write_file,
    "edit_file": edit_file,
    "glob": glob,
    "grep": grep,
    "list_dir": list_dir,
    "put_files": put_files,
    "put_archive": put_archive,
    "reset": reset,
    "ping": ping,
}
