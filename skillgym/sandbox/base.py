"""The Sandbox protocol: where an episode's tools run.

A sandbox owns one workspace (``/workspace`` as the model sees it) and a persistent
executor process that serves :mod:`skillgym.sandbox.ops` requests over a pipe, so a tool call
costs one round trip rather than a process start. Backends differ only in how they start
that executor and what isolates it (see ``docker.py`` and ``local.py``).
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field


class SandboxError(RuntimeError):
    """The sandbox itself failed (container died, executor crashed): not the model's fault."""


class SandboxDied(SandboxError):
    """The executor (or its container) is dead or hung: this sandbox answers nothing any more.

    Every later call raises it again. Close the sandbox and start a new one; an episode can go
    on in the new sandbox (its workspace is empty).
    """


class Mount(BaseModel):
    """A host folder made visible inside the workspace."""

    source: Path
    target: str = Field(description="Path relative to the workspace, e.g. 'repo'.")
    read_only: bool = True


class SandboxConfig(BaseModel):
    """Everything needed to start an equivalent sandbox on any backend."""

    backend: Literal["auto", "docker", "local"] = "auto"
    image: str = "skillgym/base:latest"
    network: bool = False
    allow_host_network: bool = Field(
        default=False,
        description="With network=True on a Docker engine that has no bridge network, share the host's "
        "network (the sandbox then reaches host loopback services). Without it such a sandbox is refused.",
    )
    cpus: float = 1.0
    memory_mb: int = 1024
    pids_limit: int = 256
    mounts: list[Mount] = Field(default_factory=list)
    default_timeout: float = 30.0
    max_output: int = 30_000
    owner: str | None = Field(default=None, description="Label value used by `skillgym sandbox gc`.")


class Sandbox(abc.ABC):
    """One isolated workspace with a persistent executor. Use as a context manager."""

    config: SandboxConfig
    # True where tool processes run in their own uid/pid namespace, so a reset may kill them all.
    isolated_processes: bool = False

    @abc.abstractmethod
    def start(self) -> None:
        """Start the executor (idempotent)."""

    @abc.abstractmethod
    def call(self, op: str, **args: Any) -> dict:
        """Run one op from :data:`skillgym.sandbox.ops.OPS`.

        Raises :class:`~skillgym.sandbox.ops.OpError` for request errors (bad path, ...), whose
        message is meant for the model, and :class:`SandboxError` when the sandbox is broken.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Stop the executor and release every resource (idempotent)."""

    @property
    @abc.abstractmethod
    def alive(self) -> bool:
        """Whether the executor still answers."""

    # Conveniences shared by every backend -------------------------------------------------
    def run(self, cmd: str, timeout: float | None = None) -> dict:
        return self.call(
            "run", cmd=cmd, timeout=timeout or self.config.default_timeout, max_output=self.config.max_output
        )

    def read_file(self, path: str) -> str:
        """Whole file as text (raw, not numbered)."""
        return self.call("read_text", path=path)["content"]

    def write_file(self, path: str, content: str) -> None:
        self.call("write_file", path=path, content=content)

    def put_files(self, files: dict[str, str]) -> None:
        if files:
            self.call("put_files", files=files)

    def reset(self) -> None:
        """Empty the workspace (mounts stay) so the sandbox can serve a new episode."""
        self.call("reset", keep=[m.target.split("/")[0] for m in self.config.mounts], scrub=self.isolated_processes)

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
