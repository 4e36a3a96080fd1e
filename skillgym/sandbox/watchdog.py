"""A watchdog per process: its sandboxes do not outlive it, even after ``kill -9``.

The first sandbox a process starts spawns a small helper in its own session (so a Ctrl-C in
the terminal does not reach it), holding the read end of a pipe whose write end only the owner
holds. The kernel closes that pipe however the owner ends; the helper then removes what the
owner left: containers labelled with its pid and start time, local sandbox folders named after
it, and their cgroups (:func:`skillgym.sandbox.gc.reap_owner`). While it waits the helper has
imported nothing but ``os`` and ``sys`` (a few MB of memory); then it loads ``gc.py`` alone.

Set ``SKILLGYM_SANDBOX_WATCHDOG=0`` to do without it (then ``skillgym sandbox gc`` reaps).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from .gc import process_start_time

GC_MODULE = Path(__file__).resolve().parent / "gc.py"

# Runs as ``python -c``: wait for EOF on stdin, then reap. cwd is "/" so that no module of the
# directory it was started from can shadow an import.
_HELPER = """\
import os, sys
while True:
    try:
        if not os.read(0, 4096):
            break
    except InterruptedError:
        continue
    except OSError:
        break
# gc.py is loaded from its file: it needs only the docker SDK, not the whole skillgym package.
import importlib.util
spec = importlib.util.spec_from_file_location("skillgym_sandbox_gc", sys.argv[3])
gc = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gc)
gc.reap_owner(int(sys.argv[1]), sys.argv[2] or None)
"""

_lock = threading.Lock()
_owner_pid: int | None = None
_write_fd: int | None = None


def ensure_watchdog() -> None:
    """Start this process's watchdog unless it runs already (cheap after the first call)."""
    global _owner_pid, _write_fd
    if os.environ.get("SKILLGYM_SANDBOX_WATCHDOG", "1") == "0":
        return
    pid = os.getpid()
    if _owner_pid == pid:
        return
    with _lock:
        if _owner_pid == pid:
            return
        read_fd, write_fd = os.pipe()  # both close-on-exec: no child of ours inherits the write end
        try:
            subprocess.Popen(
                [sys.executable, "-c", _HELPER, str(pid), process_start_time(pid) or "", str(GC_MODULE)],
                stdin=read_fd,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd="/",
                start_new_session=True,
                close_fds=True,
            )
        except OSError:
            os.close(write_fd)
            raise
        finally:
            os.close(read_fd)
        # A forked child inherits the old fd; it belongs to the parent's watchdog, not its own.
        _owner_pid, _write_fd = pid, write_fd
