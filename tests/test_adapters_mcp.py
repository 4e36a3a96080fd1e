"""MCP server: `skillgym serve-env ENV --protocol mcp` exposes the env's tools on one sandbox;
the official SDK's client (stdio and streamable HTTP) runs the expert's episodes through it and
gets the rewards the in-process env gives; malformed requests get precise errors."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

mcp = pytest.importorskip("mcp")

import httpx  # noqa: E402
from mcp import ClientSession, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

import skillgym  # noqa: E402
from skillgym.episode import run_episode  # noqa: E402
from skillgym.toolcalls import parse_turn  # noqa: E402

ENV_ID = "codebase-explorer-v0"


def _cli() -> list[str]:
    exe = shutil.which("skillgym")
    return [exe] if exe else [sys.executable, "-c", "from skillgym.pipeline.cli import app; app()"]


def _expected(task_ids: list[str]) -> tuple[dict[str, float], Any]:
    env = skillgym.make(ENV_ID, split="test")
    try:
        expert = env.env_spec.expert
        return {tid: run_episode(env, expert(), task_id=tid).reward for tid in task_ids}, expert
    finally:
        env.close()


async def _expert_episode(session: ClientSession, expert_cls: Any, task_id: str) -> float:
    """The expert plays through MCP tool calls; the chat it reads is rebuilt from the results."""
    listed = await session.list_tools()
    names = {t.name for t in listed.tools}
    assert {"grep", "read_file", "bash", "submit"} <= names
    spec = skillgym.make_spec(ENV_ID)
    task = spec.tasks.get(task_id)
    chat: list[dict[str, Any]] = [{"role": "system", "content": "x"}, {"role": "user", "content": task.prompt}]
    info = {
        "task_id": task_id,
        "task_metadata": dict(task.metadata),
        "tools": [{"type": "function", "function": {"name": t.name}} for t in listed.tools],
    }
    expert = expert_cls()
    expert.reset(chat, info)
    for turn in range(1, 21):
        action = expert.act(chat, info)
        parsed = parse_turn(action, call_id_prefix=f"call_{turn}")
        assert len(parsed.calls) == 1, action
        (call,) = parsed.calls
        result = await session.call_tool(call.name, call.arguments)
        assert not result.is_error, result
        if call.name == "submit":
            return result.structured_content["reward"]
        chat.append(
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
                    }
                ],
            }
        )
        chat.append({"role": "tool", "tool_call_id": call.id, "name": call.name, "content": result.content[0].text})
    raise AssertionError("the expert did not submit in 20 turns")


def test_mcp_stdio_expert_episodes_match_in_process_rewards():
    task_ids = [t.id for t in skillgym.make_spec(ENV_ID).tasks.tasks("test")[:2]]
    expected, expert_cls = _expected(task_ids)
    assert set(expected.values()) == {1.0}

    async def run(task_id: str) -> tuple[float, list[str]]:
        cli = _cli()
        params = StdioServerParameters(
            command=cli[0],
            args=[*cli[1:], "serve-env", ENV_ID, "--protocol", "mcp", "--env-arg", "split=test", "--task-id", task_id],
            env=dict(os.environ),
        )
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            reward = await _expert_episode(session, expert_cls, task_id)
            # Precise errors for bad calls, as tool results (the session goes on).
            unknown = await session.call_tool("fly", {})
            bad = await session.call_tool("grep", {"pattern": 5})
            wrong = await session.call_tool("submit", {"answer": "wrong"})
            texts = [unknown.content[0].text, bad.content[0].text]
            assert unknown.is_error and bad.is_error and not wrong.is_error
            assert wrong.structured_content["reward"] == 0.0
            return reward, texts

    got = {}
    for tid in task_ids:
        got[tid], (unknown_text, bad_text) = asyncio.run(run(tid))
        assert "unknown tool 'fly'" in unknown_text and "grep" in unknown_text
        assert "pattern" in bad_text
    assert got == expected


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def http_server():
    port = _free_port()
    task_id = skillgym.make_spec(ENV_ID).tasks.tasks("test")[2].id
    proc = subprocess.Popen(
        [
            *_cli(),
            "serve-env",
            ENV_ID,
            "--protocol",
            "mcp",
            "--transport",
            "http",
            "--port",
            str(port),
            "--env-arg",
            "split=test",
            "--task-id",
            task_id,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    deadline = time.monotonic() + 120
    while True:
        try:
            httpx.get(url, timeout=2)
            break
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"the MCP server did not start: {proc.stderr.read()[-2000:]}") from None
            time.sleep(0.2)
    try:
        yield url, task_id, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)  # SIGTERM: uvicorn stops, the sandbox is closed
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_mcp_streamable_http_expert_episode_and_100_malformed_requests(http_server):
    url, task_id, proc = http_server
    expected, expert_cls = _expected([task_id])

    async def run() -> float:
        async with streamable_http_client(url) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            return await _expert_episode(session, expert_cls, task_id)

    assert asyncio.run(run()) == expected[task_id] == 1.0

    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
    }
    bad_bodies: list[tuple[str | bytes, dict[str, str]]] = [
        ("{not json", headers),
        ("[]", headers),
        (
            '{"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "grep"}}',
            {**headers, "mcp-session-id": "no-such-session"},
        ),
        (json.dumps(init), {"Content-Type": "text/plain", "Accept": "application/json, text/event-stream"}),
        (json.dumps(init), {"Content-Type": "application/json", "Accept": "text/html"}),
        (b"\xff" * 10, headers),
        ("x" * 5_000_000, headers),
    ]
    with httpx.Client(timeout=60) as client:
        for i in range(100):
            body, hdrs = bad_bodies[i % len(bad_bodies)]
            response = client.post(url, content=body, headers=hdrs)
            assert 400 <= response.status_code < 500, (i, response.status_code, response.text[:200])
            assert response.text.strip(), "an error without a message"
    assert proc.poll() is None  # still serving
    assert asyncio.run(run()) == 1.0  # and still right


def test_mcp_stdio_survives_100_malformed_lines_and_answers_those_with_ids():

    proc = subprocess.Popen(
        [*_cli(), "serve-env", ENV_ID, "--protocol", "mcp", "--env-arg", "split=test"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    bad = [
        ("{not json", None),  # no id to answer under: the SDK drops it (and logs), the server goes on
        ("[]", None),
        ("x" * 2_000_000, None),
        ('{"jsonrpc":"2.0","id":ID,"method":"no/such/method"}', -32601),
        ('{"jsonrpc":"2.0","id":ID,"method":"tools/call","params":{"name":7}}', -32602),
        ('{"jsonrpc":"2.0","id":7,"method":"tools/call","params":"grep"}', None),  # not a valid request: dropped
    ]
    expect: dict[int, int] = {}
    try:
        for i in range(100):
            line, code = bad[i % len(bad)]
            if code is not None:
                line = line.replace("ID", str(1000 + i))
                expect[1000 + i] = code
            proc.stdin.write(line + "\n")
        init = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "0"},
            },
        }
        proc.stdin.write(json.dumps(init) + "\n")
        proc.stdin.flush()
        # A reader thread, not select(): select() sees only the pipe, not the lines already
        # pulled into the text buffer by the previous readline, so it can wait on answers that came.
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in iter(proc.stdout.readline, "")], daemon=True).start()
        answers: dict[int, Any] = {}
        deadline = time.monotonic() + 180
        while 1 not in answers and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1.0)
            except queue.Empty:
                assert proc.poll() is None, f"the server exited: {proc.stderr.read()[-2000:]}"
                continue
            message = json.loads(line)
            answers[message.get("id")] = message
        assert 1 in answers and answers[1]["result"]["serverInfo"]["name"] == f"skillgym-{ENV_ID}"
        got = {i: answers[i]["error"]["code"] for i in expect if i in answers}
        assert got == expect  # every malformed request with an id got its precise JSON-RPC error
        assert proc.poll() is None
    finally:
        proc.stdin.close()  # end of input: the server stops and closes its sandbox
        try:
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
