"""Several LoRA adapters on one vLLM server (issue 13, "Serving a roster").

vLLM needs a GPU, so it cannot run here. What runs for real: the command line it gets, the
grouping of a roster's adapters by base model, and the adapter check against a loopback HTTP
server that answers as vLLM does (``/v1/models`` and chat completions with ``logprobs``). The
fake server is the mock the GPU forces; everything on our side of the socket is real.
"""

from __future__ import annotations

import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from skillgym.orchestrator import serving as roster_serving
from skillgym.orchestrator.roster import load_roster
from skillgym.training.serving import ServerError, ServerHandle, check_lora_adapters, vllm_lora_command


def adapter(folder: Path, base: str = "Qwen/Qwen3-4B", rank: int = 16) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base, "r": rank}))
    return folder


def test_one_command_loads_every_adapter_with_room_for_the_largest_rank(tmp_path):
    adapters = {"explorer": adapter(tmp_path / "a", rank=8), "research": adapter(tmp_path / "b", rank=24)}
    cmd = vllm_lora_command("Qwen/Qwen3-4B", adapters, "127.0.0.1", 8001)
    assert cmd[:3] == ["vllm", "serve", "Qwen/Qwen3-4B"]
    assert cmd.count("--lora-modules") == 1  # argparse keeps only the last of repeated flags
    at = cmd.index("--lora-modules")
    assert cmd[at + 1 : at + 3] == [f"explorer={tmp_path / 'a'}", f"research={tmp_path / 'b'}"]
    assert cmd[cmd.index("--max-loras") + 1] == "2" and cmd[cmd.index("--max-lora-rank") + 1] == "32"
    assert "--enable-lora" in cmd and cmd[cmd.index("--tool-call-parser") + 1] == "hermes"
    assert "--chat-template" not in cmd  # adapters without a template: the base model's


def test_adapters_are_served_with_the_template_they_trained_on(tmp_path):
    from skillgym.chat_template import student_template

    adapters = {"explorer": adapter(tmp_path / "a"), "research": adapter(tmp_path / "b")}
    for folder in adapters.values():
        (folder / "chat_template.jinja").write_text(student_template(), encoding="utf-8")
    cmd = vllm_lora_command("Qwen/Qwen3-4B", adapters, "127.0.0.1", 8001)
    assert cmd[cmd.index("--chat-template") + 1] == str(tmp_path / "a" / "chat_template.jinja")
    (tmp_path / "b" / "chat_template.jinja").write_text("{{ messages }}", encoding="utf-8")
    with pytest.raises(ServerError, match="different chat templates"):
        vllm_lora_command("Qwen/Qwen3-4B", adapters, "127.0.0.1", 8001)
    (tmp_path / "b" / "chat_template.jinja").unlink()
    with pytest.raises(ServerError, match=f"adapters {tmp_path / 'b'} carry no chat_template.jinja"):
        vllm_lora_command("Qwen/Qwen3-4B", adapters, "127.0.0.1", 8001)


class FakeVLLM(BaseHTTPRequestHandler):
    """Answers like a multi-LoRA vLLM server: each model's first-token top-5 log-probabilities."""

    logprobs: dict[str, dict[str, float]] = {}

    def log_message(self, *args: object) -> None:
        pass

    def reply(self, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.reply({"object": "list", "data": [{"id": name} for name in self.logprobs]})

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        top = [{"token": t, "logprob": lp} for t, lp in self.logprobs[request["model"]].items()]
        content = [{"token": top[0]["token"], "logprob": top[0]["logprob"], "top_logprobs": top}]
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": top[0]["token"]},
            "logprobs": {"content": content},
        }
        self.reply({"choices": [choice], "usage": {"prompt_tokens": 9, "completion_tokens": 1}})


@pytest.fixture
def fake_vllm():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeVLLM)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_adapters_that_change_the_model_pass_the_check(fake_vllm):
    FakeVLLM.logprobs = {
        "base": {"setup": -0.4, "__init__": -1.3},
        "explorer": {"__init__": -0.2, "setup": -2.0},
        "research": {"setup": -0.9, "__init__": -0.7},
    }
    check_lora_adapters(fake_vllm, "base", ["explorer", "research"])


def test_an_adapter_that_answers_as_the_base_model_is_named(fake_vllm):
    FakeVLLM.logprobs = {
        "base": {"setup": -0.4, "__init__": -1.3},
        "explorer": {"__init__": -0.2, "setup": -2.0},
        "research": {"setup": -0.4, "__init__": -1.3},  # the request fell back to the base model
    }
    with pytest.raises(ServerError, match=r"adapter\(s\) research answer exactly as the base model base"):
        check_lora_adapters(fake_vllm, "base", ["explorer", "research"])


def test_an_adapter_the_server_does_not_list_is_named(fake_vllm):
    FakeVLLM.logprobs = {"base": {"setup": -0.4}, "explorer": {"setup": -0.1}}
    with pytest.raises(ServerError, match=r"does not list adapter\(s\) research"):
        check_lora_adapters(fake_vllm, "base", ["explorer", "research"])


def test_a_roster_of_adapters_on_one_base_gets_one_server(tmp_path, monkeypatch):
    """serve_roster with vLLM: the two adapters of one base share a server, each entry names its
    adapter; a merged model elsewhere would get its own (here: none)."""
    first, second = adapter(tmp_path / "explorer"), adapter(tmp_path / "research")
    started: list[tuple[str, dict]] = []

    def fake_start(base, adapters, **kwargs):  # stands in for `vllm serve` (GPU); a real child process
        started.append((base, dict(adapters)))
        process = subprocess.Popen(["sleep", "60"], start_new_session=True)
        return ServerHandle(process, "http://127.0.0.1:9/v1", base, "vllm", tmp_path / "log")

    monkeypatch.setattr(roster_serving, "start_lora_server", fake_start)
    roster = load_roster(
        {
            "subagents": [
                {
                    "name": "explorer",
                    "description": "Finds code.",
                    "env": "codebase-explorer-v0",
                    "policy": f"hf:{first}",
                },
                {
                    "name": "research",
                    "description": "Reads the web.",
                    "env": "web-research-v0",
                    "policy": f"hf:{second}",
                },
                {"name": "big", "description": "A large model.", "env": "web-research-v0", "policy": "expert"},
            ]
        }
    )
    served, handles = roster_serving.serve_roster(roster, backend="vllm")
    try:
        assert started == [("Qwen/Qwen3-4B", {"explorer": str(first), "research": str(second)})]
        assert len(handles) == 1
        policies = {entry.name: entry.policy for entry in served.subagents}
        assert policies == {
            "explorer": "openai:explorer@http://127.0.0.1:9/v1?temperature=0",
            "research": "openai:research@http://127.0.0.1:9/v1?temperature=0",
            "big": "expert",
        }
    finally:
        for handle in handles:
            handle.stop()
    assert handles[0].process.poll() is not None
