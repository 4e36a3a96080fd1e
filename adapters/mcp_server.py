"""A skillgym env's tools on one sandbox, as an MCP server (the official ``mcp`` SDK).

    skillgym serve-env codebase-explorer-v0 --protocol mcp                       # stdio
    skillgym serve-env codebase-explorer-v0 --protocol mcp --transport http --port 8765   # /mcp

Any MCP client (an agent harness, an IDE) then drives the same sandbox and tools a student
was trained on. The env is reset on one task (``task_id``, else the split's first task), so
the workspace holds that task's files; ``tools/list`` gives the env's tool schemas and
``tools/call`` runs the env's own tool objects on its sandbox, with the env's argument
validation and output limit. A tool that ends an episode (``submit``) is stepped through the
env, so the env's grader scores the answer (``structuredContent``: ``reward``,
``reward_components``); the env is then reset on the same task (a fresh workspace).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import skillgym
from skillgym.env import SkillEnv
from skillgym.sandbox.base import SandboxError
from skillgym.sandbox.ops import OpError, truncate
from skillgym.toolcalls import validate_arguments


class EnvTools:
    """One env, one sandbox, its tools callable by name (calls run one at a time, off the loop).

    Args:
        env_id: Any id :func:`skillgym.make` accepts.
        env_kwargs: Options for :func:`skillgym.make`.
        task_id: The task whose workspace the sandbox holds (default: the split's first task).
    """

    def __init__(self, env_id: str, env_kwargs: dict[str, Any] | None = None, task_id: str | None = None):
        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs or {})
        self.task_id = task_id
        self.env: SkillEnv | None = None
        self.info: dict[str, Any] = {}
        self._lock = asyncio.Lock()

    async def start(self) -> EnvTools:
        self.env = await asyncio.to_thread(skillgym.make, self.env_id, **self.env_kwargs)
        await self._reset()
        return self

    async def _reset(self) -> None:
        assert self.env is not None
        options = {"task_id": self.task_id} if self.task_id is not None else {}
        _, self.info = await asyncio.to_thread(self.env.reset, options=options)
        self.task_id = self.info.get("task_id")

    async def close(self) -> None:
        env, self.env = self.env, None
        if env is not None:
            await asyncio.to_thread(env.close)

    def schemas(self) -> list[dict[str, Any]]:
        """The env's tool schemas (OpenAI format)."""
        assert self.env is not None, "start() first"
        return list(self.env.tool_schemas)

    async def call(self, name: str, arguments: dict[str, Any] | None) -> tuple[str, bool, dict[str, Any] | None]:
        """Run tool ``name``. Returns (text, is_error, structured result or None); never raises on bad input."""
        assert self.env is not None, "start() first"
        tool = self.env.tools.get(name)
        if tool is None:
            return f"unknown tool {name!r}; available tools: {', '.join(self.env.tools)}", True, None
        args, error = validate_arguments(name, arguments or {}, tool.Args)
        if error:
            return error, True, None
        async with self._lock:
            if tool.ends_episode:
                return await self._finish(name, arguments or {})
            try:
                text = await asyncio.to_thread(tool, self.env.sandbox, args)
            except OpError as exc:
                return str(exc), True, None
            except SandboxError as exc:  # the call broke the sandbox: start the task again in a fresh one
                await self._reset()
                return f"the sandbox failed ({exc}); the workspace was reset to the task's files", True, None
        text, _ = truncate(text, self.env.env_spec.max_tool_output)
        return text, False, None

    async def _finish(self, name: str, arguments: dict[str, Any]) -> tuple[str, bool, dict[str, Any]]:
        assert self.env is not None
        call = {"id": "mcp_1", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
        message = {"role": "assistant", "content": "", "tool_calls": [call]}
        _, reward, _, _, info = await asyncio.to_thread(self.env.step, message)
        result = {
            "reward": float(reward),
            "reward_components": info.get("reward_components", {}),
            "task_id": self.task_id,
        }
        await self._reset()
        return f"graded: reward {float(reward):g}; the workspace was reset for a new attempt", False, result


def build_server(tools: EnvTools) -> Any:
    """The low-level MCP ``Server`` answering ``tools/list`` and ``tools/call`` from ``tools``."""
    from mcp import types
    from mcp.server.lowlevel import Server

    async def list_tools(ctx: Any, params: Any) -> Any:
        return types.ListToolsResult(
            tools=[
                types.Tool(
                    name=s["function"]["name"],
                    description=s["function"].get("description"),
                    input_schema=s["function"].get("parameters") or {"type": "object"},
                )
                for s in tools.schemas()
            ]
        )

    async def call_tool(ctx: Any, params: Any) -> Any:
        text, is_error, structured = await tools.call(params.name, params.arguments)
        return types.CallToolResult(
            content=[types.TextContent(text=text)], structured_content=structured, is_error=is_error
        )

    description = f"skillgym env {tools.env_id}: its tools on one sandbox (task {tools.task_id})"
    return Server(f"skillgym-{tools.env_id}", description=description, on_list_tools=list_tools, on_call_tool=call_tool)


async def serve_stdio(tools: EnvTools) -> None:
    """Serve over stdin/stdout until the client closes them; the sandbox is closed afterwards."""
    from mcp.server.stdio import stdio_server

    await tools.start()
    try:
        server = build_server(tools)
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())
    finally:
        await tools.close()


def serve_http(tools: EnvTools, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve streamable HTTP at ``http://HOST:PORT/mcp`` until interrupted."""
    import uvicorn

    async def main() -> None:
        await tools.start()
        try:
            app = build_server(tools).streamable_http_app(host=host)
            await uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning")).serve()
        finally:
            await tools.close()

    asyncio.run(main())
