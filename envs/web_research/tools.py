"""``web_search`` and ``web_fetch``: host-side tools with the names and schemas live web agents use.

They run in the host process (the env lists them in ``EnvSpec.host_tools``): the index and any
live provider stay out of the sandbox, which keeps no network.
"""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from skillgym.sandbox.base import Sandbox
from skillgym.sandbox.ops import OpError
from skillgym.tools.base import Tool, ToolArgs

from .search import SearchBackend, UnknownURL

MAX_K = 20
PAGE_CHARS = 2_000


class WebSearchArgs(ToolArgs):
    query: str = Field(description="What to search for: keywords or a question.")
    k: int = Field(default=5, ge=1, le=MAX_K, description=f"How many results to return (1-{MAX_K}).")

    @field_validator("query")
    @classmethod
    def _not_empty(cls, query: str) -> str:
        if not query.strip():
            raise PydanticCustomError(
                "empty_query", "the query is empty; search for some words, e.g. a name from the question"
            )
        if len(query) > 2_000:
            raise PydanticCustomError(
                "long_query", "the query is {n} characters long; keep it under 2,000", {"n": len(query)}
            )
        return query


class WebSearch(Tool):
    name = "web_search"
    description = "Search the web. Returns ranked results, each with its title, URL and a snippet."
    Args = WebSearchArgs

    def __init__(self, backend: SearchBackend) -> None:
        self.backend = backend

    def __call__(self, sandbox: Sandbox | None, args: WebSearchArgs) -> str:
        try:
            results = self.backend.search(args.query, args.k)
        except ConnectionError as exc:
            raise OpError(str(exc)) from None
        if not results:
            return f"No results for {args.query!r}. Try other words (a name, a title)."
        return "\n".join(f"{i}. {r.title}\n   {r.url}\n   {r.snippet}" for i, r in enumerate(results, 1))


class WebFetchArgs(ToolArgs):
    url: str = Field(description="The URL of a page, as web_search returned it.")
    offset: int = Field(
        default=0, ge=0, description=f"Character offset to read from; long pages come in pages of {PAGE_CHARS}."
    )


class WebFetch(Tool):
    name = "web_fetch"
    description = (
        f"Read a web page as plain text, {PAGE_CHARS} characters at a time. The result says which page of how "
        "many you read and the offset of the next one."
    )
    Args = WebFetchArgs

    def __init__(self, backend: SearchBackend) -> None:
        self.backend = backend

    def __call__(self, sandbox: Sandbox | None, args: WebFetchArgs) -> str:
        url = args.url.strip()
        if not url:
            raise OpError("the url is empty; pass a URL from the web_search results")
        try:
            page = self.backend.fetch(url)
        except UnknownURL:
            raise OpError(f"no page at {url!r}; fetch a URL exactly as web_search printed it") from None
        except ConnectionError as exc:
            raise OpError(str(exc)) from None
        total = max(1, -(-len(page.text) // PAGE_CHARS))
        if args.offset and args.offset >= len(page.text):
            raise OpError(
                f"offset {args.offset} is past the end of {page.url} ({len(page.text)} characters, "
                f"{total} page{'s' if total > 1 else ''}); start at offset 0"
            )
        chunk = page.text[args.offset : args.offset + PAGE_CHARS]
        number = args.offset // PAGE_CHARS + 1
        end = args.offset + len(chunk)
        status = f"[page {number} of {total}" + (f"; next offset {end}]" if end < len(page.text) else "; end of page]")
        return f"{page.title}\n{page.url}\n{status}\n{chunk}"
