"""An env spec taking tools from an MCP server: a small MCP server this test writes (streamable
HTTP on loopback, official SDK) lends its tools to codebase-explorer-v0; the model calls them
through SkillEnv.step like any tool, errors come back precisely, and the env's own tools and
grader still work."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time

import pytest

pytest.importorskip("mcp")

import httpx  # noqa: E402

import skillgym  # noqa: E402

SERVER = textwrap.dedent("""
    import sys
    import uvicorn
    from mcp import types
    from mcp.server.lowlevel import Server

    async def list_tools(ctx, params):
        return types.ListToolsResult(tools=[types.Tool(
            name="word_count", description="Count the words of a text.",
            input_schema={"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]})])

    async def call_tool(ctx, params):
        text = (params.arguments or {}).get("text")
        if not isinstance(text, str):
            return types.CallToolResult(content=[types.TextContent(text="word_count needs 'text', a string")],
                                        is_error=True)
        return types.CallToolResult(content=[types.TextContent(text=str(len(text.split())))])

    app = Server("words", on_list_tools=list_tools, on_call_tool=call_tool).streamable_http_app()
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
""")


@pytest.fixture
def words_server(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "words_server.py"
    script.write_text(SERVER)
    proc = subprocess.Popen([sys.executable, str(script), str(port)], stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/mcp"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(url, timeout=2)
            break
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"the test's MCP server did not start: {proc.stderr.read()[-2000:]}") from None
            time.sleep(0.1)
    yield url, proc
    proc.terminate()
    proc.wait(timeout=30)


def _call(name: str, arguments: dict) -> dict:
    return {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
        ],
    }


def test_env_spec_takes_tools_from_an_mcp_server(words_server):
    url, proc = words_server
    env = skillgym.make("skillgym.adapters.mcp_tools:env", base="codebase-explorer-v0", mcp_urls=url, split="test")
    try:
        names = [s["function"]["name"] for s in env.tool_schemas]
        assert "word_count" in names and names[-1] == "submit"  # host tools go before submit
        schema = next(s for s in env.tool_schemas if s["function"]["name"] == "word_count")["function"]
        assert schema["description"] == "Count the words of a text." and schema["parameters"]["required"] == ["text"]

        task = env.env_spec.tasks.tasks("test")[0]
        _, info = env.reset(options={"task_id": task.id})
        assert "word_count" in [t["function"]["name"] for t in info["tools"]]
        obs, reward, terminated, truncated, step_info = env.step(_call("word_count", {"text": "one two three"}))
        assert obs[-1]["role"] == "tool" and obs[-1]["content"] == "3" and not step_info["tool_errors"]
        # The server's own error reaches the model as a tool error, precisely.
        obs, *_, step_info = env.step(_call("word_count", {"text": 5}))
        assert "needs 'text', a string" in obs[-1]["content"] and step_info["tool_errors"]
        # The env's own sandbox tools and grader are unchanged.
        obs, *_ = env.step(_call("list_dir", {"path": "."}))
        assert obs[-1]["role"] == "tool" and not obs[-1]["content"].startswith("Error")
        # A server that went away is a tool error, not a crash.
        proc.terminate()
        proc.wait(timeout=30)
        obs, reward, terminated, truncated, step_info = env.step(_call("word_count", {"text": "a"}))
        assert "MCP server" in obs[-1]["content"] and step_info["tool_errors"] and not terminated
    finally:
        env.close()


def test_an_unreachable_mcp_server_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ValueError, match=f"cannot list the tools of MCP server http://127.0.0.1:{port}/mcp"):
        skillgym.make_spec(
            "skillgym.adapters.mcp_tools:env", base="codebase-explorer-v0", mcp_urls=f"http://127.0.0.1:{port}/mcp"
        )
