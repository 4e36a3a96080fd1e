"""``skillgym serve-env``: serve a skillgym env to other stacks (OpenEnv, MCP)."""

from __future__ import annotations

import asyncio
from enum import StrEnum

import typer

from skillgym.cli_options import parse_env_args


class Protocol(StrEnum):
    openenv = "openenv"
    mcp = "mcp"


class Transport(StrEnum):
    stdio = "stdio"
    http = "http"


def serve_env(
    env: str = typer.Argument(..., help="Env id: name-vN, skill:NAME or module:function."),
    protocol: Protocol = typer.Option(Protocol.openenv, "--protocol", help="openenv (WebSocket sessions) or mcp."),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port", help="TCP port (openenv; mcp with --transport http)."),
    transport: Transport = typer.Option(Transport.stdio, "--transport", help="mcp only: stdio or http (/mcp)."),
    task_id: str | None = typer.Option(None, "--task-id", help="mcp only: the task whose workspace the sandbox holds."),
    max_sessions: int = typer.Option(
        16, "--max-sessions", min=1, help="openenv only: concurrent sessions (sandboxes)."
    ),
    env_arg: list[str] = typer.Option([], "--env-arg", help="Env option key=value (repeatable), e.g. split=test."),
) -> None:
    """Serve ENV as an OpenEnv environment server (one session and sandbox per client) or its tools as an MCP server."""
    kwargs = parse_env_args(env_arg)
    try:
        if protocol is Protocol.openenv:
            from skillgym.adapters.openenv import OpenEnvServer, serve

            server = OpenEnvServer(env, kwargs, max_sessions=max_sessions)
            typer.echo(f"OpenEnv server for {env}: ws://{host}:{port}/ws", err=True)
            serve(server, host=host, port=port)
            return
        from skillgym.adapters.mcp_server import EnvTools, serve_http, serve_stdio

        tools = EnvTools(env, kwargs, task_id=task_id)
        if transport is Transport.stdio:
            asyncio.run(serve_stdio(tools))  # stdout is the protocol channel: nothing else is printed there
        else:
            typer.echo(f"MCP server for {env}: http://{host}:{port}/mcp", err=True)
            serve_http(tools, host=host, port=port)
    except ImportError as exc:
        typer.echo(
            f"Error: serve-env --protocol {protocol.value} needs {exc.name}: pip install 'skillgym[adapters]'", err=True
        )
        raise typer.Exit(1) from None
    except (KeyError, ValueError) as exc:
        typer.echo(f"Error: {env}: {exc}", err=True)
        raise typer.Exit(1) from None
