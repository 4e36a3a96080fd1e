"""The operations a sandbox executes: the one implementation behind every built-in tool.

This module runs *inside* the sandbox (a container's python3, or a local subprocess), so it
uses the standard library only and must stay importable on any Python >= 3.9. Every
function takes the workspace root first and returns a JSON-serializable dict; a problem the
model caused (bad path, missing file, ambiguous edit) raises :class:`OpError` with a
message written for the model to read and act on.

Paths: the model always sees the workspace as ``/workspace``. A relative path, or an
absolute path under ``/workspace``, is resolved against the real root (which is
``/workspace`` in a container and a temp dir in a local sandbox); anything that resolves
outside the root, symlinks included, is refused (grep and glob skip such symlinks).

Privileges: where the executor runs as root with a separate tool uid (see
:func:`configure`), commands run as that uid and file ops run with it as the effective uid,
so a tool command can neither signal nor read the fds of the executor that answers for it.
Output meant for the model has its terminal control characters escaped.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import io
import os
import re
import selectors
import shutil
import signal
import stat
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
# The kernel's limit on one argv string (MAX_ARG_STRLEN); a longer command cannot be exec'd.
MAX_COMMAND_BYTES = 128 * 1024 - 1
MAX_READ_BYTES = 16_000_000  # read_file shows at most 2000 lines x 2000 chars anyway
MAX_TEXT_BYTES = 32_000_000  # read_text (graders): larger files are refused, never loaded whole
MAX_GREP_FILE_BYTES = 4_000_000
MAX_PATTERN_CHARS = 10_000  # a longer regex or glob is a mistake, and compiling it could take seconds
DRAIN_S = 0.3  # after a command ends, how long its pipes may still be read
# Terminal control characters (ANSI escapes, backspace, a lone CR...) shown to the model as text.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]|\r(?!\n)")

# (uid, gid) of tool commands when it differs from the executor's; set by :func:`configure`.
_TOOL_IDS: tuple[int, int] | None = None
_NPROC: int | None = None
# Without a second uid (bubblewrap as a non-root user), each command gets its own pid namespace
# instead: it cannot see, signal or trace the executor, and all it started dies with it.
_COMMAND_PREFIX: list[str] = []
PID_NAMESPACE_PREFIX = ["bwrap", "--dev-bind", "/", "/", "--unshare-pid", "--proc", "/proc", "--die-with-parent", "--"]


def configure(
    tool_uid: int | None = None,
    tool_gid: int | None = None,
    nproc: int | None = None,
    pid_namespace_per_command: bool = False,
) -> None:
    """Run tool commands (and file ops, as effective uid) as ``tool_uid``; ``nproc`` caps its processes.

    ``tool_uid`` is only for an executor running as root inside its own pid namespace (a
    container, or bubblewrap): after each command every process of ``tool_uid`` is killed.
    ``pid_namespace_per_command`` runs each command under a nested bubblewrap instead.
    """
    global _TOOL_IDS, _NPROC, _COMMAND_PREFIX
    _TOOL_IDS = None if tool_uid is None else (tool_uid, tool_gid if tool_gid is not None else tool_uid)
    _NPROC = nproc
    _COMMAND_PREFIX = list(PID_NAMESPACE_PREFIX) if pid_namespace_per_command else []


@contextlib.contextmanager
def as_tool_user():
    """Effective uid/gid = the tool user for the duration (real and saved uid stay root).

    With the real uid still root, tool processes cannot signal or trace the executor meanwhile.
    """
    if _TOOL_IDS is None or os.geteuid() != 0:
        yield
        return
    uid, gid = _TOOL_IDS
    os.setegid(gid)
    os.seteuid(uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def visible(text: str) -> str:
    """``text`` with terminal control characters written out (``\\x1b``), for the model."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def check_text(name: str, value: object) -> str:
    """``value`` as a string the OS can take, or an OpError that says what is wrong."""
    if not isinstance(value, str):
        raise OpError(f"{name} must be a string, got {type(value).__name__}")
    if "\x00" in value:
        raise OpError(f"{name} contains a NUL byte (\\x00) at character {value.index(chr(0))}; remove it")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise OpError(
            f"{name} contains invalid Unicode (a lone surrogate {value[exc.start]!r} at character {exc.start}); "
            "use valid UTF-8 text"
        ) from None
    return value


def _pattern(value: object, name: str = "pattern") -> str:
    value = check_text(name, value)
    if len(value) > MAX_PATTERN_CHARS:
        raise OpError(f"{name} is {len(value)} characters long; at most {MAX_PATTERN_CHARS} are accepted")
    return value


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise OpError(f"{name} must be a positive number of seconds, got {value!r}"[:200])
    return float(min(value, 86_400))


def _int_arg(name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise OpError(f"{name} must be a number, got {value!r}"[:200])
    return int(max(lo, min(value, hi)))


class OpError(Exception):
    """An error caused by the request; its message goes back to the model verbatim."""


def truncate(text: str, limit: int) -> tuple[str, bool]:
    if len(text) <= limit:
        return text, False
    return text[:limit] + TRUNCATION_MARKER.format(n=len(text) - limit), True


def resolve(root: str, path: str) -> str:
    """Map a model-visible path to a real path inside ``root`` or raise OpError."""
    if path is None or path == "":
        path = "."
    if isinstance(path, str) and "\x00" in path:
        raise OpError(f"path {path[:200]!r} contains a NUL byte")
    path = check_text("path", path)
    if len(path) > 4096:
        raise OpError(f"path is {len(path)} characters long; paths are at most 4096")
    try:
        return _resolve(root, path)
    except (OSError, ValueError) as exc:  # e.g. a symlink into /proc/1/root that may not be followed
        raise OpError(f"path {path!r} cannot be resolved: {getattr(exc, 'strerror', None) or exc}") from None


def _resolve(root: str, path: str) -> str:
    rel = path
    if path == VIRTUAL_ROOT or path.startswith(VIRTUAL_ROOT + "/"):
        rel = path[len(VIRTUAL_ROOT) :].lstrip("/") or "."
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
    return visible(VIRTUAL_ROOT if rel == "." else VIRTUAL_ROOT + "/" + rel.replace(os.sep, "/"))


def _inside(root: str, full: str) -> bool:
    """Whether ``full`` (followed through symlinks) stays inside ``root``."""
    real_root = os.path.realpath(root)
    try:
        target = os.path.realpath(full)
    except (OSError, ValueError):
        return False
    return target == real_root or target.startswith(real_root + os.sep)


def _regular_file(full: str, path: str) -> os.stat_result:
    """stat of ``full``, refusing what cannot be read as a file (a FIFO would block forever)."""
    try:
        st = os.stat(full)
    except FileNotFoundError:
        raise OpError(f"file {path!r} does not exist") from None
    except OSError as exc:
        raise OpError(f"cannot read {path!r}: {exc.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise OpError(f"{path!r} is a directory; use list_dir to see what it contains")
    if not stat.S_ISREG(st.st_mode):
        raise OpError(f"{path!r} is not a regular file (a FIFO, socket or device); it cannot be read")
    return st


def run(root: str, cmd: str, timeout: float = 30.0, max_output: int = DEFAULT_MAX_OUTPUT, cwd: str = ".") -> dict:
    """Run a shell command in the workspace, for at most ``timeout`` seconds.

    The call ends when the shell exits (background children do not hold it open) or at the
    timeout; then every process it started is killed. Output is capped while it is read, so
    a command that prints gigabytes costs no memory.
    """
    if isinstance(cmd, str) and not cmd.strip():
        raise OpError("command is empty")
    cmd = check_text("command", cmd)
    size = len(cmd.encode("utf-8"))
    if size > MAX_COMMAND_BYTES:
        raise OpError(
            f"command is {size} bytes; the limit is {MAX_COMMAND_BYTES} bytes. Write long scripts to a file "
            "with write_file and run the file instead"
        )
    timeout = _seconds("timeout", timeout)
    max_output = _int_arg("max_output", max_output, 1, 10_000_000)
    workdir = resolve(root, cwd)
    shell = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"
    env = dict(os.environ, HOME=os.environ.get("HOME", workdir), PWD=workdir)
    ids: dict = {}
    if _TOOL_IDS is not None:
        ids = dict(user=_TOOL_IDS[0], group=_TOOL_IDS[1], extra_groups=[])
        if _NPROC:
            ids["preexec_fn"] = _limit_nproc  # after the uid switch, so it counts the tool uid's processes
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            [*_COMMAND_PREFIX, shell, "-c", cmd],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env=env,
            **ids,
        )
    except OSError as exc:
        if exc.errno == errno.E2BIG:
            raise OpError("command and environment are too long for the kernel; write the script to a file") from None
        raise OpError(f"could not start the command: {exc.strerror or exc}") from None
    limit = max_output * 4 + 4  # bytes enough for max_output characters of UTF-8
    captured = {proc.stdout: _Capture(limit), proc.stderr: _Capture(limit)}
    timed_out = _pump(proc, captured, started + timeout)
    _kill_group(proc.pid)  # on a timeout, and background children (``cmd &``) in any case
    sweep()
    _drain(captured, time.monotonic() + DRAIN_S)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # unkillable (D state): report what we know
        pass
    out, err = captured[proc.stdout], captured[proc.stderr]
    stdout, t1 = out.text(max_output)
    stderr, t2 = err.text(max_output)
    return {
        "exit_code": proc.returncode,
        "stdout": stdout,
        "stderr": stderr,
        "timed_out": timed_out,
        "truncated": t1 or t2,
        "seconds": round(time.monotonic() - started, 4),
    }


class _Capture:
    """The first ``limit`` bytes of a stream, and how many came in all."""

    def __init__(self, limit: int) -> None:
        self.limit, self.kept, self.total = limit, bytearray(), 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.limit - len(self.kept)
        if room > 0:
            self.kept += chunk[:room]

    def text(self, max_chars: int) -> tuple[str, bool]:
        text = visible(self.kept.decode("utf-8", "replace"))
        dropped = self.total - len(self.kept)
        if len(text) <= max_chars and not dropped:
            return text, False
        more = max(0, len(text) - max_chars) + dropped
        return text[:max_chars] + TRUNCATION_MARKER.format(n=more), True


def _pump(proc: subprocess.Popen, captured: dict, deadline: float) -> bool:
    """Read both pipes until the shell exits or ``deadline``; True when it timed out."""
    sel = selectors.DefaultSelector()
    for pipe in captured:
        os.set_blocking(pipe.fileno(), False)
        sel.register(pipe, selectors.EVENT_READ)
    pidfd = None
    try:
        pidfd = os.pidfd_open(proc.pid)  # readable when the shell exits: no polling
        sel.register(pidfd, selectors.EVENT_READ)
    except (AttributeError, OSError):
        pass
    open_pipes = len(captured)
    try:
        while True:
            if proc.poll() is not None:
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            if not open_pipes and pidfd is None:
                try:
                    proc.wait(timeout=left)
                    return False
                except subprocess.TimeoutExpired:
                    return True
            wait = left if pidfd is not None else min(left, 0.02)
            for key, _ in sel.select(wait):
                if key.fileobj is pidfd:
                    continue  # proc.poll() above sees it
                chunk = _read_some(key.fileobj)
                if chunk:
                    captured[key.fileobj].add(chunk)
                elif chunk == b"":
                    sel.unregister(key.fileobj)
                    open_pipes -= 1
    finally:
        sel.close()
        if pidfd is not None:
            os.close(pidfd)


def _read_some(pipe) -> bytes | None:
    try:
        return os.read(pipe.fileno(), 1 << 16)
    except BlockingIOError:
        return None
    except OSError:
        return b""


def _drain(captured: dict, deadline: float) -> None:
    """What the killed processes left in the pipes, until EOF or ``deadline``."""
    sel = selectors.DefaultSelector()
    for pipe in captured:
        sel.register(pipe, selectors.EVENT_READ)
    try:
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for key, _ in sel.select(left):
                chunk = _read_some(key.fileobj)
                if chunk:
                    captured[key.fileobj].add(chunk)
                elif chunk == b"":
                    sel.unregister(key.fileobj)
    finally:
        sel.close()
        for pipe in captured:
            pipe.close()


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _limit_nproc() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_NPROC, (_NPROC, _NPROC))


def sweep() -> None:
    """Kill every process of the tool uid (those that escaped with ``setsid``, too).

    A forked child drops to the tool uid and sends ``kill(-1)``, which reaches exactly the
    processes that uid may signal; the executor itself, being root, is out of reach. Skipped
    when nothing but the executor and the namespace's init runs (the common case).
    """
    if _TOOL_IDS is None:
        return
    me = os.getpid()
    try:
        if all(int(p) in (1, me) for p in os.listdir("/proc") if p.isdigit()):
            return
    except OSError:
        pass
    uid, gid = _TOOL_IDS
    for _ in range(200):
        try:
            pid = os.fork()
            break
        except BlockingIOError:
            # A fork bomb holds every process the sandbox's pids limit allows, the executor's
            # own fork included: kill what can be found from here, then try again.
            _kill_uid_by_scan(uid)
            time.sleep(0.005)
    else:
        _kill_uid_by_scan(uid)
        return
    if pid == 0:  # child: never returns into the executor's loop
        try:
            if os.geteuid() != 0 and os.getuid() == 0:
                os.seteuid(0)  # inside as_tool_user(): regain root to drop it for good
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            for _ in range(200):  # a fork bomb may refill between two rounds
                os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass  # nothing left to kill
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _kill_uid_by_scan(uid: int) -> None:
    """SIGKILL every process of ``uid`` listed in /proc (a slower, racier sweep that needs no fork)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", encoding="ascii", errors="replace") as status:
                owner = next((line.split()[1] for line in status if line.startswith("Uid:")), None)
            if owner == str(uid):
                os.kill(int(entry), signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            pass  # gone meanwhile, or not ours to read


def read_file(root: str, path: str, offset: int = 1, limit: int = MAX_READ_LINES) -> dict:
    """Lines ``offset``..``offset+limit-1`` (1-based), numbered like ``cat -n``."""
    full = resolve(root, path)
    if not os.path.lexists(full):
        raise OpError(f"file {path!r} does not exist")
    size = _regular_file(full, path).st_size
    offset = _int_arg("offset", offset, 1, 1 << 62)
    limit = _int_arg("limit", limit, 1, MAX_READ_LINES)
    data = _read_bytes(full, path, MAX_READ_BYTES)
    if b"\x00" in data[:8192]:
        raise OpError(f"{path!r} is a binary file ({size} bytes); it cannot be shown as text")
    lines = data.decode("utf-8", "replace").splitlines()
    partial = size > len(data)
    if partial and lines:
        lines.pop()  # the last line may be cut in the middle
    chosen = lines[offset - 1 : offset - 1 + limit]
    numbered = []
    for i, line in enumerate(chosen, start=offset):
        if len(line) > MAX_LINE_CHARS:
            line = line[:MAX_LINE_CHARS] + " [... line truncated ...]"
        numbered.append(f"{i:6d}\t{visible(line)}")
    out = {
        "path": display(root, full),
        "content": "\n".join(numbered),
        "total_lines": len(lines),
        "first_line": offset,
        "last_line": offset + len(chosen) - 1,
    }
    if partial:
        out["note"] = (
            f"the file is {size} bytes; only its first {len(data)} bytes ({len(lines)} lines) "
            "can be read this way. Use grep or run (head, sed -n) for the rest"
        )
    return out


def _read_bytes(full: str, path: str, limit: int) -> bytes:
    try:
        with open(full, "rb") as fh:
            return fh.read(limit)
    except OSError as exc:
        raise OpError(f"cannot read {path!r}: {exc.strerror}") from None


def read_text(root: str, path: str) -> dict:
    """A whole file, raw (for graders and checks, not for the model); at most MAX_TEXT_BYTES."""
    full = resolve(root, path)
    if not os.path.lexists(full):
        raise OpError(f"file {path!r} does not exist")
    size = _regular_file(full, path).st_size
    if size > MAX_TEXT_BYTES:
        raise OpError(f"file {path!r} is {size} bytes; read_text reads at most {MAX_TEXT_BYTES} bytes")
    data = _read_bytes(full, path, MAX_TEXT_BYTES + 1)
    if len(data) > MAX_TEXT_BYTES:  # grew while we looked
        raise OpError(f"file {path!r} is larger than {MAX_TEXT_BYTES} bytes; read_text refuses it")
    return {"content": data.decode("utf-8", "replace")}


def write_file(root: str, path: str, content: str) -> dict:
    full = resolve(root, path)
    if not isinstance(content, str):
        raise OpError(f"content must be a string, got {type(content).__name__}")
    if "\x00" not in content:  # NUL is fine in a file; a lone surrogate cannot be written
        check_text("content", content)
    else:
        check_text("content", content.replace("\x00", " "))
    if os.path.isdir(full):
        raise OpError(f"{path!r} is a directory")
    if os.path.lexists(full) and not os.path.isfile(full):
        raise OpError(f"{path!r} exists and is not a regular file (a FIFO, socket or device); remove it first")
    try:
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w", encoding="utf-8") as fh:
            fh.write(content)
    except OSError as exc:
        raise OpError(f"cannot write {path!r}: {exc.strerror}") from None
    return {"path": display(root, full), "bytes": len(content.encode("utf-8"))}


def edit_file(root: str, path: str, old_string: str, new_string: str, replace_all: bool = False) -> dict:
    """Replace an exact string; it must occur exactly once unless ``replace_all``."""
    full = resolve(root, path)
    if not os.path.lexists(full):
        raise OpError(f"file {path!r} does not exist")
    _regular_file(full, path)
    old_string = check_text("old_string", old_string)
    new_string = check_text("new_string", new_string)
    if old_string == "":
        raise OpError("old_string is empty; to create or overwrite a file use write_file")
    if old_string == new_string:
        raise OpError("old_string and new_string are identical; nothing would change")
    data = _read_bytes(full, path, MAX_TEXT_BYTES + 1)
    if len(data) > MAX_TEXT_BYTES:
        raise OpError(f"file {path!r} is larger than {MAX_TEXT_BYTES} bytes; edit it with a command instead")
    text = data.decode("utf-8", "replace")
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


def _walk_files(root: str, base: str):
    """Regular files under ``base`` in a stable order, skipping hidden and cache folders.

    A symlink is followed only when its target stays inside ``root``: grep must not print
    what read_file would refuse (``ln -s /etc/passwd x``). FIFOs and devices are skipped.
    """
    if not os.path.isdir(base):
        if os.path.isfile(base) and _inside(root, base):
            yield base
        return
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__pycache__")
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            if os.path.islink(full) and not _inside(root, full):
                continue
            try:
                if stat.S_ISREG(os.stat(full).st_mode):
                    yield full
            except OSError:
                continue


def glob(root: str, pattern: str, path: str = ".") -> dict:
    """Files matching a glob (``**`` spans folders), relative to ``path``."""
    if not pattern:
        raise OpError("pattern is empty")
    pattern = _pattern(pattern)
    base = resolve(root, path)
    if not os.path.isdir(base):
        raise OpError(f"{path!r} is not a directory")
    regex = _glob_regex(pattern)
    matches = []
    for full in _walk_files(root, base):
        if regex.match(os.path.relpath(full, base).replace(os.sep, "/")):
            matches.append(display(root, full))
    shown = matches[:MAX_GLOB_RESULTS]
    return {"matches": shown, "total": len(matches), "truncated": len(matches) > len(shown)}


def _glob_regex(pattern: str) -> re.Pattern:
    """Translate a glob with ``**`` into a regex; ``*`` stays within one folder.

    Runs of ``*`` collapse, so the regex has no nested quantifiers that could backtrack badly.
    """
    pattern = re.sub(r"\*{3,}", "**", pattern)
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
    """Regex search; each hit is ``path:line:text``, context lines ``path-line-text``.

    A pattern that backtracks catastrophically is stopped by the executor's per-op time limit.
    """
    pattern = _pattern(pattern)
    try:
        regex = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
    except (re.error, RecursionError, OverflowError, ValueError) as exc:
        raise OpError(f"invalid regular expression {pattern[:200]!r}: {exc}") from None
    base = resolve(root, path)
    if not os.path.exists(base):
        raise OpError(f"path {path!r} does not exist")
    context = _int_arg("context", context, 0, 20)
    max_matches = _int_arg("max_matches", max_matches, 1, 1000)
    name_filter = _glob_regex(_pattern(glob, "glob")) if glob else None
    lines_out: list[str] = []
    n_matches, n_files = 0, 0
    for full in _walk_files(root, base):
        rel = os.path.relpath(full, base if os.path.isdir(base) else os.path.dirname(base))
        if name_filter and not name_filter.match(rel.replace(os.sep, "/")):
            continue
        try:
            with open(full, "rb") as fh:
                data = fh.read(MAX_GREP_FILE_BYTES)
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
                text = visible(lines[j][:MAX_LINE_CHARS])
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
    try:
        names = sorted(os.listdir(full))
    except OSError as exc:
        raise OpError(f"cannot list {path!r}: {exc.strerror}") from None
    for name in names:
        entries.append(visible(name) + ("/" if os.path.isdir(os.path.join(full, name)) else ""))
    return {"path": display(root, full), "entries": entries}


def put_files(root: str, files: dict) -> dict:
    """Write many text files at once (workspace seeding)."""
    if not isinstance(files, dict):
        raise OpError(f"files must be an object mapping paths to contents, got {type(files).__name__}")
    for rel, content in files.items():
        write_file(root, rel, content)
    return {"written": len(files)}


def put_archive(root: str, data_b64: str, path: str = ".") -> dict:
    """Extract a base64 tar into the workspace, refusing members that would escape it."""
    dest = resolve(root, path)
    try:
        raw = base64.b64decode(check_text("data_b64", data_b64), validate=True)
        tar = tarfile.open(fileobj=io.BytesIO(raw))
    except (ValueError, tarfile.TarError) as exc:
        raise OpError(f"data_b64 is not a base64-encoded tar archive: {exc}") from None
    with tar:
        members = tar.getmembers()
        real_root = os.path.realpath(root)
        for member in members:
            target = os.path.realpath(os.path.join(dest, member.name))
            # Compare with a trailing separator: "/ws2" starts with "/ws" but is outside it.
            inside = target == real_root or target.startswith(real_root + os.sep)
            if not inside or member.issym() or member.islnk() or member.isdev():
                raise OpError(f"archive member {member.name!r} would land outside the workspace")
        try:
            tar.extractall(dest)
        except (OSError, tarfile.TarError) as exc:
            raise OpError(f"could not extract the archive: {exc}") from None
    return {"extracted": len(members)}


def reset(root: str, keep: list | None = None, scrub: bool = False) -> dict:
    """Empty the workspace, except mount points listed in ``keep`` (relative paths).

    ``scrub`` also kills every process the episode left behind, and empties ``/tmp``,
    ``/dev/shm`` and the SysV IPC objects, so nothing an episode left running or lying around
    reaches the next one. Only sandboxes whose processes live in their own uid or pid
    namespace may ask for it: on an unisolated host it would signal the user's processes.
    """
    if scrub:
        if _TOOL_IDS is not None:
            sweep()
        else:
            try:
                os.kill(-1, signal.SIGKILL)  # in our own pid namespace: spares only the caller
            except (ProcessLookupError, PermissionError):
                pass
        with as_tool_user():
            for folder in ("/tmp", "/dev/shm"):
                _empty_folder(folder)
        _remove_ipc()
    with as_tool_user():
        return {"removed": _empty_folder(os.path.realpath(root), keep={k.strip("/") for k in (keep or [])})}


def _remove_ipc() -> None:
    """Remove SysV shared memory, semaphores and queues the episode created (rarely any)."""
    leftovers = False
    for kind in ("shm", "sem", "msg"):
        try:
            with open(f"/proc/sysvipc/{kind}") as fh:
                leftovers = leftovers or len(fh.read().splitlines()) > 1
        except OSError:
            continue
    if leftovers and shutil.which("ipcrm"):
        ids = dict(user=_TOOL_IDS[0], group=_TOOL_IDS[1], extra_groups=[]) if _TOOL_IDS else {}
        subprocess.run(["ipcrm", "--all"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=5, **ids)


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
            shutil.rmtree(full, onerror=_unlock_and_retry)
        else:
            try:
                os.unlink(full)
            except OSError:
                pass
        removed += 1
    return removed


def _unlock_and_retry(func, path: str, _exc_info) -> None:
    """rmtree's error hook: a folder the episode made unreadable (chmod 000) is opened up first."""
    try:
        os.chmod(os.path.dirname(path), 0o700)
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, 0o700)
            shutil.rmtree(path, ignore_errors=True)
        else:
            func(path)
    except OSError:
        pass


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
