"""Owner labels on sandbox containers, and reaping the ones whose owner is gone.

Every container gets ``skillgym.owner``, ``skillgym.pid``, ``skillgym.host`` and
``skillgym.created`` (plus ``skillgym.pid_start``, the owner's start time, so that a recycled
pid does not keep an orphan alive). :func:`collect` removes containers whose owner process on
this host no longer exists; ``all_containers=True`` removes every skillgym container.
"""

from __future__ import annotations

import datetime as _dt
import os
import socket
from dataclasses import asdict, dataclass

import docker
from docker.errors import APIError, NotFound

LABEL_OWNER = "skillgym.owner"
LABEL_PID = "skillgym.pid"
LABEL_PID_START = "skillgym.pid_start"
LABEL_HOST = "skillgym.host"
LABEL_CREATED = "skillgym.created"


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
        LABEL_CREATED: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def owner_alive(labels: dict[str, str]) -> bool:
    """Whether the process that created a container (on this host) still runs."""
    try:
        pid = int(labels.get(LABEL_PID, ""))
    except ValueError:
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
    return client.containers.list(all=True, filters={"label": LABEL_OWNER})


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
            id=container.short_id, name=container.name, owner=labels.get(LABEL_OWNER, ""),
            pid=labels.get(LABEL_PID, ""), created=labels.get(LABEL_CREATED, ""), reason=reason, removed=False,
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
