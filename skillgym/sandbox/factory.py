"""make_sandbox: pick the backend a SandboxConfig asks for (Docker when an engine answers and
the image can be ensured, else the local backend with a warning)."""

from __future__ import annotations

import logging
import os
import warnings
from functools import lru_cache

from .base import Sandbox, SandboxConfig, SandboxError
from .local import LocalSandbox

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def docker_available() -> bool:
    """Whether a Docker engine answers a ping within a few seconds (cached per process)."""
    host = os.environ.get("DOCKER_HOST", "")
    if not host and not os.path.exists("/var/run/docker.sock"):
        return False  # no socket: skip the SDK's connection attempt entirely
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # any failure (no SDK, refused, timeout, bad DOCKER_HOST) means "no"
        return False


@lru_cache(maxsize=8)
def _docker_image_ready(image: str) -> str | None:
    """None when ``image`` is usable, else why not (cached: building is attempted once)."""
    from docker.errors import DockerException

    from .docker import default_client
    from .images import BASE_REPO, ImageBuildError, ensure_base_image, image_exists

    client = default_client()
    try:
        if image_exists(client, image):
            return None
        if image.split(":")[0] == BASE_REPO:
            ensure_base_image(client)
            return None if image_exists(client, image) else f"image {image!r} is not a base image tag"
        return f"image {image!r} does not exist; build it first"
    except (ImageBuildError, DockerException) as exc:
        return f"could not prepare image {image!r}: {exc}"


def make_sandbox(config: SandboxConfig | None = None) -> Sandbox:
    """A new (not yet started) sandbox for ``config`` on the backend it asks for."""
    config = config or SandboxConfig()
    if config.backend in ("auto", "docker"):
        problem = "no Docker engine answers" if not docker_available() else _docker_image_ready(config.image)
        if problem is None:
            from .docker import DockerSandbox

            return DockerSandbox(config)
        if config.backend == "docker":
            raise SandboxError(
                f"Docker sandbox requested but {problem}. Run scripts/setup_docker.sh, or use backend='local'."
            )
        message = f"skillgym: using the local sandbox because {problem}."
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        log.warning(message)
    return LocalSandbox(config)
