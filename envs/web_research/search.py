"""Search backends behind one interface: ``search(query, k)`` and ``fetch(url)``.

* :class:`LocalIndex` (the default): BM25 (``bm25s``) over a page store built once into the
  cache and opened memory-mapped, so every env in every process on the machine shares one
  copy of the score matrix and the page texts through the OS page cache.
* The same index over a user's folder of documents (``corpus=PATH``).
* :class:`SearxngBackend`: a live, self-hostable engine through its JSON API (off by default).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel

from .corpus import Page, html_to_text, url_key

INDEX_VERSION = 2
SNIPPET_CHARS = 200


class SearchResult(BaseModel):
    """One ranked hit."""

    title: str
    url: str
    snippet: str


class UnknownURL(LookupError):
    """``fetch`` was given a URL the backend has no page for."""


@runtime_checkable
class SearchBackend(Protocol):
    """What the ``web_search`` and ``web_fetch`` tools call."""

    name: str

    def search(self, query: str, k: int) -> list[SearchResult]:
        """The ``k`` best results for ``query``, best first."""
        ...

    def fetch(self, url: str) -> Page:
        """The page at ``url``; raises :class:`UnknownURL` when there is none."""
        ...


def snippet_of(text: str, limit: int = SNIPPET_CHARS) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    return text[: cut if cut > limit // 2 else limit] + " ..."


def _tokenizer() -> Any:
    try:
        from skillgym.skills.search import Tokenizer
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(f"web-research needs the 'skills' extra (pip install 'skillgym[skills]'): {exc}") from None
    return Tokenizer()


def _bm25s() -> Any:
    try:
        import bm25s
    except ImportError:  # pragma: no cover - depends on the install
        raise ImportError("web-research's local search needs bm25s: pip install 'skillgym[skills]'") from None
    return bm25s


# ---------------------------------------------------------------------------------------------
# building the store


def build_index(
    pages: Sequence[Page], folder: Path, *, extra: dict[str, Any] | None = None, progress: bool = False
) -> Path:
    """Write ``pages`` and their BM25 index to ``folder`` (atomically: built aside, then renamed).

    Several processes may race to build the same folder: a file lock makes one build while
    the others wait, then find it done.

    Args:
        pages: The documents.
        folder: The index folder to create.
        extra: JSON files to store beside the index (name -> content), e.g. the task list.
        progress: Show bm25s's progress bars (stderr).

    Returns:
        ``folder``.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _locked(folder.with_name(folder.name + ".lock")):
        if (folder / "manifest.json").is_file():
            return folder
        tmp = folder.with_name(f".{folder.name}.{os.getpid()}.building")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        texts = [p.text.encode("utf-8") for p in pages]
        offsets = np.zeros(len(texts) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(t) for t in texts])
        with (tmp / "pages.bin").open("wb") as fh:
            for t in texts:
                fh.write(t)
        np.save(tmp / "offsets.npy", offsets)
        # URL keys are computed here, once, not by every process that opens the index.
        meta = {
            "titles": [p.title for p in pages],
            "urls": [p.url for p in pages],
            "keys": [url_key(p.url) for p in pages],
        }
        (tmp / "pages.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
        tokenizer = _tokenizer()
        # The title counts twice: a query naming an entity should find the entity's own page first.
        tokens = [tokenizer(f"{p.title} {p.title} {p.text}") or ["__empty__"] for p in pages]
        index = _bm25s().BM25()
        index.index(tokens, show_progress=progress)
        index.save(str(tmp / "bm25"), show_progress=False)
        for name, content in (extra or {}).items():
            (tmp / name).write_text(json.dumps(content, ensure_ascii=False), encoding="utf-8")
        manifest = {
            "version": INDEX_VERSION,
            "pages": len(pages),
            "stemming": tokenizer.stemming,
            "bytes": int(offsets[-1]),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    return folder


@contextlib.contextmanager
def _locked(path: Path):
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def folder_fingerprint(root: Path) -> str:
    """A hash of a document folder's file list, sizes and modification times (cheap; a changed
    file gets a new index)."""
    digest = hashlib.sha256(str(root.resolve()).encode())
    for path in sorted(root.rglob("*")):
        if path.is_file():
            st = path.stat()
            digest.update(f"{path.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# the local backend


class LocalIndex:
    """BM25 search and page reads over a built index folder, opened lazily and memory-mapped.

    Instances pickle without their open index (a Ray actor reopens it from the folder), and
    every instance in a process shares one open copy per folder.

    Args:
        folder: A folder written by :func:`build_index`.
    """

    name = "local"
    _open: dict[str, _OpenIndex] = {}
    _open_lock = threading.Lock()

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def __getstate__(self) -> dict[str, Any]:
        return {"folder": str(self.folder)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.folder = Path(state["folder"])

    def _index(self) -> _OpenIndex:
        key = str(self.folder.resolve())
        opened = LocalIndex._open.get(key)
        if opened is None:
            with LocalIndex._open_lock:
                opened = LocalIndex._open.get(key)
                if opened is None:
                    opened = LocalIndex._open[key] = _OpenIndex(self.folder)
        return opened

    def __len__(self) -> int:
        return len(self._index().titles)

    def search(self, query: str, k: int) -> list[SearchResult]:
        return self._index().search(query, k)

    def fetch(self, url: str) -> Page:
        return self._index().fetch(url)

    def page(self, i: int) -> Page:
        return self._index().page(i)


class _OpenIndex:
    def __init__(self, folder: Path) -> None:
        if not (folder / "manifest.json").is_file():
            raise FileNotFoundError(f"{folder} holds no built web-research index (manifest.json missing)")
        self.manifest = json.loads((folder / "manifest.json").read_text())
        meta = json.loads((folder / "pages.json").read_text(encoding="utf-8"))
        self.titles: list[str] = meta["titles"]
        self.urls: list[str] = meta["urls"]
        if self.manifest.get("version") != INDEX_VERSION:
            raise RuntimeError(
                f"{folder} holds a version {self.manifest.get('version')} index; this skillgym reads "
                f"version {INDEX_VERSION}: delete {folder} to rebuild it"
            )
        self.by_url = dict(zip(meta["keys"], range(len(self.urls))))
        self.offsets = np.load(folder / "offsets.npy", mmap_mode="r")
        size = int(self.offsets[-1])
        self.blob = np.memmap(folder / "pages.bin", dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)
        self.bm25 = _bm25s().BM25.load(str(folder / "bm25"), mmap=True, show_progress=False)
        self.tokenizer = _tokenizer()
        if bool(self.manifest.get("stemming")) != self.tokenizer.stemming:
            raise RuntimeError(
                f"{folder} was built {'with' if self.manifest.get('stemming') else 'without'} stemming, but PyStemmer "
                "is now " + ("installed" if self.tokenizer.stemming else "missing") + f"; delete {folder} to rebuild it"
            )

    def text(self, i: int) -> str:
        return bytes(self.blob[int(self.offsets[i]) : int(self.offsets[i + 1])]).decode("utf-8")

    def page(self, i: int) -> Page:
        return Page(title=self.titles[i], url=self.urls[i], text=self.text(i))

    def search(self, query: str, k: int) -> list[SearchResult]:
        vocab = self.bm25.vocab_dict
        ids = [vocab[s] for s in dict.fromkeys(self.tokenizer(query)) if s in vocab]
        if not ids:
            return []
        scores = np.asarray(self.bm25.get_scores(ids), dtype=np.float32)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        # Ties break by page order, so the same query always gives the same ranking.
        top = sorted((int(i) for i in top if scores[i] > 0), key=lambda i: (-float(scores[i]), i))
        return [SearchResult(title=self.titles[i], url=self.urls[i], snippet=snippet_of(self.text(i))) for i in top]

    def fetch(self, url: str) -> Page:
        i = self.by_url.get(url_key(url))
        if i is None:
            raise UnknownURL(url)
        return self.page(i)


# ---------------------------------------------------------------------------------------------
# a live provider


class SearxngBackend:
    """A SearxNG instance (or anything that answers its JSON API) as the search backend.

    ``search`` asks ``GET {base_url}/search?q=...&format=json`` (the instance must allow the
    ``json`` format); ``fetch`` downloads the page over HTTP(S) and returns its visible text.
    Runs on the host: the sandbox keeps no network.

    Args:
        base_url: The instance, e.g. ``http://127.0.0.1:8888``.
        timeout: Seconds per HTTP request.
        max_bytes: Largest page body read.
    """

    name = "searxng"

    def __init__(self, base_url: str, timeout: float = 15.0, max_bytes: int = 2_000_000) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"searxng_url={base_url!r} must start with http:// or https://")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_bytes = max_bytes

    def search(self, query: str, k: int) -> list[SearchResult]:
        import httpx

        try:
            res = httpx.get(f"{self.base_url}/search", params={"q": query, "format": "json"}, timeout=self.timeout)
            res.raise_for_status()
            rows = res.json().get("results") or []
        except (httpx.HTTPError, ValueError) as exc:
            raise ConnectionError(f"search provider {self.base_url} failed: {type(exc).__name__}: {exc}") from None
        out = []
        for row in rows:
            if isinstance(row, dict) and isinstance(row.get("url"), str):
                out.append(
                    SearchResult(
                        title=str(row.get("title") or row["url"]),
                        url=row["url"],
                        snippet=snippet_of(str(row.get("content") or "")),
                    )
                )
            if len(out) >= k:
                break
        return out

    def fetch(self, url: str) -> Page:
        import httpx

        if not url.startswith(("http://", "https://")):
            raise UnknownURL(url)
        try:
            with httpx.stream("GET", url, timeout=self.timeout, follow_redirects=True) as res:
                if res.status_code == 404:
                    raise UnknownURL(url)
                res.raise_for_status()
                body = b""
                for chunk in res.iter_bytes():
                    body += chunk
                    if len(body) >= self.max_bytes:
                        break
                kind = res.headers.get("content-type", "")
                encoding = res.encoding or "utf-8"
        except httpx.HTTPError as exc:
            raise ConnectionError(f"fetching {url} failed: {type(exc).__name__}: {exc}") from None
        raw = body[: self.max_bytes].decode(encoding, errors="replace")
        if "html" in kind or raw.lstrip()[:1] == "<":
            title, text = html_to_text(raw)
        else:
            title, text = "", raw
        return Page(title=title or url, url=url, text=text)
