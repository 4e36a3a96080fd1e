"""Serve a trained model behind an OpenAI-compatible endpoint so it can act as a subagent.

Two backends, both started as a child process and polled until healthy:

* ``vllm`` (GPU): ``vllm serve`` with the Hermes tool-call parser, which reads the
  ``<tool_call>{json}</tool_call>`` format Qwen3 speaks; a LoRA adapter folder is served on
  top of its base model.
* ``transformers`` (CPU or GPU): ``transformers serve``, which parses Qwen3 tool calls with
  the tokenizer's response template.

The handle knows the policy spec that points rollouts and evals at it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Literal

import httpx

Backend = Literal["auto", "vllm", "transformers"]


class ServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pick_backend(backend: Backend = "auto") -> Literal["vllm", "transformers"]:
    if backend != "auto":
        return backend
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    return "vllm" if has_gpu and shutil.which("vllm") else "transformers"


def served_model_name(model: str | Path) -> str:
    return Path(model).name if Path(model).exists() else str(model)


def server_command(model: str | Path, backend: Literal["vllm", "transformers"], host: str, port: int) -> list[str]:
    model_path = Path(model)
    name = served_model_name(model)
    if backend == "vllm":
        adapter_config = model_path / "adapter_config.json"
        common = ["--host", host, "--port", str(port), "--enable-auto-tool-choice", "--tool-call-parser", "hermes"]
        if adapter_config.exists():
            base = json.loads(adapter_config.read_text())["base_model_name_or_path"]
            return ["vllm", "serve", base, *common, "--enable-lora", "--lora-modules", f"{name}={model_path}"]
        return ["vllm", "serve", str(model), "--served-model-name", name, *common]
    if not (model_path / "config.json").exists() and (model_path / "adapter_config.json").exists():
        raise ServerError(
            f"{model}: transformers serve needs full weights; merge the LoRA adapter first "
            "(skillgym train sft ... --set merge=true) or serve it with --backend vllm"
        )
    return [
        sys.executable,
        "-m",
        "transformers.cli.transformers",
        "serve",
        str(model),
        "--host",
        host,
        "--port",
        str(port),
        "--device",
        "cpu" if not _has_gpu() else "auto",
    ]


def _has_gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


class ServerHandle:
    """A running server process. Use as a context manager; ``policy_spec`` names it for rollouts."""

    def __init__(self, process: subprocess.Popen, base_url: str, model_name: str, backend: str, log_path: Path):
        self.process, self.base_url, self.model_name, self.backend, self.log_path = (
            process,
            base_url,
            model_name,
            backend,
            log_path,
        )

    @property
    def policy_spec(self) -> str:
        return f"openai:{self.model_name}@{self.base_url}"

    def wait_healthy(self, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(
                    f"{self.backend} server exited with code {self.process.returncode}; log: {self.log_path}\n{self.log_tail()}"
                )
            try:
                if httpx.get(f"{self.base_url}/models", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise ServerError(
            f"{self.backend} server did not become healthy within {timeout:g} s; log: {self.log_path}\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(
    model: str | Path,
    backend: Backend = "auto",
    host: str = "127.0.0.1",
    port: int | None = None,
    log_dir: str | Path | None = None,
    wait: bool = True,
    timeout: float = 300.0,
) -> ServerHandle:
    """Start serving ``model`` (a folder or hub id) and, by default, wait until it answers."""
    chosen = pick_backend(backend)
    if chosen == "vllm" and not shutil.which("vllm"):
        raise ServerError(
            "vLLM is not installed (pip install 'skillgym[vllm]' on a GPU machine); use --backend transformers"
        )
    if chosen == "transformers":
        # transformers serve only says so after it starts; `skillgym doctor` runs the same check.
        missing = [m for m in ("fastapi", "uvicorn", "openai") if importlib.util.find_spec(m) is None]
        if missing:
            raise ServerError(
                f"transformers serve cannot start: {', '.join(missing)} not installed; pip install 'skillgym[serve]'"
            )
    port = port or free_port()
    base = Path(log_dir) if log_dir else (Path(model) if Path(model).is_dir() else Path("."))
    log_path = base / f"serve-{chosen}-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = server_command(model, chosen, host, port)
    with log_path.open("w") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    handle = ServerHandle(
        process,
        f"http://{host}:{port}/v1",
        served_model_name(model) if chosen == "vllm" else str(model),
        chosen,
        log_path,
    )
    if wait:
        handle.wait_healthy(timeout)
    return handle
