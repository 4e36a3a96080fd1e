"""SandboxPool: pre-started sandboxes, so an episode starts with a reset, not a container start.

``acquire()`` hands out a ready sandbox; ``release(sb)`` empties its workspace (the ``reset``
op, a few ms) and puts it back. A sandbox that fails its reset or no longer answers is closed
and replaced in the background, so one broken container never shrinks the pool.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from .base import Sandbox, SandboxConfig, SandboxError
from .factory import make_sandbox

log = logging.getLogger(__name__)


class SandboxPool:
    """A thread-safe pool of ``size`` warm sandboxes built from ``config``."""

    def __init__(
        self,
        config: SandboxConfig | None = None,
        size: int = 2,
        factory: Callable[[], Sandbox] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"pool size must be at least 1, got {size}")
        self.config = config or SandboxConfig()
        self.size = size
        self._factory = factory or self._default_factory
        self._idle: deque[Sandbox] = deque()
        self._busy: set[int] = set()
        self._cond = threading.Condition()
        self._pending = 0  # sandboxes being started
        self._closed = False
        self._errors: list[str] = []
        self._starter = ThreadPoolExecutor(max_workers=min(size, 4), thread_name_prefix="skillgym-pool")
        for _ in range(size):
            self._spawn()

    def _default_factory(self) -> Sandbox:
        return make_sandbox(self.config)

    # Starting replacements ----------------------------------------------------------------
    def _spawn(self) -> None:
        with self._cond:
            self._pending += 1
        self._starter.submit(self._start_one)

    def _start_one(self) -> None:
        sandbox = None
        try:
            sandbox = self._factory()
            sandbox.start()
        except Exception as exc:  # reported to the waiting acquire() callers
            log.warning("could not start a pooled sandbox: %s", exc)
            if sandbox is not None:
                sandbox.close()
            sandbox = None
            error = f"{type(exc).__name__}: {exc}"
        with self._cond:
            self._pending -= 1
            if sandbox is None:
                self._errors.append(error)
            elif self._closed:
                sandbox.close()
            else:
                self._idle.append(sandbox)
            self._cond.notify_all()

    # Public API ----------------------------------------------------------------------------
    def acquire(self, timeout: float | None = 120.0) -> Sandbox:
        """A started sandbox with an empty workspace; blocks while all are busy."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            sandbox = self._take_idle(deadline, timeout)
            # One ping (well under a millisecond) catches a container that died while idle.
            if sandbox.alive:
                with self._cond:
                    self._busy.add(id(sandbox))
                return sandbox
            log.warning("an idle pooled sandbox stopped answering; replacing it")
            sandbox.close()
            self._spawn()

    def _take_idle(self, deadline: float | None, timeout: float | None) -> Sandbox:
        with self._cond:
            while True:
                if self._closed:
                    raise SandboxError("the sandbox pool is closed")
                if self._idle:
                    return self._idle.popleft()
                if self._pending == 0 and self._errors:
                    raise SandboxError(f"the sandbox pool could not start sandboxes: {self._errors[-1]}")
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise SandboxError(f"no sandbox became free within {timeout} s (pool size {self.size})")
                self._cond.wait(left)

    def release(self, sandbox: Sandbox) -> None:
        """Reset ``sandbox`` and return it to the pool (or replace it if it is broken)."""
        with self._cond:
            if id(sandbox) not in self._busy:
                raise ValueError("this sandbox was not acquired from this pool")
            self._busy.discard(id(sandbox))
            closed = self._closed
        if closed:
            sandbox.close()
            return
        try:
            sandbox.reset()
        except Exception as exc:  # any failure means its state is unknown: never reuse it
            log.warning("pooled sandbox failed its reset (%s); replacing it", exc)
            sandbox.close()
            self._errors.clear()
            self._spawn()
            return
        with self._cond:
            if self._closed:
                sandbox.close()
                return
            self._idle.append(sandbox)
            self._cond.notify_all()

    def close(self) -> None:
        """Close every idle sandbox now; busy ones are closed when released."""
        with self._cond:
            self._closed = True
            idle, self._idle = list(self._idle), deque()
            self._cond.notify_all()
        for sandbox in idle:
            sandbox.close()
        self._starter.shutdown(wait=True)  # sandboxes still starting close themselves

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
