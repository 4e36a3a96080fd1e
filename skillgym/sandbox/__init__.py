"""Sandboxes: where an episode's tools run (see DESIGN.md, "Sandboxes").

    from skillgym.sandbox import make_sandbox
    with make_sandbox() as sb:
        sb.run("ls")

``make_sandbox`` picks Docker when an engine answers and the image can be ensured, else the
local backend (bubblewrap, or an unisolated subprocess) with a warning.
"""

from __future__ import annotations

from .base import Mount, Sandbox, SandboxConfig, SandboxDied, SandboxError
from .channel import ExecutorInternalError
from .factory import docker_available, make_sandbox
from .local import LocalSandbox
from .ops import OpError
from .pool import SandboxPool

__all__ = [
    "ExecutorInternalError",
    "LocalSandbox",
    "Mount",
    "OpError",
    "Sandbox",
    "SandboxConfig",
    "SandboxDied",
    "SandboxError",
    "SandboxPool",
    "docker_available",
    "make_sandbox",
]
