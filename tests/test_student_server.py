"""skillgym's own student server (issue 18): a served student plays exactly like the in-process one.

Real tiny models trained here (nothing downloaded), real HTTP on loopback, real envs on the
local sandbox, and for the signal tests a real ``skillgym serve`` process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

pytest.importorskip("torch")
pytest.importorskip("fastapi")

from skillgym.episode import run_episode  # noqa: E402
from skillgym.policies.hf_policy import HFPolicy  # noqa: E402
from skillgym.policies.openai_policy import OpenAIPolicy  # noqa: E402
from skillgym.toolcalls import render_tool_call_text  # noqa: E402
from skillgym.training.serving import free_port, pick_backend, start_server  # noqa: E402
from skillgym.training.student_server import (  # noqa: E402
    StudentServer,
    build_app,
    restore_tool_replies,
    turn_to_message,
)
from tests.test_env import make_env  # noqa: E402

MALFORMED = '<tool_call>\n{"name": "read_file", "arguments": {"path": "notes/n%d.txt"}\n</tool_call>'
TASK_IDS = ["t0", "t4", "t8"]


def _env():
    return make_env("local", tools=["read_file", "submit"], max_turns=4)


@pytest.fixture(scope="module")
def malformed_model_dir(tmp_path_factory):
    """A tiny model overfit on conversations whose first turn is a malformed ``<tool_call>``
    (an unclosed JSON object), answered by the env's own error message, then a ``submit``."""
    import torch

    from skillgym.chat_template import render
    from skillgym.training import TinyModelSpec, build_tiny_model, train_tokenizer
    from skillgym.training.tokenizer import save_tokenizer

    env = _env()
    texts = []
    try:
        for task in env.env_spec.tasks.tasks("test"):
            index = int(task.id[1:])
            observation, info = env.reset(options={"task_id": task.id})
            observation, *_ = env.step(MALFORMED % index)
            assert observation[-1]["role"] == "tool" and "could not be parsed" in observation[-1]["content"]
            final = render_tool_call_text("submit", {"answer": str(index * 7)})
            texts.append(render([*observation, {"role": "assistant", "content": final}], tools=info["tools"]))
    finally:
        env.close()
    # Boilerplate tokens (system prompt, tool schemas, the error note) keep the texts short to train on.
    tokenizer = train_tokenizer(texts * 4, vocab_size=400, boilerplate_min_fraction=0.5)
    model = build_tiny_model(
        TinyModelSpec(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, intermediate_size=128
        ),
        tokenizer,
        seed=5,
    )
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # products this small run faster on one thread (far faster on a busy machine)
    try:
        for _ in range(80):
            loss = model(**batch, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    out = tmp_path_factory.mktemp("malformed-student")
    model.save_pretrained(out)
    save_tokenizer(tokenizer, out)
    return out


def _episodes(policy, task_ids):
    env = _env()
    try:
        return [run_episode(env, policy, task_id=t) for t in task_ids]
    finally:
        env.close()


def test_malformed_tool_call_gets_the_same_trajectory_served_and_in_process(malformed_model_dir, tmp_path):
    local = HFPolicy(str(malformed_model_dir), max_new_tokens=40)
    expected = _episodes(local, TASK_IDS)
    local.close()
    # Not vacuous: the model's first turn is malformed, the env answered it, the episode went on.
    for trajectory in expected:
        first = trajectory.messages[2]
        assert first["role"] == "assistant" and "tool_calls" not in first and "<tool_call>" in first["content"]
        assert trajectory.tool_errors and trajectory.tool_errors[0].turn == 1
        assert len(trajectory.token_ids) >= 2  # a second turn, whose prompt holds the env's error message
    with start_server(malformed_model_dir, backend="skillgym", log_dir=tmp_path, timeout=240) as server:
        assert server.backend == "skillgym" and server.model_name == malformed_model_dir.name
        remote = OpenAIPolicy(
            server.model_name,
            base_url=server.base_url,
            sampling={"temperature": 0.0, "max_tokens": 40},
            return_token_ids=True,
            max_retries=0,  # a 500 must fail the test, not be retried
        )
        served = _episodes(remote, TASK_IDS)
        remote.close()
    for a, b in zip(expected, served):
        assert b.status == "ok"
        assert b.messages == a.messages
        assert b.token_ids == a.token_ids
        assert (b.usage.prompt_tokens, b.usage.completion_tokens) == (a.usage.prompt_tokens, a.usage.completion_tokens)
        assert (b.reward, b.terminated, b.truncated) == (a.reward, a.terminated, a.truncated)


def test_restore_tool_replies_and_turn_reading():
    note = {"role": "user", "content": "Error: your tool call could not be parsed"}
    messages = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": MALFORMED % 1},
        note,
        {"role": "assistant", "content": "done"},
        {"role": "user", "content": "a real follow-up question"},
    ]
    restored = restore_tool_replies(messages)
    assert restored[3] == {"role": "tool", "content": note["content"]}
    assert restored[:3] == messages[:3] and restored[4:] == messages[4:]

    message, calls = turn_to_message(MALFORMED % 1, turn=2)
    assert message == {"role": "assistant", "content": MALFORMED % 1} and not calls
    good = "Let me look.\n" + render_tool_call_text("read_file", {"path": "a.txt"})
    message, calls = turn_to_message(good, turn=2)
    assert calls and message["content"] == "Let me look."
    assert message["tool_calls"] == [
        {"id": "call_2_0", "type": "function", "function": {"name": "read_file", "arguments": '{"path": "a.txt"}'}}
    ]
    # A good call and a stray closing tag: the env runs the call and keeps the tag as text, which
    # structured calls cannot say (the tag beside them reads as a broken call), so: raw text.
    stray = render_tool_call_text("read_file", {"path": "a.txt"}) + "</tool_call>"
    assert turn_to_message(stray, turn=3) == ({"role": "assistant", "content": stray}, False)


@pytest.fixture(scope="module")
def http_server(malformed_model_dir):
    """The app on a real loopback port, in this process (uvicorn in a thread)."""
    import uvicorn

    server = StudentServer(HFPolicy(str(malformed_model_dir), max_new_tokens=40), name="student")
    port = free_port()
    web = uvicorn.Server(uvicorn.Config(build_app(server), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=web.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield base
    web.should_exit = True
    thread.join(timeout=30)
    server.close()


def test_http_api(http_server):
    base = http_server
    models = httpx.get(f"{base}/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["student"]
    env = _env()
    try:
        observation, info = env.reset(options={"task_id": "t4"})
    finally:
        env.close()
    body = {"model": "student", "messages": observation, "tools": info["tools"], "max_completion_tokens": 40}
    reply = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    data = reply.json()
    message = data["choices"][0]["message"]
    assert "<tool_call>" in message["content"] and "tool_calls" not in message  # malformed: raw text, never a 500
    assert data["usage"]["completion_tokens"] > 0
    assert data["usage"]["total_tokens"] == data["usage"]["prompt_tokens"] + data["usage"]["completion_tokens"]
    # stop strings cut the text; max_tokens limits the tokens
    cut = httpx.post(f"{base}/v1/chat/completions", json={**body, "stop": ["read_file"]}, timeout=60).json()
    assert cut["choices"][0]["message"]["content"] == message["content"].split("read_file")[0]
    limited = {**{k: v for k, v in body.items() if k != "max_completion_tokens"}, "max_tokens": 3}
    short = httpx.post(f"{base}/v1/chat/completions", json=limited, timeout=60).json()
    assert short["usage"]["completion_tokens"] == 3 and short["choices"][0]["finish_reason"] == "length"
    # streaming: the same answer as server-sent events
    with httpx.stream("POST", f"{base}/v1/chat/completions", json={**body, "stream": True}, timeout=60) as stream:
        events = [line[6:] for line in stream.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["content"] == message["content"]
    assert chunks[-1]["usage"] == data["usage"]
    # the client's mistakes are 4xx with a precise message
    wrong = httpx.post(f"{base}/v1/chat/completions", json={**body, "model": "other"}, timeout=60)
    assert wrong.status_code == 404 and "serves 'student'" in wrong.json()["error"]["message"]
    empty = httpx.post(f"{base}/v1/chat/completions", json={"messages": []}, timeout=60)
    assert empty.status_code == 400 and "messages" in empty.json()["error"]["message"]
    assert httpx.get(f"{base}/health").json()["status"] == "ok"


def test_concurrent_requests_give_the_greedy_answers_of_single_ones(http_server):
    from concurrent.futures import ThreadPoolExecutor

    env = _env()
    bodies = []
    try:
        for task_id in ["t0", "t4", "t8", "t12", "t16"]:
            observation, info = env.reset(options={"task_id": task_id})
            bodies.append({"messages": observation, "tools": info["tools"], "max_tokens": 24, "return_token_ids": True})
    finally:
        env.close()

    def ask(body):
        return httpx.post(f"{http_server}/v1/chat/completions", json=body, timeout=120).json()["choices"][0]

    alone = [ask(b)["token_ids"] for b in bodies]
    with ThreadPoolExecutor(len(bodies)) as pool:
        together = [c["token_ids"] for c in pool.map(ask, bodies)]
    assert together == alone and all(alone)


def test_auto_backend_on_cpu_is_the_skillgym_server():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert pick_backend("auto") == "skillgym"


def _children(pid: int) -> list[int]:
    import psutil

    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _default_sigint() -> None:
    """In the child before exec: SIGINT unblocked and at its default action (both are inherited)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_signal_to_skillgym_serve_stops_its_server(malformed_model_dir, signum):
    """SIGTERM and SIGINT: ``skillgym serve`` stops its server and exits; SIGKILL (no clean-up
    possible): the server sees its parent gone and exits on its own."""
    import psutil

    port = free_port()
    command = [sys.executable, "-m", "skillgym.pipeline.cli", "serve", str(malformed_model_dir), "--port", str(port)]
    # A terminal gives a foreground command the default SIGINT action; the test process may have
    # inherited or set another (an ignored SIGINT stays ignored across exec, and Python then never
    # raises KeyboardInterrupt), so the child starts from the default, as under a shell.
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_default_sigint,
    )
    children: list[int] = []
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            if any(line.startswith("policy spec:") for line in lines):  # started and waiting
                break
            time.sleep(0.2)
        assert any(line.startswith("policy spec:") for line in lines), f"not serving: {process.poll()} {lines}"
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).status_code == 200
        children = _children(process.pid)
        assert children, "the server runs as a child process"
        process.send_signal(signum)
        process.wait(timeout=60)
        gone = time.monotonic() + 20
        while time.monotonic() < gone and any(psutil.pid_exists(c) for c in children):
            time.sleep(0.2)
        alive = [c for c in children if psutil.pid_exists(c) and psutil.Process(c).status() != psutil.STATUS_ZOMBIE]
        assert not alive, f"server processes left running: {alive}"
        assert _port_free(port)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for child in children:
            if psutil.pid_exists(child):
                os.kill(child, signal.SIGKILL)
