"""Serve a trained model behind an OpenAI-compatible endpoint so it can act as a subagent.

Three backends, each started as a child process and polled until healthy:

* ``vllm`` (GPU): ``vllm serve`` with the Hermes tool-call parser, which reads the
  ``<tool_call>{json}</tool_call>`` format Qwen3 speaks; a LoRA adapter folder is served on
  top of its base model, with the chat template saved next to the adapter (the one it was
  trained with) rather than the base model's. Its parser does not fail a request on a malformed call: the
  model's text comes back as ``content`` with no ``tool_calls`` (vLLM's Hermes parser catches
  the JSON error and returns the text, per its ``hermes_tool_parser`` source; not run here), which the env
  reads as in process.
* ``skillgym`` (the default without vLLM and a GPU): the project's own server
  (:mod:`skillgym.training.student_server`): the in-process ``hf:`` policy's chat template,
  batched generator and tool-call codec behind HTTP, so a served student answers exactly as
  an in-process one, malformed calls included.
* ``transformers``: ``transformers serve``. Its tool-call parser raises on a malformed
  ``<tool_call>`` and the request answers HTTP 500 (the client retries the same greedy
  request and the episode is lost), so it is kept only as an option.

The handle knows the policy spec that points rollouts and evals at it. A server started here
runs in its own process group (Ctrl-C in a terminal reaches only the parent), so the parent
must stop it: :meth:`ServerHandle.stop`, or :func:`interrupt_on_sigterm` around a command
that blocks, so SIGTERM runs the same clean-up as Ctrl-C. The ``skillgym`` server also exits
on its own when its parent is gone (killed with SIGKILL).
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
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import httpx

from skillgym.models import lora_base
from skillgym.openai_client import OpenAIClient, OpenAIError

Backend = Literal["auto", "vllm", "skillgym", "transformers"]
Chosen = Literal["vllm", "skillgym", "transformers"]
BACKENDS = ("auto", "vllm", "skillgym", "transformers")


class ServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pick_backend(backend: str = "auto") -> Chosen:
    """The backend ``auto`` means here: vLLM when it is installed and a GPU answers, else skillgym's own."""
    if backend not in BACKENDS:
        raise ServerError(f"unknown serving backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend  # type: ignore[return-value]
    return "vllm" if _has_gpu() and shutil.which("vllm") else "skillgym"


def served_model_name(model: str | Path) -> str:
    return Path(model).name if Path(model).exists() else str(model)


def server_command(
    model: str | Path, backend: Chosen, host: str, port: int, extra_args: list[str] | None = None
) -> list[str]:
    """The command line that serves ``model`` with ``backend`` (``extra_args`` appended)."""
    return [*_server_command(model, backend, host, port), *(extra_args or [])]


def _vllm_common(host: str, port: int) -> list[str]:
    return ["--host", host, "--port", str(port), "--enable-auto-tool-choice", "--tool-call-parser", "hermes"]


def vllm_lora_command(base: str, adapters: Mapping[str, str | Path], host: str, port: int) -> list[str]:
    """One vLLM server for ``base`` with every adapter loaded: a request picks an adapter by
    naming it as its ``model`` (the names are the mapping's keys).

    ``--max-loras`` is the number of adapters, so all of them stay resident and no request
    waits for a swap; ``--max-lora-rank`` is the largest adapter rank, rounded up to a rank
    vLLM accepts (it refuses an adapter whose rank exceeds it)."""
    ranks = [int(json.loads((Path(p) / "adapter_config.json").read_text()).get("r", 16)) for p in adapters.values()]
    rank = next(r for r in _VLLM_LORA_RANKS if r >= max(ranks, default=16))
    modules = [f"{name}={Path(path)}" for name, path in adapters.items()]
    return [
        "vllm", "serve", base, *_vllm_common(host, port), "--enable-lora", "--lora-modules", *modules,
        "--max-loras", str(len(modules)), "--max-lora-rank", str(rank), *_adapters_chat_template(adapters),
    ]  # fmt: skip


def _adapters_chat_template(adapters: Mapping[str, str | Path]) -> list[str]:
    """``--chat-template FILE`` when the adapters carry the template they were trained with
    (``skillgym train sft`` saves it next to the adapter): vLLM would otherwise render prompts
    with the base model's own template, which differs from the training text from the second
    turn on (:func:`skillgym.chat_template.student_template`)."""
    files = [Path(p) / "chat_template.jinja" for p in adapters.values()]
    missing = [str(f.parent) for f in files if not f.is_file()]
    if len(missing) == len(files):
        return []
    if missing:
        raise ServerError(
            f"LoRA adapters {', '.join(missing)} carry no chat_template.jinja while the others do, and one "
            "vLLM server renders every request with one template: retrain them with `skillgym train sft` "
            "(which saves it) or serve them on separate servers"
        )
    if len({f.read_text(encoding="utf-8") for f in files}) > 1:
        raise ServerError(
            "these LoRA adapters carry different chat templates, and one vLLM server renders every "
            f"request with one: serve them on separate servers ({', '.join(str(f.parent) for f in files)})"
        )
    return ["--chat-template", str(files[0])]


_VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def _server_command(model: str | Path, backend: Chosen, host: str, port: int) -> list[str]:
    model_path = Path(model)
    name = served_model_name(model)
    if backend == "vllm":
        base = lora_base(model_path)
        if base is not None:
            return vllm_lora_command(base, {name: model_path}, host, port)
        return ["vllm", "serve", str(model), "--served-model-name", name, *_vllm_common(host, port)]
    if not (model_path / "config.json").exists() and (model_path / "adapter_config.json").exists():
        raise ServerError(
            f"{model}: the {backend} backend needs full weights; merge the LoRA adapter first "
            "(skillgym train sft ... --set merge=true) or serve it with --backend vllm"
        )
    if backend == "skillgym":
        return [
            sys.executable,
            "-m",
            "skillgym.training.student_server",
            str(model),
            "--host",
            host,
            "--port",
            str(port),
            "--name",
            name,
            "--parent-pid",
            str(os.getpid()),
        ]
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

    def for_model(self, name: str) -> ServerHandle:
        """The same server, addressed as model ``name`` (an adapter of a multi-LoRA server)."""
        return ServerHandle(self.process, self.base_url, name, self.backend, self.log_path)

    def wait_healthy(self, timeout: float = 300.0) -> None:
        """Poll ``/models`` until the server answers; on failure (or Ctrl-C) stop it and raise."""
        try:
            self._wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_healthy(self, timeout: float) -> None:
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
        """Stop the server's whole process group: SIGTERM, then SIGKILL after 20 s."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
            except ProcessLookupError:  # it ended between poll() and killpg()
                self.process.wait()

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(
    model: str | Path,
    backend: Backend | str = "auto",
    host: str = "127.0.0.1",
    port: int | None = None,
    log_dir: str | Path | None = None,
    wait: bool = True,
    timeout: float = 300.0,
    extra_args: list[str] | None = None,
) -> ServerHandle:
    """Start serving ``model`` and, by default, wait until it answers.

    Args:
        model: A model folder (full weights; a LoRA adapter for vLLM) or hub id.
        backend: ``auto`` (vLLM with a GPU, else ``skillgym``), ``skillgym``, ``vllm`` or ``transformers``.
        host: Listen address.
        port: Port (default: a free one).
        log_dir: Where the server's log goes (default: beside the model).
        wait: Wait until it answers.
        timeout: Seconds to wait.
        extra_args: Appended to the server's command line (e.g. ``["--batch-size", "64"]``).

    Returns:
        The handle (a context manager that stops the server).

    Raises:
        ServerError: A backend that cannot start here, or a server that exited or never answered.
    """
    chosen = pick_backend(backend)
    if chosen == "vllm" and not shutil.which("vllm"):
        raise ServerError(
            "vLLM is not installed (pip install 'skillgym[vllm]' on a GPU machine); use --backend transformers"
        )
    if chosen in ("skillgym", "transformers"):
        # transformers serve only says so after it starts; `skillgym doctor` runs the same check.
        needed = ("fastapi", "uvicorn") + (("openai",) if chosen == "transformers" else ())
        missing = [m for m in needed if importlib.util.find_spec(m) is None]
        if missing:
            what = "transformers serve" if chosen == "transformers" else "the skillgym server"
            raise ServerError(f"{what} cannot start: {', '.join(missing)} not installed; pip install 'skillgym[serve]'")
    port = port or free_port()
    base = Path(log_dir) if log_dir else (Path(model) if Path(model).is_dir() else Path("."))
    log_path = base / f"serve-{chosen}-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = server_command(model, chosen, host, port, extra_args)
    name = str(model) if chosen == "transformers" else served_model_name(model)
    return _launch(cmd, chosen, name, f"http://{host}:{port}/v1", log_path, wait, timeout)


def _launch(
    cmd: list[str], backend: str, model_name: str, base_url: str, log_path: Path, wait: bool, timeout: float
) -> ServerHandle:
    with log_path.open("w") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    handle = ServerHandle(process, base_url, model_name, backend, log_path)
    if wait:
        handle.wait_healthy(timeout)
    return handle


def start_lora_server(
    base: str,
    adapters: Mapping[str, str | Path],
    host: str = "127.0.0.1",
    port: int | None = None,
    log_dir: str | Path | None = None,
    timeout: float = 600.0,
) -> ServerHandle:
    """Serve several LoRA adapters of one base model from one vLLM server (GPU), wait until it
    answers, and check that each adapter really changes the model (:func:`check_lora_adapters`).

    Args:
        base: The base model (hub id or folder) every adapter was trained on.
        adapters: Request name -> adapter folder.
        host: Listen address.
        port: Port (default: a free one).
        log_dir: Where the server's log goes (default: the working directory).
        timeout: Seconds to wait for the server.

    Returns:
        The handle; ``openai:NAME@{handle.base_url}`` reaches adapter NAME.

    Raises:
        ServerError: vLLM missing, an adapter of another base, a server that never answered, or
            an adapter that answers exactly as the base model.
    """
    if not shutil.which("vllm"):
        raise ServerError(
            "several LoRA adapters on one server need vLLM (GPU): pip install 'skillgym[vllm]'; "
            "on CPU merge each adapter and serve the merged models (backend skillgym)"
        )
    for name, path in adapters.items():
        if lora_base(path) != base:
            raise ServerError(f"adapter {name} ({path}) was trained on {lora_base(path)!r}, not on {base!r}")
    port = port or free_port()
    log_path = Path(log_dir or ".") / f"serve-vllm-lora-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    handle = _launch(
        vllm_lora_command(base, adapters, host, port), "vllm", base, f"http://{host}:{port}/v1", log_path, True, timeout
    )
    try:
        check_lora_adapters(handle.base_url, base, list(adapters))
    except BaseException:
        handle.stop()
        raise
    return handle


def check_lora_adapters(base_url: str, base: str, names: list[str], tolerance: float = 1e-3) -> None:
    """Check that a multi-LoRA server routes each adapter's requests to that adapter.

    A known failure of multi-adapter serving is a request that names an adapter but runs on the
    base model (an adapter that was never loaded, a name that falls back to the base). Each
    adapter must be listed by ``/models``, and the log-probabilities of the first token of one
    fixed greedy prompt must differ from the base model's: an adapter whose top-5 match the
    base's within ``tolerance`` is not being applied (or was never trained: its B matrices are
    still zero).

    Raises:
        ServerError: Naming the adapters that are missing or answer like the base model.
    """
    listed = {m.get("id") for m in httpx.get(f"{base_url}/models", timeout=30).json().get("data", [])}
    missing = [n for n in names if n not in listed]
    if missing:
        raise ServerError(f"the server does not list adapter(s) {', '.join(missing)} (it lists {sorted(listed)})")
    client = OpenAIClient(base_url, timeout=120.0)
    probe = [{"role": "user", "content": "Name one file a Python package usually contains."}]

    def first_token_logprobs(model: str) -> dict[str, float]:
        body = {"model": model, "messages": probe, "max_tokens": 1, "temperature": 0, "logprobs": True,
                "top_logprobs": 5}  # fmt: skip
        try:
            content = client.complete(body)["choices"][0]["logprobs"]["content"][0]
        except (OpenAIError, KeyError, IndexError, TypeError) as exc:
            raise ServerError(f"probe of {model} at {base_url} failed: {exc}") from None
        return {t["token"]: float(t["logprob"]) for t in content["top_logprobs"]}

    try:
        reference = first_token_logprobs(base)
        like_base = []
        for name in names:
            got = first_token_logprobs(name)
            if got.keys() == reference.keys() and all(abs(got[t] - reference[t]) <= tolerance for t in got):
                like_base.append(name)
    finally:
        client.close()
    if like_base:
        raise ServerError(
            f"adapter(s) {', '.join(like_base)} answer exactly as the base model {base}: requests are not "
            "reaching the adapter (or it is untrained); check --lora-modules and the adapter folders"
        )


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread by :func:`interrupt_on_sigterm` when SIGTERM arrives."""


@contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """Inside the block, SIGTERM raises :class:`Interrupted` (a ``KeyboardInterrupt``) in the
    main thread, so the clean-up that Ctrl-C runs (stopping child servers) runs for SIGTERM
    too; Python's default for SIGTERM ends the process at once and leaves them running.
    Only from the main thread (elsewhere the block runs unchanged)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Interrupted(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def wait_for_exit(handles: list[ServerHandle], poll_s: float = 0.5) -> ServerHandle | None:
    """Block until a server exits (returned) or Ctrl-C / SIGTERM (None, inside
    :func:`interrupt_on_sigterm`); every server is stopped before it returns."""
    try:
        while True:
            for handle in handles:
                if handle.process.poll() is not None:
                    return handle
            time.sleep(poll_s)
    except KeyboardInterrupt:
        return None
    finally:
        for handle in handles:
            handle.stop()
