"""The sandbox base image: built locally, cached, and reused.

``ensure_base_image()`` returns ``skillgym/base:<BASE_VERSION>`` (also tagged ``:latest``),
building it when missing:

1. a normal ``docker build`` ``FROM debian:bookworm-slim`` (needs a registry; fails fast
   where none is reachable), else
2. ``debootstrap --variant=minbase`` of Debian bookworm into ``~/.cache/skillgym/rootfs`` (only
   the distribution's package mirror is needed), tarred and ``docker import``-ed.

Both recipes give the same image: Debian bookworm with python3 (the executor's interpreter),
a ``sandbox`` user with uid/gid 1000, ``HOME=/tmp`` and ``WORKDIR /workspace``. Bump
``BASE_VERSION`` whenever the recipe changes. Images derived from it (``docker/*``) are
built by :func:`build_derived_image`. Run ``python -m skillgym.sandbox.images`` to build.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import docker
from docker.errors import APIError, BuildError, DockerException, ImageNotFound

from skillgym.cache import cache_root

log = logging.getLogger(__name__)

BASE_VERSION = "1"
BASE_REPO = "skillgym/base"
BASE_TAG = f"{BASE_REPO}:{BASE_VERSION}"
SUITE = "bookworm"
MIRROR = os.environ.get("SKILLGYM_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PACKAGES = ["python3", "procps", "ca-certificates"]
SANDBOX_UID = 1000
IMAGE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/tmp",  # dotfiles of tools go to /tmp, not into the graded workspace
    "PYTHONDONTWRITEBYTECODE": "1",
}
LABELS = {"org.skillgym.base-version": BASE_VERSION}

DOCKERFILE = f"""\
FROM debian:{SUITE}-slim
RUN apt-get update && apt-get install -y --no-install-recommends {" ".join(PACKAGES)} \\
    && rm -rf /var/lib/apt/lists/* \\
    && groupadd -g {SANDBOX_UID} sandbox && useradd -u {SANDBOX_UID} -g {SANDBOX_UID} -d /workspace -s /bin/bash sandbox \\
    && mkdir -p /workspace /opt/skillgym
{chr(10).join(f"ENV {k}={v}" for k, v in IMAGE_ENV.items())}
{chr(10).join(f"LABEL {k}={v}" for k, v in LABELS.items())}
WORKDIR /workspace
CMD ["python3"]
"""


class ImageBuildError(RuntimeError):
    """Neither recipe could build the base image."""


def _client(client: docker.DockerClient | None) -> docker.DockerClient:
    return client or docker.from_env(timeout=600)


def image_exists(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
        return True
    except ImageNotFound:
        return False


def base_image_present(client: docker.DockerClient | None = None) -> tuple[bool, str]:
    """Whether the current base image exists, and its tag (for ``skillgym doctor``)."""
    try:
        return image_exists(_client(client), BASE_TAG), BASE_TAG
    except DockerException:
        return False, BASE_TAG


def ensure_base_image(client: docker.DockerClient | None = None, force: bool = False) -> str:
    """Tag of the base image, building (and caching) it first when it is missing."""
    client = _client(client)
    if not force and image_exists(client, BASE_TAG):
        _tag_latest(client)
        return BASE_TAG
    errors = []
    try:
        _build_from_registry(client)
    except (BuildError, APIError, DockerException) as exc:
        errors.append(f"docker build FROM debian:{SUITE}-slim failed: {_short(exc)}")
        log.info("registry build failed (%s); falling back to debootstrap", _short(exc))
        try:
            _build_with_debootstrap(client, force=force)
        except (ImageBuildError, APIError, DockerException, OSError, subprocess.SubprocessError) as exc2:
            errors.append(f"debootstrap + docker import failed: {_short(exc2)}")
            raise ImageBuildError(
                "could not build the sandbox base image: "
                + "; ".join(errors)
                + ". Either make a registry reachable, or run as root on a Debian/Ubuntu host with "
                "`apt-get install debootstrap` and access to a Debian mirror (SKILLGYM_DEBIAN_MIRROR)."
            ) from exc2
    _tag_latest(client)
    return BASE_TAG


def _tag_latest(client: docker.DockerClient) -> None:
    client.images.get(BASE_TAG).tag(BASE_REPO, "latest")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1][:300] if text else type(exc).__name__


def _build_from_registry(client: docker.DockerClient) -> None:
    # The pull is the step that needs a registry; trying it alone first fails in well under a
    # second where no registry resolves, instead of starting a build.
    client.images.pull("debian", tag=f"{SUITE}-slim")
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        data = DOCKERFILE.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, tag=BASE_TAG, rm=True, forcerm=True, pull=False)


def rootfs_tarball() -> Path:
    return cache_root() / "rootfs" / f"base-{BASE_VERSION}-{SUITE}.tar"


def _build_with_debootstrap(client: docker.DockerClient, force: bool = False) -> None:
    tarball = rootfs_tarball()
    if force or not tarball.exists():
        _debootstrap_tarball(tarball)
    changes = [f"ENV {k}={v}" for k, v in IMAGE_ENV.items()]
    changes += [f'LABEL {k}="{v}"' for k, v in LABELS.items()]
    changes += ["WORKDIR /workspace", 'CMD ["python3"]']
    client.api.import_image(src=str(tarball), repository=BASE_REPO, tag=BASE_VERSION, changes=changes)
    if not image_exists(client, BASE_TAG):
        raise ImageBuildError(f"docker import of {tarball} did not produce {BASE_TAG}")


def _debootstrap_tarball(tarball: Path) -> None:
    exe = shutil.which("debootstrap")
    if exe is None:
        raise ImageBuildError("debootstrap is not installed (apt-get install -y debootstrap)")
    if os.geteuid() != 0:
        raise ImageBuildError("debootstrap needs root")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    debs = cache_root() / "debs"  # reused by later builds: no second download
    debs.mkdir(parents=True, exist_ok=True)
    work = tarball.parent / f"work-{BASE_VERSION}"
    shutil.rmtree(work, ignore_errors=True)
    try:
        _run(
            [
                exe,
                "--variant=minbase",
                f"--include={','.join(PACKAGES)}",
                f"--cache-dir={debs}",
                SUITE,
                str(work),
                MIRROR,
            ]
        )
        _customize_rootfs(work)
        partial = tarball.with_suffix(".partial")
        _run(["tar", "--numeric-owner", "-C", str(work), "-cf", str(partial), "."])
        partial.replace(tarball)  # only a complete tarball is ever reused
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _customize_rootfs(root: Path) -> None:
    """What the Dockerfile's RUN line does, done on the unpacked tree."""
    with open(root / "etc/passwd", "a") as fh:
        fh.write(f"sandbox:x:{SANDBOX_UID}:{SANDBOX_UID}::/workspace:/bin/bash\n")
    with open(root / "etc/group", "a") as fh:
        fh.write(f"sandbox:x:{SANDBOX_UID}:\n")
    for folder in ("workspace", "opt/skillgym"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    # Package caches and docs only add size to every image built from this one.
    for junk in (
        "var/cache/apt/archives",
        "var/lib/apt/lists",
        "usr/share/doc",
        "usr/share/man",
        "usr/share/info",
        "usr/share/locale",
    ):
        target = root / junk
        if target.is_dir():
            for child in target.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.strip().splitlines()[-15:])
        raise ImageBuildError(f"`{' '.join(argv[:3])} ...` exited with {proc.returncode}:\n{tail}")


def build_derived_image(dockerfile_dir: str | Path, tag: str, client: docker.DockerClient | None = None) -> str:
    """Build an image whose Dockerfile starts ``FROM`` the base (``ARG BASE_IMAGE``).

    The docker SDK always uses the legacy builder (what ``DOCKER_BUILDKIT=0`` selects on the
    CLI), which sees images that exist only locally; host networking lets ``RUN apt-get`` or
    ``pip install`` reach the package mirrors where the default bridge is disabled.
    """
    client = _client(client)
    base = ensure_base_image(client)
    path = Path(dockerfile_dir)
    if not (path / "Dockerfile").is_file():
        raise ImageBuildError(f"no Dockerfile in {path}")
    try:
        client.images.build(
            path=str(path),
            tag=tag,
            network_mode="host",
            rm=True,
            forcerm=True,
            pull=False,
            buildargs={"BASE_IMAGE": base},
        )
    except BuildError as exc:
        log_tail = "".join(chunk.get("stream", "") for chunk in exc.build_log if isinstance(chunk, dict))[-1500:]
        raise ImageBuildError(f"building {tag} from {path} failed: {exc.msg}\n{log_tail}") from exc
    return tag


# Images of the project's own envs, one folder each under docker/ (bump a tag when its
# Dockerfile changes, as BASE_VERSION for the base).
DERIVED_IMAGES = {"frontend": "skillgym/frontend:1"}


def docker_dir() -> Path:
    """The repository's ``docker/`` folder (the package is installed editable from it)."""
    return Path(__file__).resolve().parents[2] / "docker"


def ensure_derived_image(name: str, client: docker.DockerClient | None = None, force: bool = False) -> str:
    """Tag of the image built from ``docker/<name>/Dockerfile``, building (and caching) it when missing.

    Args:
        name: The folder under ``docker/``, e.g. ``frontend``.
        client: A docker client; None: one from the environment.
        force: Rebuild even if the image exists.

    Returns:
        The image's tag (``DERIVED_IMAGES[name]``, else ``skillgym/<name>:latest``).
    """
    client = _client(client)
    tag = DERIVED_IMAGES.get(name, f"skillgym/{name}:latest")
    if not force and image_exists(client, tag):
        return tag
    return build_derived_image(docker_dir() / name, tag, client)


if __name__ == "__main__":
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="Build (or reuse) the skillgym sandbox base image.")
    parser.add_argument("--force", action="store_true", help="rebuild even if the image exists")
    parser.add_argument("--derived", metavar="NAME", help="build (or reuse) the image of docker/NAME instead")
    ns = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if ns.derived:
            sys.stdout.write(ensure_derived_image(ns.derived, force=ns.force) + "\n")
            sys.exit(0)
        sys.stdout.write(ensure_base_image(force=ns.force) + "\n")
    except (ImageBuildError, DockerException) as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(1)
