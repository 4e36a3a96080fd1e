"""Serving a roster: start what its in-process (``hf:``) subagents need behind HTTP and give
back the roster that points at the servers.

One server per distinct model folder (on CPU the project's student server,
:mod:`skillgym.training.student_server`, which answers exactly as the in-process policy,
malformed tool calls included; vLLM where installed with a GPU; as
:func:`skillgym.training.serving.start_server` picks for ``backend="auto"``). Each served entry's policy
becomes ``openai:MODEL@URL``, keeping its generation options (``max_new_tokens`` becomes the
request's ``max_tokens``; ``temperature`` (0, greedy, unless the spec sets it) and ``top_p`` pass on).

On vLLM, subagents whose models are LoRA adapters of the same base share one server that
loads every adapter (:func:`skillgym.training.serving.start_lora_server`); each entry's
requests name its adapter, and the server is checked to apply each one (an adapter that
answers exactly as the base model is an error, not a silent fallback).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from skillgym.policies.spec import parse_policy_spec
from skillgym.training.serving import ServerHandle, lora_base, pick_backend, start_lora_server, start_server

from .roster import Roster

__all__ = ["serve_roster"]

_SAMPLING = {"max_new_tokens": "max_tokens", "temperature": "temperature", "top_p": "top_p", "seed": "seed"}


def serve_roster(
    roster: Roster, *, backend: str = "auto", log_dir: str | Path | None = None, timeout: float = 300.0
) -> tuple[Roster, list[ServerHandle]]:
    """Serve every ``hf:`` model of ``roster``.

    Args:
        roster: The roster; entries with other policies are left as they are.
        backend: ``auto``, ``skillgym``, ``vllm`` or ``transformers`` (see ``skillgym serve``).
        log_dir: Where server logs go (default: beside each model).
        timeout: Seconds to wait for each server to answer.

    Returns:
        The served roster and the server handles (stop them with ``handle.stop()``; on an
        error, the servers already started are stopped before it is raised).
    """
    handles: dict[str, ServerHandle] = {}
    entries = []
    try:
        if pick_backend(backend) == "vllm":  # type: ignore[arg-type]
            handles.update(_serve_adapters_together(roster, log_dir, timeout))
        for entry in roster.subagents:
            spec = parse_policy_spec(entry.policy)
            if spec.kind != "hf":
                entries.append(entry)
                continue
            assert spec.path is not None
            if spec.path not in handles:
                handles[spec.path] = start_server(
                    spec.path,
                    backend=backend,
                    log_dir=log_dir,  # type: ignore[arg-type]
                    timeout=timeout,
                )
            options: dict[str, Any] = {_SAMPLING[k]: v for k, v in spec.options.items() if k in _SAMPLING}
            # In process an hf: student decodes greedily unless told; say so to the server, since
            # vLLM (unlike the student server) samples at temperature 1 by default.
            options.setdefault("temperature", 0)
            query = "&".join(f"{k}={v}" for k, v in sorted(options.items()))
            served = handles[spec.path].policy_spec + (f"?{query}" if query else "")
            entries.append(entry.model_copy(update={"policy": str(parse_policy_spec(served))}))
    except BaseException:
        for handle in handles.values():
            handle.stop()
        raise
    servers = list({handle.process.pid: handle for handle in handles.values()}.values())  # adapters share one
    return roster.model_copy(update={"subagents": entries}), servers


def _serve_adapters_together(roster: Roster, log_dir: str | Path | None, timeout: float) -> dict[str, ServerHandle]:
    """One vLLM server per base model for the roster's LoRA-adapter models; keyed by adapter
    path, with each handle's ``model_name`` set to the name requests use for that adapter."""
    by_base: dict[str, dict[str, str]] = {}  # base -> adapter path -> request name
    for entry in roster.subagents:
        spec = parse_policy_spec(entry.policy)
        if spec.kind == "hf" and spec.path is not None and (base := lora_base(spec.path)) is not None:
            by_base.setdefault(base, {}).setdefault(spec.path, entry.name)
    handles: dict[str, ServerHandle] = {}
    try:
        for base, adapters in by_base.items():
            server = start_lora_server(
                base, {name: path for path, name in adapters.items()}, log_dir=log_dir, timeout=timeout
            )
            for path, name in adapters.items():
                handles[path] = server.for_model(name)
    except BaseException:
        for handle in handles.values():
            handle.stop()
        raise
    return handles
