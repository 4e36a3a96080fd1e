"""Owner labels on sandbox containers, and reaping the ones whose owner is gone.

Every container gets ``skillgym.owner``, ``skillgym.pid``, ``skillgym.host`` and
``skillgym.created`` (plus ``skillgym.pid_start``, the owner's start time, so that a recycled
pid does not keep an orphan alive). :func:`collect` removes containers whose owner process on
this host no longer exists; ``all_containers=True`` removes every skillgym container.
:func:`collect_local` does the same for local sandbox folders (``<tmp>/skillgym-local-*``, each
with an ``owner.json``) and their cgroups; :func:`reap_owner` is what the watchdog runs when
its owner dies.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import socket
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import docker
from docker.errors import APIError, NotFound

LABEL_OWNER = "skillgym.owner"
LABEL_PID = "skillgym.pid"
LABEL_PID_START = "skillgym.pid_start"
LABEL_HOST = "skillgym.host"
LABEL_CREATED = "skillgym.created"
LOCAL_PREFIX = "skillgym-local-"
OWNER_FILE = "owner.json"
CGROUP_PREFIX = "skillgym-"
# A local folder from before owner files existed is an orphan once it is this old.
LEGACY_MAX_AGE_S = 3600


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), or None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode("ascii", "replace")
    except OSError:
        return None
    # Field 2 (comm) may contain spaces and parentheses; the rest follows the last ")".
    return stat.rsplit(")", 1)[-1].split()[19]


def owner_labels(owner: str | None) -> dict[str, str]:
    pid = os.getpid()
    return {
        LABEL_OWNER: owner or "skillgym",
        LABEL_PID: str(pid),
        LABEL_PID_START: process_start_time(pid) or "",
        LABEL_HOST: socket.gethostname(),
        LABEL_CREATED: _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def owner_record() -> dict:
    """What a local sandbox folder records about its owner (written as ``owner.json``)."""
    pid = os.getpid()
    return {"pid": pid, "pid_start": process_start_time(pid) or "", "host": socket.gethostname()}


def owner_alive(labels: dict[str, str]) -> bool:
    """Whether the process that created a container (on this host) still runs."""
    try:
        pid = int(labels.get(LABEL_PID, ""))
    except (TypeError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    recorded = labels.get(LABEL_PID_START)
    return not recorded or process_start_time(pid) in (None, recorded)


@dataclass
class Reaped:
    id: str
    name: str
    owner: str
    pid: str
    created: str
    reason: str
    removed: bool
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def skillgym_containers(client: docker.DockerClient) -> list:
    """Every skillgym container, skipping those removed while we looked (watchdogs remove them)."""
    found = []
    for summary in client.api.containers(all=True, filters={"label": LABEL_OWNER}):
        try:
            found.append(client.containers.get(summary["Id"]))
        except NotFound:
            continue
    return found


def collect(client: docker.DockerClient | None = None, all_containers: bool = False) -> list[Reaped]:
    """Remove orphaned (or, with ``all_containers``, all) skillgym containers; report each."""
    client = client or docker.from_env(timeout=30)
    host = socket.gethostname()
    reaped = []
    for container in skillgym_containers(client):
        labels = container.labels or {}
        if all_containers:
            reason = "--all"
        elif labels.get(LABEL_HOST) != host:
            continue  # another host's owner: we cannot tell whether it lives
        elif owner_alive(labels):
            continue
        else:
            reason = f"owner pid {labels.get(LABEL_PID)} is gone"
        entry = Reaped(
            id=container.short_id,
            name=container.name,
            owner=labels.get(LABEL_OWNER, ""),
            pid=labels.get(LABEL_PID, ""),
            created=labels.get(LABEL_CREATED, ""),
            reason=reason,
            removed=False,
        )
        try:
            container.remove(force=True, v=True)
            entry.removed = True
        except NotFound:
            entry.removed = True  # removed concurrently: gone is what we wanted
        except APIError as exc:
            entry.error = str(exc)
        reaped.append(entry)
    return reaped


def local_root() -> Path:
    """Where local sandboxes keep their folders (the system temp dir)."""
    return Path(tempfile.gettempdir())


def collect_local(all_folders: bool = False, owner: tuple[int, str | None] | None = None) -> list[Reaped]:
    """Remove local sandbox folders (and cgroups) whose owner is gone; report each.

    ``all_folders`` removes every one (only when no skillgym process runs); ``owner`` limits
    the sweep to one owner, as the watchdog does after its owner died.
    """
    reaped = []
    for folder in sorted(local_root().glob(LOCAL_PREFIX + "*")):
        if not folder.is_dir() or folder.is_symlink():
            continue
        try:
            record = json.loads((folder / OWNER_FILE).read_text())
            labels = {LABEL_PID: str(record.get("pid", "")), LABEL_PID_START: str(record.get("pid_start", ""))}
        except (OSError, ValueError, AttributeError):
            labels = None
        if owner is not None:
            if (
                labels is None
                or labels[LABEL_PID] != str(owner[0])
                or (owner[1] and labels[LABEL_PID_START] not in ("", owner[1]))
            ):
                continue
            reason = f"owner pid {owner[0]} exited"
        elif all_folders:
            reason = "--all"
        elif labels is None:
            try:
                age = time.time() - folder.stat().st_mtime
            except OSError:
                continue
            if age < LEGACY_MAX_AGE_S:
                continue
            reason = "no owner record, unused for an hour"
        elif owner_alive(labels):
            continue
        else:
            reason = f"owner pid {labels[LABEL_PID]} is gone"
        entry = Reaped(
            id=folder.name,
            name=str(folder),
            owner="local",
            pid=(labels or {}).get(LABEL_PID, ""),
            created="",
            reason=reason,
            removed=False,
        )
        shutil.rmtree(folder, ignore_errors=True)
        entry.removed = not folder.exists()
        if not entry.removed:
            entry.error = "could not remove the folder (permissions?)"
        reaped.append(entry)
    _reap_cgroups(owner[0] if owner else None, all_folders)
    return reaped


def _reap_cgroups(owner_pid: int | None, everything: bool) -> None:
    """rmdir the empty cgroups of dead owners (named ``skillgym-<pid>-<n>``)."""
    for base in _cgroup_bases():
        for group in base.glob(CGROUP_PREFIX + "*"):
            try:
                pid = int(group.name[len(CGROUP_PREFIX) :].split("-")[0])
            except ValueError:
                continue
            if owner_pid is not None and pid != owner_pid:
                continue
            if owner_pid is None and not everything and owner_alive({LABEL_PID: str(pid)}):
                continue
            _kill_cgroup(group)
            try:
                group.rmdir()
            except OSError:
                pass


def _cgroup_bases() -> list[Path]:
    """Folders under which local sandboxes may have created cgroups (see local.py)."""
    bases = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return bases
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for name in ["unified"] if controllers == "" else controllers.split(","):
            for mount in (Path("/sys/fs/cgroup") / name, Path("/sys/fs/cgroup")):
                candidate = mount / path.lstrip("/")
                if candidate.is_dir() and candidate not in bases:
                    bases.append(candidate)
    return bases


def _kill_cgroup(group: Path) -> None:
    for _ in range(20):
        try:
            pids = [int(p) for p in (group / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        time.sleep(0.05)


def reap_owner(pid: int, pid_start: str | None) -> None:
    """Remove everything sandbox-related that process ``pid`` left; run after it died."""
    collect_local(owner=(pid, pid_start))
    if not os.environ.get("DOCKER_HOST") and not os.path.exists("/var/run/docker.sock"):
        return
    try:
        client = docker.from_env(timeout=30)
        host = socket.gethostname()
        for container in skillgym_containers(client):
            labels = container.labels or {}
            if labels.get(LABEL_PID) != str(pid) or labels.get(LABEL_HOST) != host:
                continue
            if pid_start and labels.get(LABEL_PID_START) not in ("", pid_start):
                continue
            try:
                container.remove(force=True, v=True)
            except (NotFound, APIError):
                pass
    except Exception:  # no engine, refused, timeout: nothing more a watchdog can do
        pass
