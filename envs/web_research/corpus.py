"""Pages: the documents ``web_search`` finds and ``web_fetch`` reads.

Two sources give pages the same shape (title, stable URL, text): the HotpotQA paragraph pool
(every context paragraph of every question, one page per title, ``https://wiki.local/<Title>``)
and a user's folder of Markdown, text or HTML files (``https://docs.local/<relative path>``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

from pydantic import BaseModel

from .data import Question

WIKI = "https://wiki.local/"
DOCS = "https://docs.local/"
DOC_SUFFIXES = (".md", ".markdown", ".txt", ".text", ".rst", ".html", ".htm")
# Characters that would change what a URL means (query, fragment, escapes) or split it in text.
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://", re.I)
_URL_ESCAPES = {"%": "%25", "?": "%3F", "#": "%23", '"': "%22", "<": "%3C", ">": "%3E"}


class Page(BaseModel):
    """One document: its title, its URL and its plain text."""

    title: str
    url: str
    text: str


def url_for(title: str, base: str = WIKI) -> str:
    """The stable URL of a page titled ``title``: Wikipedia style, spaces as underscores; only
    characters that would change a URL's meaning are escaped (readable, copyable by a model)."""
    path = "".join(_URL_ESCAPES.get(c, c) for c in "_".join(title.split()))
    return base + path


def url_key(url: str) -> str:
    """What two spellings of one URL share: no scheme or ``www.``, escapes decoded, spaces and
    underscores alike, no trailing slash or punctuation (a URL at the end of a sentence)."""
    text = url.strip()
    if len(text) > 1 and text[0] in "<\"'`" and text[-1] in ">\"'`":
        text = text[1:-1].strip()
    text = _SCHEME.sub("", text)
    text = text.removeprefix("www.")
    text = unquote(text).replace(" ", "_").rstrip("/.,;:!")
    return text


def pages_from_questions(questions: Iterable[Question]) -> list[Page]:
    """One page per distinct title in the questions' contexts.

    A title seen with two different paragraphs (61 of 66,581 in the dev set) keeps the longer
    one, so a supporting sentence quoted by either question is there.
    """
    texts: dict[str, str] = {}
    for q in questions:
        for title, sentences in q.context:
            text = "".join(sentences).strip()
            if len(text) > len(texts.get(title, "")):
                texts[title] = text
    return [Page(title=t, url=url_for(t), text=texts[t]) for t in sorted(texts)]


class _TextOfHtml(HTMLParser):
    """Visible text of an HTML document and its <title> (script and style dropped)."""

    _SKIP = {"script", "style", "noscript", "template"}
    _BLOCK = {"p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "section", "article", "pre"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skip += 1
        elif tag == "title":
            self._in_title = True
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag == "title":
            self._in_title = False
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> tuple[str, str]:
    """(title, visible text) of an HTML document, blank runs collapsed."""
    parser = _TextOfHtml()
    parser.feed(html)
    parser.close()
    lines = [" ".join(line.split()) for line in "".join(parser.parts).splitlines()]
    return " ".join(parser.title.split()), "\n".join(line for line in lines if line)


def _markdown_title(text: str) -> str | None:
    for line in text.splitlines()[:40]:
        match = re.match(r"^#\s+(.+?)\s*#*\s*$", line)
        if match:
            return match.group(1)
    return None


def pages_from_folder(root: str | Path) -> list[Page]:
    """Every Markdown, text or HTML file under ``root`` as a page (hidden folders skipped).

    The title is the first ``# heading`` (Markdown), the ``<title>`` (HTML), else the file
    name; the URL is ``https://docs.local/<path relative to root>``.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: it holds no such file.
    """
    base = Path(root).expanduser().resolve()
    if not base.is_dir():
        raise FileNotFoundError(f"corpus={root!s}: not a folder (give a folder of .md, .txt or .html files)")
    pages = []
    for path in sorted(base.rglob("*")):
        rel = path.relative_to(base)
        if not path.is_file() or path.suffix.lower() not in DOC_SUFFIXES or any(p.startswith(".") for p in rel.parts):
            continue
        raw = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix.lower() in (".html", ".htm"):
            title, text = html_to_text(raw)
        else:
            title, text = (
                (_markdown_title(raw) or "") if path.suffix.lower() in (".md", ".markdown") else "",
                raw.strip(),
            )
        pages.append(
            Page(
                title=title or path.stem.replace("_", " ").replace("-", " "),
                url=url_for(rel.as_posix(), DOCS),
                text=text,
            )
        )
    if not pages:
        raise ValueError(f"corpus={root!s}: no {', '.join(DOC_SUFFIXES)} files in {base}")
    return pages
