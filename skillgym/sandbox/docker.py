"""DockerSandbox: one container per sandbox, the executor as the container's main process.

The container runs ``python3 /opt/skillgym/executor.py`` (the package folder bind-mounted
read-only) under ``docker-init``; the host holds one attach socket to its stdin/stdout for the
container's whole life, so a tool call is one JSON line each way (~0.1-0.3 ms) instead of a
``docker exec`` (tens of ms). Isolation: no network unless asked, read-only root filesystem
with tmpfs ``/workspace`` and ``/tmp``, memory (no swap), CPU and PID limits, no-new-privileges,
no container log (the engine's json-file log would grow on the host outside every limit).

Privileges: the executor runs as root in the container with only CAP_SETUID, CAP_SETGID and
CAP_KILL; tool commands and file ops run as uid 1000, which can neither signal, trace nor open
the fds of the executor, so the answers the host reads (and graders trust) cannot be forged
from inside. Owner labels, a per-process watchdog (:mod:`.watchdog`) and
``skillgym sandbox gc`` remove containers whose owner died.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import socket
from functools import lru_cache
from pathlib import Path

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import LogConfig
from docker.types import Mount as DockerMount

from .base import SandboxConfig, SandboxError
from .channel import ExecutorSandbox, TransportClosed, check_mount_source
from .gc import owner_labels
from .watchdog import ensure_watchdog

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent  # holds executor.py and ops.py
EXECUTOR_DIR = "/opt/skillgym"
SANDBOX_USER = "1000:1000"  # what tool commands and file ops run as
EXECUTOR_CAPS = ["SETUID", "SETGID", "KILL"]  # switch to the tool uid; end its processes
STDOUT, STDERR = 1, 2
STDERR_TAIL = 4000
_names = itertools.count()


@lru_cache(maxsize=1)
def default_client() -> docker.DockerClient:
    """One client per process; its connection pool is shared by every sandbox."""
    return docker.from_env(timeout=60)


@lru_cache(maxsize=8)
def _has_bridge(client: docker.DockerClient) -> bool:
    try:
        return bool(client.networks.list(names=["bridge"]))
    except DockerException:
        return False


def container_kwargs(config: SandboxConfig, client: docker.DockerClient) -> dict:
    """Everything ``containers.create`` needs for ``config`` (kept apart so tests can read it)."""
    mem = f"{config.memory_mb}m"
    workspace_mb = max(64, config.memory_mb // 2)
    tmp_mb = max(32, config.memory_mb // 4)
    uid, gid = SANDBOX_USER.split(":")
    # A list, not the ``volumes`` dict: that is keyed by host path, so two mounts of one
    # folder would silently collapse into one.
    mounts = [DockerMount(EXECUTOR_DIR, str(PACKAGE_DIR), type="bind", read_only=True)]
    for mount in config.mounts:
        source = check_mount_source(Path(mount.source))
        target = f"/workspace/{mount.target.strip('/')}"
        mounts.append(DockerMount(target, str(source), type="bind", read_only=mount.read_only))
    if not config.network:
        network_mode = "none"
    elif _has_bridge(client):
        network_mode = "bridge"
    elif config.allow_host_network:
        network_mode = "host"
    else:
        # Engines started with --bridge=none (as on CI) have no default network; host
        # networking would let the sandbox reach every service on the host's loopback.
        raise SandboxError(
            "the sandbox asks for network access but this Docker engine has no bridge network; refusing to "
            "share the host's network silently. Create a bridge (start dockerd without --bridge=none), set "
            "network=False, or set allow_host_network=True to share the host's network knowingly"
        )
    return dict(
        image=config.image,
        command=[
            "python3",
            "-E",
            "-s",
            "-B",
            f"{EXECUTOR_DIR}/executor.py",
            "--root",
            "/workspace",
            "--tool-uid",
            uid,
            "--tool-gid",
            gid,
            "--op-timeout",
            str(config.default_timeout),
        ],
        name=f"skillgym-{os.getpid()}-{next(_names)}-{secrets.token_hex(3)}",
        user="0:0",  # the executor; tool commands drop to SANDBOX_USER (see the module docstring)
        working_dir="/workspace",
        stdin_open=True,  # with the SDK's default StdinOnce: stdin closes when the owner's socket does
        tty=False,
        init=True,  # docker-init as PID 1 reaps the zombies that tool commands leave behind
        network_mode=network_mode,
        read_only=True,
        tmpfs={
            "/workspace": f"rw,exec,nosuid,nodev,size={workspace_mb}m,mode=0755,uid={uid},gid={gid}",
            "/tmp": f"rw,exec,nosuid,nodev,size={tmp_mb}m,mode=1777",
        },
        mounts=mounts,
        mem_limit=mem,
        memswap_limit=mem,
        nano_cpus=int(config.cpus * 1e9),
        pids_limit=config.pids_limit,
        cap_drop=["ALL"],
        cap_add=EXECUTOR_CAPS,
        security_opt=["no-new-privileges"],
        log_config=LogConfig(type="none"),
        labels=owner_labels(config.owner),
    )


class DockerSandbox(ExecutorSandbox):
    """A container whose main process is the executor; see the module docstring."""

    isolated_processes = True  # tool commands run as their own uid in the container's pid namespace

    def __init__(self, config: SandboxConfig | None = None, client: docker.DockerClient | None = None) -> None:
        super().__init__()
        self.config = config or SandboxConfig(backend="docker")
        self._client = client
        self.container = None
        self._sock: socket.socket | None = None
        self._raw = b""  # undecoded multiplexed stream bytes
        self._stderr = b""

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = default_client()
        return self._client

    # Transport -----------------------------------------------------------------------------
    def _launch(self) -> None:
        ensure_watchdog()  # before the container exists: no window in which a crash would leak it
        kwargs = container_kwargs(self.config, self.client)
        try:
            self.container = self.client.containers.create(**kwargs)
        except ImageNotFound:
            raise SandboxError(
                f"image {self.config.image!r} does not exist; build it with `skillgym sandbox build` "
                "(or skillgym.sandbox.images.ensure_base_image())"
            ) from None
        except DockerException as exc:
            raise SandboxError(f"could not create a sandbox container from {self.config.image!r}: {exc}") from None
        try:
            # Attach before start so that not a byte of the executor's output is missed.
            attached = self.client.api.attach_socket(
                self.container.id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
            )
            self._sock = getattr(attached, "_sock", attached)
            self._keepalive = attached  # holds the HTTP response that owns the socket
            self.container.start()
        except DockerException as exc:
            raise SandboxError(f"could not start sandbox container {self.container.name}: {exc}") from None

    def _send(self, data: bytes) -> None:
        if self._sock is None:
            raise TransportClosed("not connected")
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise TransportClosed(str(exc)) from None

    def _recv(self, timeout: float) -> bytes:
        """Demultiplex the attach stream: 8-byte header (stream id, size) + payload."""
        assert self._sock is not None
        out = b""
        while True:
            while len(self._raw) >= 8:
                size = int.from_bytes(self._raw[4:8], "big")
                if len(self._raw) < 8 + size:
                    break
                stream, payload = self._raw[0], self._raw[8 : 8 + size]
                self._raw = self._raw[8 + size :]
                if stream == STDERR:
                    self._stderr = (self._stderr + payload)[-STDERR_TAIL:]
                else:
                    out += payload
            if out:
                return out
            self._sock.settimeout(timeout)
            try:
                chunk = self._sock.recv(1 << 20)
            except TimeoutError:
                return b""
            except OSError as exc:
                raise TransportClosed(str(exc)) from None
            if not chunk:
                raise TransportClosed("end of stream")
            self._raw += chunk

    def _diagnose(self) -> str:
        if self.container is None:
            return "No container was created."
        name = self.container.name
        try:
            self.container.reload()
        except NotFound:
            return f"Container {name} no longer exists (removed from outside?)."
        except DockerException as exc:
            return f"The Docker engine does not answer about container {name}: {exc}."
        state = self.container.attrs.get("State", {})
        parts = [f"Container {name} is {state.get('Status', 'unknown')}"]
        if state.get("Status") in ("exited", "dead"):
            parts.append(f"with exit code {state.get('ExitCode')}")
        if state.get("OOMKilled"):
            parts.append(f"(killed for exceeding its {self.config.memory_mb} MiB memory limit)")
        text = " ".join(parts) + "."
        tail = self._stderr.decode("utf-8", "replace").strip()
        if tail:
            text += f" Executor stderr ends with: {tail[-800:]}"
        return text

    def _shutdown(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None
            self._keepalive = None
        container, self.container = self.container, None
        if container is not None:
            try:
                container.remove(force=True, v=True)
            except NotFound:
                pass
            except (APIError, DockerException) as exc:
                log.warning(
                    "could not remove sandbox container %s: %s (`skillgym sandbox gc` will)", container.name, exc
                )
