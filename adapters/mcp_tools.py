"""Tools from MCP servers in a skillgym env (the official ``mcp`` SDK's client).

    env = skillgym.make("skillgym.adapters.mcp_tools:env", base="codebase-explorer-v0",
                        mcp_urls=["http://127.0.0.1:8765/mcp"])

Every tool an MCP server lists (streamable HTTP at a URL) becomes one of the env's host tools
(:attr:`EnvSpec.host_tools`): offered to the model with the server's own name, description
and input schema, called through the SDK, its text content returned to the model and an
``isError`` result reported as a tool error. The env's own tools, tasks and grader are
unchanged, so a skill or subagent whose tools live in an MCP server becomes an environment.
Reading the tool list connects once when the spec is built; each call opens its own session.
(MCP servers started inside the sandbox over stdio are not supported yet.)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any, ClassVar

from pydantic import ConfigDict

import skillgym
from skillgym.sandbox.base import Sandbox
from skillgym.sandbox.ops import OpError
from skillgym.spec import EnvSpec
from skillgym.tools.base import Tool, ToolArgs


class McpArgs(ToolArgs):
    """Any arguments: the MCP server validates them against its own schema and says what is wrong."""

    model_config = ConfigDict(extra="allow")


class McpTool(Tool):
    """One tool of an MCP server, called on the host (the sandbox is not involved)."""

    Args: ClassVar[type[ToolArgs]] = McpArgs

    def __init__(self, url: str, name: str, description: str, input_schema: dict[str, Any], timeout_s: float = 120):
        # Instance attributes shadow the class-level declarations of Tool: one object per remote tool.
        self.name = name  # type: ignore[misc]
        self.description = description  # type: ignore[misc]
        self.url = url
        self.input_schema = input_schema
        self.timeout_s = timeout_s

    def schema(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.input_schema},
        }

    def __call__(self, sandbox: Sandbox, args: Any) -> str:
        arguments = args.model_dump() if hasattr(args, "model_dump") else dict(args or {})
        try:
            result = _run(_call(self.url, self.name, arguments), self.timeout_s)
        except Exception as exc:  # the server is down or broke the protocol: the model hears it, the env goes on
            raise OpError(f"MCP server {self.url} failed on {self.name}: {type(exc).__name__}: {exc}") from None
        text = "\n".join(
            getattr(part, "text", "") or f"[{getattr(part, 'type', 'content')}]" for part in result.content
        )
        if result.is_error:
            raise OpError(text or f"{self.name} failed")
        return text


async def _list(url: str) -> list[Any]:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with streamable_http_client(url) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        return list((await session.list_tools()).tools)


async def _call(url: str, name: str, arguments: dict[str, Any]) -> Any:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with streamable_http_client(url) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        return await session.call_tool(name, arguments)


def _run(coro: Any, timeout_s: float) -> Any:
    """Run ``coro`` to completion from sync code, also when the caller's thread runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(asyncio.wait_for(coro, timeout_s))
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, asyncio.wait_for(coro, timeout_s)).result()


def mcp_tools(url: str, timeout_s: float = 120) -> list[McpTool]:
    """The tools MCP server ``url`` (streamable HTTP) lists, as skillgym host tools."""
    try:
        listed = _run(_list(url), timeout_s)
    except Exception as exc:
        raise ValueError(f"cannot list the tools of MCP server {url}: {type(exc).__name__}: {exc}") from None
    return [
        McpTool(url, t.name, t.description or t.name, t.input_schema or {"type": "object"}, timeout_s) for t in listed
    ]


def with_mcp_tools(spec: EnvSpec, urls: list[str]) -> EnvSpec:
    """``spec`` with the tools of the MCP servers at ``urls`` added as host tools (before ``submit``)."""
    extra = [tool for url in urls for tool in mcp_tools(url)]
    return spec.model_copy(update={"host_tools": [*spec.host_tools, *extra]})


def env(base: str, mcp_urls: list[str] | str, **spec_kwargs: Any) -> EnvSpec:
    """Env factory (``skillgym.adapters.mcp_tools:env``): env ``base`` plus the tools of MCP servers.

    Args:
        base: Any env id :func:`skillgym.make_spec` accepts.
        mcp_urls: Streamable-HTTP MCP endpoints (a list, or one URL or several comma-separated).
        **spec_kwargs: Spec options for ``base``.

    Returns:
        The spec of ``base`` with the servers' tools added.
    """
    urls = [u.strip() for u in mcp_urls.split(",")] if isinstance(mcp_urls, str) else list(mcp_urls)
    return with_mcp_tools(skillgym.make_spec(base, **spec_kwargs), [u for u in urls if u])
