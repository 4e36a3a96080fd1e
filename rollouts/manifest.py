"""The run manifest (``OUT/manifest.json``): what produced a run directory's records.

It is written (atomically) before the first episode, so even a run killed in its first
second can be resumed, and a later command pointed at the same directory is checked
against it: one run directory holds the records of one env, policy and config.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import subprocess
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from skillgym.io import atomic_write_text
from skillgym.rollouts.config import RolloutConfig

MANIFEST_NAME = "manifest.json"
PACKAGES = ("skillgym", "torch", "transformers", "trl", "ray", "datasets", "openai", "gymnasium", "pydantic")
_SECRET_WORDS = ("key", "token", "secret", "password")


class ManifestMismatch(ValueError):
    """The run directory was made by another env, policy or config."""


class RunManifest(BaseModel):
    format_version: int = 1
    env_id: str
    env_version: int
    skill_hash: str | None = None
    policy: str
    policy_config: dict[str, Any] = Field(default_factory=dict, description="The parsed policy spec, secrets removed.")
    sampling_params: dict[str, Any] = Field(default_factory=dict)
    seed: int
    identity: dict[str, Any] = Field(description="RolloutConfig.identity(): compared when resuming.")
    config: dict[str, Any] = Field(description="The whole config of the latest invocation.")
    task_ids: list[str] = Field(default_factory=list, description="The tasks of the run, in order.")
    packages: dict[str, str | None] = Field(default_factory=dict)
    git_revision: str | None = None
    created_at: str
    updated_at: str
    history: list[dict[str, Any]] = Field(
        default_factory=list, description="Identities this directory was resumed from with --force."
    )


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_revision() -> str | None:
    """The commit of the skillgym checkout (``+dirty`` with uncommitted changes), if it is one."""
    import skillgym

    folder = Path(skillgym.__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def describe_policy(spec: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(parsed spec, sampling params) without building the policy (an ``hf:`` spec would load
    a model just to fill in the manifest)."""
    try:
        from skillgym.policies.spec import parse_policy_spec  # type: ignore[attr-defined]
    except ImportError:
        return {"spec": spec}, {}
    try:
        parsed = parse_policy_spec(spec)
    except ValueError:
        return {"spec": spec}, {}
    data = parsed.model_dump(mode="json") if hasattr(parsed, "model_dump") else {"spec": spec}
    data = {k: v for k, v in data.items() if not any(w in k.lower() for w in _SECRET_WORDS)}
    sampling = data.get("sampling") or data.get("sampling_params") or {}
    return data, sampling if isinstance(sampling, dict) else {}


def build_manifest(config: RolloutConfig, env_spec: Any, task_ids: list[str]) -> RunManifest:
    policy_config, sampling = describe_policy(config.policy)
    now = _now()
    return RunManifest(
        env_id=env_spec.id,
        env_version=env_spec.version,
        skill_hash=env_spec.skill.content_hash if env_spec.skill is not None else None,
        policy=config.policy,
        policy_config=policy_config,
        sampling_params=sampling,
        seed=config.seed,
        identity=config.identity(),
        config=config.model_dump(mode="json"),
        task_ids=task_ids,
        packages=package_versions(),
        git_revision=git_revision(),
        created_at=now,
        updated_at=now,
    )


class ManifestUnreadable(ManifestMismatch):
    """``manifest.json`` is not a run manifest (garbage, truncated, another tool's file)."""


def read_manifest(root: Path) -> RunManifest | None:
    path = Path(root) / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        return RunManifest.model_validate_json(path.read_bytes())
    except (ValidationError, OSError) as exc:
        if isinstance(exc, ValidationError):
            first = exc.errors()[0]
            where = ".".join(map(str, first["loc"]))
            why = f"{where}: {first['msg']}" if where else first["msg"]
        else:
            why = str(exc)
        raise ManifestUnreadable(
            f"{path} is not a skillgym run manifest ({why}); pick another --out, or run `skillgym rollout` "
            "there with --force to keep its records and write a new manifest (the bad file is kept beside it)"
        ) from None


def differences(old: RunManifest, new: RunManifest) -> list[str]:
    """What makes ``new`` produce other records than ``old`` did, one line a field."""
    diffs = []
    for field in ("env_id", "env_version", "skill_hash"):
        if getattr(old, field) != getattr(new, field):
            diffs.append(f"{field}: {getattr(old, field)!r} in the directory, {getattr(new, field)!r} now")
    for field in sorted(set(old.identity) | set(new.identity)):
        before, after = old.identity.get(field), new.identity.get(field)
        if before != after:
            diffs.append(f"{field}: {before!r} in the directory, {after!r} now")
    return diffs


def reconcile(root: Path, new: RunManifest, force: bool = False) -> RunManifest:
    """Write the manifest for this invocation, refusing a directory made by another config.

    Raises :class:`ManifestMismatch` naming every difference unless ``force``; with ``force``
    the old identity is kept in ``history`` so the mix stays visible.
    """
    try:
        old = read_manifest(root)
    except ManifestUnreadable:
        if not force:
            raise
        # The records are still good; only what produced them is unknown. Keep the bad file
        # for inspection and say so in the new manifest's history.
        kept = Path(root) / f"{MANIFEST_NAME}.unreadable-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}"
        (Path(root) / MANIFEST_NAME).replace(kept)
        new = new.model_copy(update={"history": [{"unreadable_manifest": kept.name, "until": _now()}]})
        old = None
    if old is not None:
        diffs = differences(old, new)
        if diffs and not force:
            raise ManifestMismatch(
                f"{root} holds a run with another env, policy or config:\n  - "
                + "\n  - ".join(diffs)
                + "\nUse another --out, or pass --force to add these records to that run anyway."
            )
        history = list(old.history)
        if diffs:
            history.append(
                {"identity": old.identity, "env_id": old.env_id, "skill_hash": old.skill_hash, "until": _now()}
            )
        new = new.model_copy(update={"created_at": old.created_at, "history": history})
    write_manifest(root, new)
    return new


def write_manifest(root: Path, manifest: RunManifest) -> None:
    Path(root).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(root) / MANIFEST_NAME, manifest.model_dump_json(indent=2) + "\n")
