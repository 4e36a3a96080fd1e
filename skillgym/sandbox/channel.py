"""Host side of the executor protocol, shared by every backend.

A backend only supplies a byte transport to one running ``executor.py`` (a pipe for the local
backend, an attach socket for Docker); this class turns :meth:`Sandbox.call` into one JSON
line round trip, matches answers to requests, enforces a host-side deadline, and turns a
dead transport into :class:`SandboxError` with the backend's diagnosis.
"""

from __future__ import annotations

import abc
import itertools
import json
import logging
import stat
import threading
import time
from pathlib import Path
from typing import Any

from .base import Sandbox, SandboxDied, SandboxError
from .ops import OpError

log = logging.getLogger(__name__)

# Slack on top of an op's own timeout before the host declares the executor hung: the
# executor stops a command at its timeout and answers within a fraction of a second.
HOST_GRACE_S = 1.0
STARTUP_TIMEOUT_S = 30.0
MAX_REQUEST_BYTES = 64_000_000


class ExecutorInternalError(OpError):
    """An op raised unexpectedly inside the executor (a bug or odd OS state).

    The executor survived, so the sandbox stays usable; being an :class:`OpError`, tool
    layers show the message to the model instead of ending the episode.
    """


class TransportClosed(Exception):
    """The byte stream to the executor ended or failed."""


class ExecutorSandbox(Sandbox):
    """A :class:`Sandbox` that talks to ``executor.py`` over a line transport."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._buffer = bytearray()
        self._broken: str | None = None
        self._started = False
        self._closed = False

    # Transport, supplied by the backend ---------------------------------------------------
    @abc.abstractmethod
    def _launch(self) -> None:
        """Start the executor and open the transport."""

    @abc.abstractmethod
    def _send(self, data: bytes) -> None:
        """Write bytes to the executor's stdin; raise TransportClosed on failure."""

    @abc.abstractmethod
    def _recv(self, timeout: float) -> bytes:
        """Some stdout bytes (b"" when none came within ``timeout``); TransportClosed on EOF."""

    @abc.abstractmethod
    def _diagnose(self) -> str:
        """Why the executor is gone (exit code, last stderr lines), for error messages."""

    @abc.abstractmethod
    def _shutdown(self) -> None:
        """Stop the executor and free every resource; must not raise."""

    # Sandbox API ---------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            if self._closed:
                raise SandboxError("this sandbox was closed; create a new one")
            try:
                self._launch()
                ready = self._read_line(time.monotonic() + STARTUP_TIMEOUT_S, "startup")
            except BaseException:
                self._shutdown()
                raise
            if not json.loads(ready).get("ok"):
                self._shutdown()
                raise SandboxError(f"executor did not start correctly: {ready[:500]!r}")
            self._started = True

    def call(self, op: str, **args: Any) -> dict:
        with self._lock:
            if not self._started:
                self.start()
            if self._broken:
                raise SandboxDied(self._broken)
            req_id = next(self._ids)
            try:
                line = json.dumps({"id": req_id, "op": op, "args": args}).encode("utf-8") + b"\n"
            except (TypeError, ValueError, RecursionError) as exc:
                raise OpError(f"the arguments of {op!r} cannot be sent to the sandbox: {exc}"[:500]) from None
            if len(line) > MAX_REQUEST_BYTES:
                raise OpError(f"the arguments of {op!r} are {len(line)} bytes; at most {MAX_REQUEST_BYTES} can be sent")
            try:
                self._send(line)
            except TransportClosed as exc:
                self._fail(f"could not send op {op!r}: {exc}")
            op_timeout = args.get("timeout") if op == "run" and isinstance(args.get("timeout"), (int, float)) else None
            if isinstance(op_timeout, bool) or not (op_timeout and 0 < op_timeout < 86_400):
                op_timeout = self.config.default_timeout
            deadline = time.monotonic() + op_timeout + HOST_GRACE_S
            while True:
                raw = self._read_line(deadline, f"op {op!r}")
                try:
                    response = json.loads(raw)
                except (ValueError, RecursionError):
                    self._fail(f"executor answered with a line that is not JSON ({raw[:200]!r})")
                if isinstance(response, dict) and response.get("id") == req_id:
                    break
                # An answer to nothing we asked (a malformed line echoed back as id None)
                # would mean the protocol broke; skipping it keeps matching honest.
            if response.get("ok"):
                return response["result"]
            if response.get("kind") == "op":
                raise OpError(response.get("error", "unknown error"))
            raise ExecutorInternalError(f"internal error while running {op}: {response.get('error')}")

    @property
    def alive(self) -> bool:
        if not self._started or self._broken or self._closed:
            return False
        try:
            return self.call("ping").get("pong") is True
        except (SandboxError, OpError):
            return False

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._started = False
            self._shutdown()

    # Internals ----------------------------------------------------------------------------
    def _read_line(self, deadline: float, what: str) -> str:
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                self._fail(f"executor gave no answer to {what} in time; it is hung or overloaded")
            try:
                self._buffer += self._recv(left)
            except TransportClosed as exc:
                self._fail(f"executor connection closed during {what} ({exc})")
        end = self._buffer.index(b"\n")
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        return line.decode("utf-8", "replace")

    def _fail(self, message: str) -> None:
        """Mark the sandbox broken and raise SandboxDied; every later call fails fast the same way."""
        detail = self._diagnose()
        self._broken = f"{type(self).__name__}: {message}. {detail} Close this sandbox and start a new one."
        raise SandboxDied(self._broken)


def check_mount_source(source: Path) -> Path:
    """Resolve a mount source; warn when the sandbox's unprivileged user cannot read it.

    Sandboxes run as an unprivileged uid, so a folder readable only by its owner (e.g. under
    a 0700 home or pytest's tmp dirs) shows up empty, and ops report "does not exist".
    """
    source = source.resolve()
    if not source.exists():
        raise SandboxError(f"mount source {source} does not exist")
    mode = source.stat().st_mode
    needed = stat.S_IROTH | (stat.S_IXOTH if source.is_dir() else 0)
    if mode & needed != needed:
        log.warning(
            "mount source %s is not readable by other users (mode %o); the sandbox user will not see "
            "its contents. Run `chmod o+rX` on it (and make sure files inside are world-readable).",
            source,
            stat.S_IMODE(mode),
        )
    return source
