"""OpenEnv server: OpenEnv's own client (``openenv.GenericEnvClient``, from the package on PyPI)
runs codebase-explorer-v0 episodes with the expert's actions over real WebSockets on loopback,
with the rewards the in-process env gives; sessions (and their sandboxes) are reaped when a
client goes away; 100 malformed requests get precise errors and leak nothing.

OpenEnv (fastmcp 3, so mcp<2) cannot share an environment with verifiers 0.4 (mcp==2.0.0), so
its client runs in its own virtual environment (scripts/setup.sh makes it;
``SKILLGYM_OPENENV_PYTHON`` points elsewhere) and is driven over stdin/stdout by this test.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

import skillgym
from skillgym.adapters.openenv import OpenEnvServer, ServerThread
from skillgym.episode import run_episode
from skillgym.toolcalls import render_tool_call_text

ENV_ID = "codebase-explorer-v0"
OPENENV_PYTHON = os.environ.get("SKILLGYM_OPENENV_PYTHON", str(Path.home() / ".cache/skillgym/openenv-venv/bin/python"))

# Runs in OpenEnv's virtual environment: one JSON command a line in, one JSON result a line out.
RELAY = r"""
import json, sys
from openenv import GenericEnvClient
client = GenericEnvClient(base_url=sys.argv[1]).sync()
client.connect()
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    try:
        if cmd["op"] == "reset":
            r = client.reset(**cmd.get("kwargs", {}))
        elif cmd["op"] == "step":
            r = client.step(cmd["action"])
        elif cmd["op"] == "state":
            print(json.dumps({"state": client.state()}), flush=True)
            continue
        else:
            client.close()
            print(json.dumps({"closed": True}), flush=True)
            break
        print(json.dumps({"observation": r.observation, "reward": r.reward, "done": r.done,
                          "metadata": r.metadata}), flush=True)
    except Exception as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
"""


def _openenv_python() -> str:
    if not Path(OPENENV_PYTHON).exists():
        pytest.skip(f"no OpenEnv virtual environment at {OPENENV_PYTHON} (scripts/setup.sh makes it)")
    return OPENENV_PYTHON


class Relay:
    """OpenEnv's GenericEnvClient in its own interpreter, connected to ``base_url``."""

    def __init__(self, python: str, base_url: str, tmp: Path):
        script = tmp / "openenv_relay.py"
        script.write_text(RELAY)
        self.proc = subprocess.Popen(
            [python, str(script), base_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        ready = self._read()
        assert ready == {"ready": True}, ready

    def _read(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the OpenEnv client died: {self.proc.stderr.read()[-3000:]}")
        return json.loads(line)

    def call(self, **cmd: Any) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            with_close = self.call(op="close")
            assert with_close == {"closed": True}
        self.proc.wait(timeout=30)


def _wait_for(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture
def server():
    with ServerThread(OpenEnvServer(ENV_ID, {"split": "test"}, max_sessions=4)) as running:
        yield running
    assert not running.server.sessions  # shutdown closed whatever was left
    assert running.server.sessions_opened == running.server.sessions_closed


def test_openenv_client_runs_expert_episodes_with_in_process_rewards(server, tmp_path):
    python = _openenv_python()
    task_ids = [t.id for t in skillgym.make_spec(ENV_ID).tasks.tasks("test")[:3]]
    env = skillgym.make(ENV_ID, split="test")
    expert_cls = env.env_spec.expert
    try:
        expected = {tid: run_episode(env, expert_cls(), task_id=tid).reward for tid in task_ids}
        env.reset(options={"task_id": task_ids[0]})
        expected_wrong = env.step(render_tool_call_text("submit", {"answer": "wrong"}))[1]
    finally:
        env.close()
    assert set(expected.values()) == {1.0} and expected_wrong == 0.0

    relay = Relay(python, server.base_url, tmp_path)
    try:
        got = {}
        for tid in task_ids:
            result = relay.call(op="reset", kwargs={"task_id": tid})
            assert "error" not in result, result
            chat = result["observation"]["messages"]
            assert [m["role"] for m in chat] == ["system", "user"] and result["observation"]["tools"]
            info = {"tools": result["observation"]["tools"], **result["metadata"]}
            expert = expert_cls()
            expert.reset(chat, info)
            for _ in range(20):
                action = expert.act(chat, info)
                result = relay.call(op="step", action={"message": action})
                assert "error" not in result, result
                chat += result["observation"]["messages"]
                if result["done"]:
                    break
            assert result["done"] and result["metadata"]["terminated"]
            got[tid] = result["reward"]
        assert got == expected
        # A wrong answer scores 0 through the server too (the reward is the env's grader, not a constant).
        relay.call(op="reset", kwargs={"task_id": task_ids[0]})
        wrong = relay.call(op="step", action={"message": render_tool_call_text("submit", {"answer": "wrong"})})
        assert wrong["done"] and wrong["reward"] == expected_wrong
        # Precise errors reach OpenEnv's client as its own exception, and the session survives them.
        after = relay.call(op="step", action={"message": "again"})
        assert "episode is over" in after["error"] and "SESSION_ERROR" in after["error"]
        state = relay.call(op="state")["state"]
        assert state["task_id"] == task_ids[0] and state["done"] is True and state["step_count"] == 1
        assert len(server.server.sessions) == 1
    finally:
        relay.close()
    assert _wait_for(lambda: not server.server.sessions), "closing the client did not close its session"


def test_a_client_that_goes_away_has_its_session_and_sandbox_reaped(server, tmp_path):
    python = _openenv_python()
    relays = [Relay(python, server.base_url, tmp_path) for _ in range(2)]
    try:
        for relay in relays:
            assert "error" not in relay.call(op="reset", kwargs={})
        sessions = list(server.server.sessions.values())
        assert len(sessions) == 2 and all(s.env is not None for s in sessions)
        assert sessions[0].env is not sessions[1].env  # one env (and sandbox) per client
        sandboxes = [s.env.sandbox for s in sessions]
        assert sandboxes[0] is not sandboxes[1]
        os.kill(relays[0].proc.pid, signal.SIGKILL)  # no close message: the socket just drops
        relays[0].proc.wait(timeout=10)
        reaped = _wait_for(lambda: len(server.server.sessions) == 1 and server.server.sessions_closed == 1)
        assert reaped, "a vanished client's session (and its sandbox) was not closed"
        assert "error" not in relays[1].call(op="state")  # the other session is untouched
    finally:
        for relay in relays:
            if relay.proc.poll() is None:
                relay.close()
    assert _wait_for(lambda: not server.server.sessions and server.server.sessions_closed == 2)


def test_100_malformed_requests_get_precise_errors_and_leak_nothing(server):
    import httpx
    from websockets.sync.client import connect

    ws_url = server.base_url.replace("http://", "ws://") + "/ws"
    cases: list[tuple[str | bytes, str, str]] = [
        ("{not json", "INVALID_JSON", "Invalid JSON"),
        ("", "INVALID_JSON", "Invalid JSON"),
        ("[1, 2]", "VALIDATION_ERROR", "JSON object"),
        ('"reset"', "VALIDATION_ERROR", "JSON object"),
        ("{}", "UNKNOWN_TYPE", "Unknown message type"),
        ('{"type": "fly"}', "UNKNOWN_TYPE", "'fly'"),
        ('{"type": 7}', "UNKNOWN_TYPE", "7"),
        ('{"type": "step", "data": {"message": "hi"}}', "SESSION_ERROR", "step before reset"),
        ('{"type": "step", "data": {}}', "VALIDATION_ERROR", "message: Field required"),
        ('{"type": "step", "data": {"message": 5}}', "VALIDATION_ERROR", "message"),
        ('{"type": "step", "data": "hi"}', "VALIDATION_ERROR", "'data' of a step message is an object"),
        ('{"type": "reset", "data": {"task_id": "no-such-task"}}', "VALIDATION_ERROR", "no-such-task"),
        ('{"type": "reset", "data": {"seed": -1}}', "VALIDATION_ERROR", "seed"),
        ('{"type": "reset", "data": {"colour": "red"}}', "VALIDATION_ERROR", "colour"),
        ('{"type": "reset", "data": [1]}', "VALIDATION_ERROR", "'data' of a reset message is an object"),
        ('{"type": "reset", "extra": 1}', "VALIDATION_ERROR", "unknown message field"),
        ('{"type": "step", "data": {"message": "' + "x" * 1_100_000 + '"}}', "PAYLOAD_TOO_LARGE", "1000000 bytes"),
        (b"\xff\xfe binary", "INVALID_JSON", "Invalid JSON"),
    ]
    sent = 0
    with connect(ws_url, max_size=None) as ws:
        while sent < 100:
            raw, code, words = cases[sent % len(cases)]
            ws.send(raw)
            reply = json.loads(ws.recv(timeout=60))
            assert reply["type"] == "error", (raw[:80], reply)
            assert reply["data"]["code"] == code, (raw[:80], reply)
            assert words in reply["data"]["message"], (raw[:80], reply)
            sent += 1
        assert len(server.server.sessions) == 1  # 100 bad requests later: one session, still serving
        ws.send(json.dumps({"type": "state"}))
        assert json.loads(ws.recv(timeout=30))["type"] == "state"
        ws.send(json.dumps({"type": "reset", "data": {}}))
        assert json.loads(ws.recv(timeout=120))["type"] == "observation"
        ws.send(
            json.dumps(
                {"type": "step", "data": {"message": {"role": "assistant", "content": None, "tool_calls": "nope"}}}
            )
        )
        reply = json.loads(ws.recv(timeout=60))  # model output never raises: the env answers in the chat
        assert reply["type"] == "observation"
    # An unknown session id, and more clients than the server takes.
    with connect(ws_url + "?session_id=deadbeef") as ws:
        reply = json.loads(ws.recv(timeout=30))
        assert reply["data"]["code"] == "SESSION_ERROR" and "deadbeef" in reply["data"]["message"]
    with contextlib.ExitStack() as stack:
        for _ in range(4):
            stack.enter_context(connect(ws_url))
        assert _wait_for(lambda: len(server.server.sessions) == 4)
        with connect(ws_url) as ws:
            reply = json.loads(ws.recv(timeout=30))
            assert reply["data"]["code"] == "CAPACITY_REACHED" and reply["data"]["max_sessions"] == 4
    # Stateless HTTP episodes are refused with a pointer to /ws; health still answers.
    response = httpx.post(server.base_url + "/step", json={"action": {}})
    assert response.status_code == 400 and "/ws" in response.json()["error"]["message"]
    assert httpx.get(server.base_url + "/health").json()["status"] == "healthy"
    assert _wait_for(lambda: not server.server.sessions), "sessions outlived their connections"
