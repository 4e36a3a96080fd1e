"""Derived sandbox images for skills whose bundled scripts need packages.

A skill whose scripts import PyPI packages or call system tools gets an image built ``FROM``
the sandbox base with exactly those installed (``docker/skill/README.md``). The tag is
``skillgym/skill-<hash12>``, a hash of the skill, its detected dependencies and this
recipe, so a second compile of the same skill reuses the image and any change rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import tempfile
from pathlib import Path

from skillgym.compiler.deps import SkillDependencies
from skillgym.types import SkillSpec

log = logging.getLogger(__name__)

RECIPE_VERSION = "1"  # bump when the Dockerfile below changes
SKILL_REPO = "skillgym/skill"


def skill_image_tag(skill: SkillSpec, deps: SkillDependencies) -> str:
    from skillgym.sandbox.images import BASE_VERSION

    payload = json.dumps(
        {"skill": skill.content_hash, "pip": deps.pip, "apt": deps.apt, "recipe": RECIPE_VERSION, "base": BASE_VERSION},
        sort_keys=True,
    )
    return f"{SKILL_REPO}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}:latest"


def render_dockerfile(skill: SkillSpec, deps: SkillDependencies) -> str:
    """The derived image's Dockerfile. pip comes from Debian because the base image has
    none; ``--break-system-packages`` is safe in a single-purpose image (PEP 668 guards
    shared systems, not throwaway containers)."""
    apt = sorted(set(deps.apt) | ({"python3-pip"} if deps.pip else set()))
    lines = ["ARG BASE_IMAGE=skillgym/base:latest", "FROM ${BASE_IMAGE}", "USER root"]
    if apt:
        lines.append(
            "RUN apt-get update && apt-get install -y --no-install-recommends "
            + " ".join(apt)
            + " && rm -rf /var/lib/apt/lists/*"
        )
    if deps.pip:
        lines.append("COPY requirements.txt pip-ca.crt /opt/")
        lines.append(
            "RUN python3 -m pip install --no-cache-dir --disable-pip-version-check --break-system-packages "
            + " ".join(pip_index_args())
            + ' $(test -s /opt/pip-ca.crt && echo "--cert /opt/pip-ca.crt") -r /opt/requirements.txt'
            + " && rm -f /opt/pip-ca.crt"
        )
    lines.append(f'LABEL org.skillgym.skill="{_label(skill.name)}" org.skillgym.skill-hash="{skill.content_hash}"')
    return "\n".join(lines) + "\n"


def ensure_skill_image(skill: SkillSpec, deps: SkillDependencies, client=None) -> str:
    """Tag of the skill's image: the base image when nothing is needed, else the derived
    image, built on first use (raises ``ImageBuildError`` with the build log's tail)."""
    import docker

    from skillgym.sandbox.images import BASE_TAG, build_derived_image, ensure_base_image, image_exists

    # A long timeout: a build's log can stay silent for minutes while apt or pip download.
    client = client or docker.from_env(timeout=900)
    if deps.empty:
        ensure_base_image(client)
        return BASE_TAG
    tag = skill_image_tag(skill, deps)
    if image_exists(client, tag):
        return tag
    log.info("building %s for skill %s (pip: %s; apt: %s)", tag, skill.name, deps.pip, deps.apt)
    with tempfile.TemporaryDirectory(prefix="skillgym-skill-image-") as tmp:
        context = Path(tmp)
        (context / "Dockerfile").write_text(render_dockerfile(skill, deps), encoding="utf-8")
        (context / "requirements.txt").write_text("".join(f"{p}\n" for p in deps.pip), encoding="utf-8")
        ca = host_ca_bundle()
        (context / "pip-ca.crt").write_bytes(ca.read_bytes() if ca else b"")
        build_derived_image(context, tag, client)
    return tag


def host_ca_bundle() -> Path | None:
    """The CA bundle the host's pip trusts, when it names one (``PIP_CERT``, ``SSL_CERT_FILE``,
    ``REQUESTS_CA_BUNDLE``, or pip's ``cert`` setting). Behind a TLS-intercepting proxy the
    image's stock CA list fails; the host's bundle is what makes PyPI reachable there."""
    for name in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        value = os.environ.get(name)
        if value and Path(value).is_file():
            return Path(value)
    for config in (Path("/etc/pip.conf"), Path("/etc/xdg/pip/pip.conf"), Path.home() / ".config/pip/pip.conf"):
        if config.is_file():
            for line in config.read_text(encoding="utf-8", errors="replace").splitlines():
                key, _, value = line.partition("=")
                if key.strip() == "cert" and Path(value.strip()).is_file():
                    return Path(value.strip())
    return None


def pip_index_args() -> list[str]:
    """``--index-url``/``--extra-index-url`` from the host's environment (http(s) only: a
    ``file://`` index on the host does not exist inside the build)."""
    args = []
    for env_name, flag in (("PIP_INDEX_URL", "--index-url"), ("PIP_EXTRA_INDEX_URL", "--extra-index-url")):
        for url in os.environ.get(env_name, "").split():
            if url.startswith(("http://", "https://")):
                args += [flag, shlex.quote(url)]
    return args


def _label(text: str) -> str:
    return text.replace('"', "'").replace("\n", " ")
