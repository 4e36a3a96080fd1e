"""LocalSandbox: the executor as a local subprocess, under bubblewrap when it works.

With bubblewrap the executor sees read-only system folders only (``/usr``, ``/etc``, the
``/bin`` and ``/lib`` links: no ``/home``, ``/root``, ``/run`` or ``/var``, so no Docker socket
and no user files), a size-limited tmpfs workspace at ``/workspace`` and ``/tmp``, no network,
its own PID namespace, and it dies with its parent. Limits: a cgroup (memory and processes for
the whole sandbox) where one can be created, else RLIMIT_AS per process, said loudly once; and
RLIMIT_NPROC.

When the host user is root, the executor stays root with only CAP_SETUID, CAP_SETGID, CAP_KILL
and CAP_CHOWN, and tool commands run as a per-sandbox unprivileged uid: they cannot signal,
trace or open the fds of the executor, as in the Docker backend. As a non-root user no second
uid exists: each command runs in its own pid namespace (a nested bubblewrap) instead, where the
executor is out of sight and everything the command started dies with it (see README,
"Security model").

Without bubblewrap the executor is a plain subprocess in a temp dir: nothing is isolated, and
a warning says so. Mounts are then copied into the workspace, because a symlink to a host
folder would let paths resolve outside the workspace.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Literal

from .base import SandboxConfig, SandboxError
from .channel import ExecutorSandbox, TransportClosed, check_mount_source
from .gc import CGROUP_PREFIX, LOCAL_PREFIX, OWNER_FILE, owner_record
from .watchdog import ensure_watchdog

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent  # holds executor.py and ops.py
# Top level, because everything below the host's folders is read-only in the sandbox.
EXECUTOR_DIR_IN_SANDBOX = "/.skillgym"
# Unprivileged uids for root hosts: far above real accounts, one per sandbox so that their
# RLIMIT_NPROC budgets (counted per uid) do not add up.
UID_BASE = 3_000_000
_uid_counter = itertools.count()

Isolation = Literal["auto", "bwrap", "none"]
# Host folders a bubblewrap sandbox sees (read-only): what programs need to run, nothing more.
SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc")
EXECUTOR_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_CHOWN")
_cgroup_counter = itertools.count()
_warned: set[str] = set()

NO_CGROUP_WARNING = (
    "skillgym LocalSandbox: no cgroup can be created here ({why}); memory is limited per process "
    "(RLIMIT_AS), not per sandbox, so several processes together may use more than memory_mb. "
    "Use the Docker backend for a hard per-sandbox limit."
)

NO_ISOLATION_WARNING = (
    "skillgym LocalSandbox is running WITHOUT isolation (bubblewrap is not available or does not "
    "work here): tool commands run as your user, with your network and your files. Install Docker "
    "(scripts/setup_docker.sh) or bubblewrap (apt-get install bubblewrap) for a real sandbox."
)


@lru_cache(maxsize=1)
def bwrap_works() -> bool:
    """Whether ``bwrap`` exists and can create the namespaces we use (cached)."""
    exe = shutil.which("bwrap")
    if not exe:
        return False
    probe = [
        exe,
        "--unshare-net",
        "--unshare-pid",
        "--die-with-parent",
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "true",
    ]
    try:
        return subprocess.run(probe, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


class LocalSandbox(ExecutorSandbox):
    """Executor as a local subprocess; see the module docstring for what isolates it."""

    def __init__(self, config: SandboxConfig | None = None, isolation: Isolation = "auto") -> None:
        super().__init__()
        self.config = config or SandboxConfig(backend="local")
        if isolation == "auto":
            isolation = "bwrap" if bwrap_works() else "none"
        elif isolation == "bwrap" and not bwrap_works():
            raise SandboxError("bubblewrap was requested but `bwrap` is missing or cannot create namespaces here")
        self.isolation: Literal["bwrap", "none"] = isolation
        self._proc: subprocess.Popen | None = None
        self._tmp: Path | None = None
        self._selector: selectors.BaseSelector | None = None
        self._stderr_file = None
        self._cgroups: list[Path] = []

    @property
    def isolated_processes(self) -> bool:  # type: ignore[override]
        # Under bubblewrap the executor has its own pid namespace (and, on root hosts, its own uid).
        return self.isolation == "bwrap"

    @property
    def workspace(self) -> Path:
        """The host folder behind ``/workspace`` (unisolated mode only, after start).

        Under bubblewrap the workspace is a tmpfs inside the sandbox; use the ops to reach it.
        """
        if self._tmp is None:
            raise SandboxError("sandbox not started")
        if self.isolation == "bwrap":
            raise SandboxError("a bubblewrap sandbox's workspace is a tmpfs inside it; read it through the ops")
        return self._tmp / "workspace"

    def reset(self) -> None:
        if self.isolation == "none" and self.config.mounts:
            # Mounts are copies here, which the last episode may have changed: copy afresh.
            self.call("reset", keep=[])
            for mount in self.config.mounts:
                _copy_mount(Path(mount.source), self.workspace / mount.target)
        else:
            super().reset()

    # Transport -----------------------------------------------------------------------------
    def _launch(self) -> None:
        ensure_watchdog()  # reaps the folder (and cgroup) should this process die without close()
        self._tmp = Path(tempfile.mkdtemp(prefix=f"{LOCAL_PREFIX}{os.getpid()}-"))
        (self._tmp / OWNER_FILE).write_text(json.dumps(owner_record()))
        workspace = self._tmp / "workspace"
        workspace.mkdir()
        self._stderr_file = open(self._tmp / "executor.stderr", "w+b")
        preexec = None
        if self.isolation == "bwrap":
            argv = self._bwrap_argv(workspace)
            self._cgroups = _make_cgroups(self.config)
            procs = [str(group / "cgroup.procs") for group in self._cgroups]
            if procs:

                def preexec() -> None:  # in the child, before bwrap: everything it starts is inside
                    for path in procs:
                        fd = os.open(path, os.O_WRONLY)
                        try:
                            os.write(fd, b"0")
                        finally:
                            os.close(fd)
        else:
            warnings.warn(NO_ISOLATION_WARNING, RuntimeWarning, stacklevel=3)
            log.warning(NO_ISOLATION_WARNING)
            for mount in self.config.mounts:
                _copy_mount(Path(mount.source), workspace / mount.target)
            argv = [
                sys.executable,
                "-E",
                "-s",
                "-B",
                str(PACKAGE_DIR / "executor.py"),
                "--root",
                str(workspace),
                "--memory-mb",
                str(self.config.memory_mb),
            ]
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr_file,
            cwd=workspace,
            env=self._env(workspace),
            start_new_session=True,  # a Ctrl-C in the host terminal must not hit the sandbox
            preexec_fn=preexec,
        )
        os.set_blocking(self._proc.stdout.fileno(), False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._proc.stdout, selectors.EVENT_READ)

    def _bwrap_argv(self, workspace: Path, privileged: bool | None = None) -> list[str]:
        """bubblewrap's command line; ``privileged`` (default: whether we are root) adds the uid split."""
        cfg = self.config
        if privileged is None:
            privileged = os.geteuid() == 0
        argv = [
            "bwrap",
            "--unshare-net",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--die-with-parent",
            "--new-session",
        ]
        # bwrap's new root is an empty tmpfs: only the system folders are bound into it,
        # read-only. /run, /var, /home and /root stay out: the Docker socket and the user's
        # files are not there to reach, whatever groups the process keeps.
        for name in SYSTEM_DIRS:
            host = Path("/") / name
            if host.is_symlink():
                argv += ["--symlink", os.readlink(host), str(host)]
            elif host.is_dir():
                argv += ["--ro-bind", str(host), str(host)]
        workspace_mb = max(64, cfg.memory_mb // 2)
        tmp_mb = max(32, cfg.memory_mb // 4)
        argv += [
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--perms",
            "1777",
            "--size",
            str(tmp_mb << 20),
            "--tmpfs",
            "/tmp",
            "--perms",
            "0755",
            "--size",
            str(workspace_mb << 20),
            "--tmpfs",
            "/workspace",
            "--ro-bind",
            str(PACKAGE_DIR),
            EXECUTOR_DIR_IN_SANDBOX,
        ]
        for mount in cfg.mounts:
            src = str(check_mount_source(Path(mount.source)))
            argv += ["--ro-bind" if mount.read_only else "--bind", src, f"/workspace/{mount.target.strip('/')}"]
        if privileged:
            argv += ["--cap-drop", "ALL"]
            for cap in EXECUTOR_CAPS:
                argv += ["--cap-add", cap]
        argv += [
            "--remount-ro",
            "/",
            "--chdir",
            "/workspace",
            "--",
            _sandbox_python(),
            "-E",
            "-s",
            "-B",
            f"{EXECUTOR_DIR_IN_SANDBOX}/executor.py",
            "--root",
            "/workspace",
            "--memory-mb",
            str(cfg.memory_mb),
            "--nproc",
            str(cfg.pids_limit),
            "--op-timeout",
            str(cfg.default_timeout),
        ]
        if privileged:
            uid = UID_BASE + (os.getpid() % 10_000) * 100 + next(_uid_counter) % 100
            argv += ["--tool-uid", str(uid), "--tool-gid", str(uid)]
        else:
            # No second uid without privileges: a pid namespace per command keeps the executor
            # out of sight instead (a nested bubblewrap, ~20-30 ms a command).
            argv += ["--pid-namespace-per-command"]
        return argv

    @staticmethod
    def _env(workspace: Path) -> dict[str, str]:
        # A minimal environment: host secrets in env vars must not leak into tool commands.
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TERM")}
        env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        env.update(HOME="/tmp", PYTHONDONTWRITEBYTECODE="1")
        return env

    def _send(self, data: bytes) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(data)
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError) as exc:
            raise TransportClosed(str(exc)) from None

    def _recv(self, timeout: float) -> bytes:
        assert self._proc is not None and self._selector is not None
        if not self._selector.select(timeout):
            return b""
        try:
            chunk = os.read(self._proc.stdout.fileno(), 1 << 20)
        except BlockingIOError:
            return b""
        except OSError as exc:
            raise TransportClosed(str(exc)) from None
        if not chunk:
            raise TransportClosed("end of stream")
        return chunk

    def _diagnose(self) -> str:
        parts = []
        if self._proc is not None:
            try:
                code = self._proc.wait(timeout=2)
                parts.append(f"The executor exited with code {code}.")
            except subprocess.TimeoutExpired:
                parts.append("The executor process is still running.")
        if self._stderr_file is not None:
            try:
                self._stderr_file.seek(0)
                tail = self._stderr_file.read().decode("utf-8", "replace").strip()[-800:]
                if tail:
                    parts.append(f"Its stderr ends with: {tail}")
            except (OSError, ValueError):
                pass
        return " ".join(parts)

    def _shutdown(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                proc.stdin.close()  # EOF: the executor's loop ends by itself
            except OSError:
                pass
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                _kill_session(proc)
            if proc.stdout:
                proc.stdout.close()
            # Tool commands started with their own session may still run in plain mode.
            _kill_session(proc)
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        if self._stderr_file is not None:
            self._stderr_file.close()
            self._stderr_file = None
        for group in self._cgroups:
            _remove_cgroup(group)
        self._cgroups = []
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


def _sandbox_python() -> str:
    """An interpreter the unprivileged sandbox uid can run.

    The executor needs only the standard library; the system python3 is world-readable,
    while the host's interpreter may live under a private home (e.g. /root/.pyenv).
    """
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(candidate, os.X_OK):
            return candidate
    return sys.executable


def _kill_session(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, 9)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _own_cgroup_dirs() -> dict[str, Path]:
    """controller -> the folder of this process's cgroup for it, where we may create children."""
    found: dict[str, Path] = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2: one tree, controllers enabled per folder
            if Path("/sys/fs/cgroup/cgroup.controllers").exists():
                found.setdefault("v2", Path("/sys/fs/cgroup") / path.lstrip("/"))
            continue
        for name in controllers.split(","):
            if name in ("memory", "pids"):
                found[name] = Path("/sys/fs/cgroup") / name / path.lstrip("/")
    return found


def _make_cgroups(cfg: SandboxConfig) -> list[Path]:
    """Cgroups limiting the whole sandbox's memory and processes; [] (and one warning) if none."""
    name = f"{CGROUP_PREFIX}{os.getpid()}-{next(_cgroup_counter)}"
    memory = str(cfg.memory_mb << 20)
    made: list[Path] = []
    dirs = _own_cgroup_dirs()
    try:
        if "memory" in dirs:  # v1: one hierarchy per controller
            group = dirs["memory"] / name
            group.mkdir()
            made.append(group)
            (group / "memory.limit_in_bytes").write_text(memory)
            if (group / "memory.memsw.limit_in_bytes").exists():
                (group / "memory.memsw.limit_in_bytes").write_text(memory)
            if "pids" in dirs:
                group = dirs["pids"] / name
                group.mkdir()
                made.append(group)
                (group / "pids.max").write_text(str(cfg.pids_limit))
        elif "v2" in dirs:
            group = dirs["v2"] / name
            group.mkdir()
            made.append(group)
            (group / "memory.max").write_text(memory)
            if (group / "memory.swap.max").exists():
                (group / "memory.swap.max").write_text("0")
            (group / "pids.max").write_text(str(cfg.pids_limit))
        else:
            raise OSError("no memory cgroup controller is mounted")
        return made
    except OSError as exc:
        for group in reversed(made):
            _remove_cgroup(group)
        why = exc.strerror or str(exc)
        if "cgroup" not in _warned:
            _warned.add("cgroup")
            message = NO_CGROUP_WARNING.format(why=why)
            warnings.warn(message, RuntimeWarning, stacklevel=4)
            log.warning(message)
        return []


def _remove_cgroup(group: Path) -> None:
    for _ in range(50):  # the kernel frees a cgroup a moment after its last process exits
        try:
            group.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)


def _copy_mount(source: Path, dest: Path) -> None:
    if not source.exists():
        raise SandboxError(f"mount source {source} does not exist")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, dest, symlinks=False, dirs_exist_ok=True)
    else:
        shutil.copy2(source, dest)
