"""skillgym's own OpenAI-compatible server for a student model on CPU (``skillgym serve``'s default there).

    python -m skillgym.training.student_server runs/distill/student --port 8000
    # then: skillgym eval ... --policy openai:student@http://127.0.0.1:8000/v1

Why not ``transformers serve``: its tool-call parser raises on a malformed ``<tool_call>``
(``JSONDecodeError``) and the request answers HTTP 500, so a served student loses the
episodes where an in-process one would get a tool message saying what was wrong. Here the
same code as the in-process ``hf:`` policy does the work, so a served student behaves
exactly like an in-process one:

- the prompt is rendered by :meth:`~skillgym.policies.hf_policy.HFPolicy.prompt_ids` (the
  model's chat template, the project's Qwen3 template when it has none) with the request's
  ``tools``;
- turns of concurrent requests are generated together by the batched generator
  (:class:`~skillgym.policies.hf_batching.BatchedGenerator`), whose greedy tokens do not
  depend on which requests share a batch;
- the completion is read by the project's tool-call codec (:func:`skillgym.toolcalls.parse_turn`).
  A turn the env would run comes back as ``tool_calls`` (ids ``call_<turn>_<index>``, as the
  env numbers them); a turn it could not read (malformed JSON, an unclosed block, too many
  calls) comes back as its raw text in ``content`` with no ``tool_calls``, so the env sees the
  text it would see in process and answers with its own error message. Model output never
  makes this server answer an error.

One thing a strict client changes is put back: OpenAI's API has no place for a ``tool``
message that answers no call (the env's note after an unreadable turn), so clients (the
``openai:`` policy among them) send it as a ``user`` message. A ``user`` message that follows
an assistant turn whose tool calls are left as text is therefore rendered as the ``tool``
reply it was (:func:`restore_tool_replies`); otherwise the model would be shown a different
prompt served than in process.

Endpoints: ``GET /v1/models``, ``POST /v1/chat/completions`` (messages with tools,
``max_tokens``/``max_completion_tokens``, ``temperature``, ``top_p``, ``seed``, ``stop``,
``return_token_ids``; ``stream`` sends the whole answer as one chunk), ``GET /health``.
A request without ``temperature`` is greedy (as the in-process ``hf:`` policy; OpenAI's default is 1).
``stop`` strings end the text where they first occur (one-token stop strings also stop
generation; longer ones are cut after it). The server exits when the process that started
it (``--parent-pid``) is gone, so a killed ``skillgym serve`` leaves no server behind.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import threading
import time
import uuid
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from skillgym.toolcalls import TOOL_CALL_CLOSE, TOOL_CALL_OPEN, parse_turn

log = logging.getLogger(__name__)

__all__ = ["ChatRequest", "StudentServer", "build_app", "main", "restore_tool_replies", "turn_to_message"]


class ChatRequest(BaseModel):
    """The fields of a chat-completions request this server reads (others are ignored)."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    messages: list[dict[str, Any]] = Field(min_length=1)
    tools: list[dict[str, Any]] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    n: int = Field(default=1, ge=1, le=1, description="one choice per request")
    return_token_ids: bool = False


def restore_tool_replies(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Render-ready messages: a ``user`` message right after an assistant turn whose tool calls
    are text (no structured ``tool_calls``, ``<tool_call>`` markup in its content) becomes the
    ``tool`` message it was before a strict client converted it (see the module docstring).

    Args:
        messages: The request's messages.

    Returns:
        The messages, with those replies as ``tool`` messages (others unchanged).
    """
    out: list[dict[str, Any]] = []
    answering = False
    for message in messages:
        role = message.get("role")
        if answering and role == "user":
            out.append({"role": "tool", "content": message.get("content") or ""})
            continue
        answering = False
        if role == "assistant" and not message.get("tool_calls"):
            content = message.get("content")
            text = content if isinstance(content, str) else ""
            answering = TOOL_CALL_OPEN in text or TOOL_CALL_CLOSE in text
        out.append(message)
    return out


def turn_to_message(text: str, turn: int) -> tuple[dict[str, Any], bool]:
    """The assistant message for one generated turn, read as the env reads it.

    Args:
        text: The completion text (markup kept, cut at the end of the turn).
        turn: The turn's number in its conversation (1 for the first), for call ids.

    Returns:
        (the message, whether it carries structured tool calls). The structured form is used
        only when the env reads it exactly as it reads ``text`` (same text, reasoning, calls and
        ids); otherwise, e.g. for a turn the env could not run or a stray ``</tool_call>`` beside
        a good call, the message is the raw text with no ``tool_calls``.
    """
    prefix = f"call_{turn}"
    parsed = parse_turn(text, call_id_prefix=prefix)
    raw = {"role": "assistant", "content": text}
    if parsed.errors or any(c.name is None or c.arguments is None for c in parsed.calls):
        return raw, False
    message: dict[str, Any] = {"role": "assistant", "content": parsed.content}
    if parsed.reasoning:
        message["reasoning_content"] = parsed.reasoning
    if parsed.calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)},
            }
            for call in parsed.calls
        ]
    again = parse_turn(message, call_id_prefix=prefix)
    if (again.content, again.reasoning, again.errors, _calls(again)) != (
        parsed.content,
        parsed.reasoning,
        [],
        _calls(parsed),
    ):
        return raw, False
    return message, bool(parsed.calls)


def _calls(turn: Any) -> list[tuple]:
    return [(c.id, c.name, c.arguments, c.error) for c in turn.calls]


class StudentServer:
    """A loaded model and what answering requests needs (no HTTP here; see :func:`build_app`).

    Args:
        model: A model folder with full weights (or hub id), or an :class:`HFPolicy` to serve.
        name: The model name clients send (default: the folder's name).
        max_new_tokens: Tokens per turn when a request sets no ``max_tokens``.
        batch_size: Most turns generated together (0: one ``model.generate`` at a time).
        batch_wait_s: How long an idle generator waits for company.
        enable_thinking: Passed to the chat template (Qwen3's thinking switch).
    """

    def __init__(
        self,
        model: Any,
        *,
        name: str | None = None,
        max_new_tokens: int = 512,
        batch_size: int = 32,
        batch_wait_s: float = 0.002,
        enable_thinking: bool | None = None,
    ) -> None:
        from skillgym.policies.hf_policy import HFPolicy

        if isinstance(model, HFPolicy):
            self.policy = model
        else:
            self.policy = HFPolicy(
                str(model),
                max_new_tokens=max_new_tokens,
                batch_size=batch_size,
                batch_wait_s=batch_wait_s,
                enable_thinking=enable_thinking,
            )
        self.name = name or (Path(model).name if isinstance(model, (str, Path)) else "student")
        self.created = int(time.time())
        self.requests = 0

    def prepare(self, request: ChatRequest) -> tuple[list[int], dict[str, Any]]:
        """The prompt's token ids and the generation options of one request."""
        policy = self.policy
        messages = restore_tool_replies(request.messages)
        prompt = policy.prompt_ids(messages, {"tools": request.tools or None})
        stops = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
        stop_ids = set(policy.end_ids)
        for text in stops:
            ids = policy.tokenizer.encode(text, add_special_tokens=False)
            if len(ids) == 1:
                stop_ids.add(ids[0])
        options = {
            "max_new_tokens": request.max_completion_tokens or request.max_tokens or policy.max_new_tokens,
            "temperature": policy.temperature if request.temperature is None else request.temperature,
            "top_p": policy.top_p if request.top_p is None else request.top_p,
            "seed": request.seed,
            "stop_ids": frozenset(stop_ids),
        }
        return prompt, options

    def submit(self, prompt: list[int], options: dict[str, Any]) -> Future:
        """Queue the generation; the future resolves to the completion's token ids."""
        return self.policy.submit_prompt(prompt, **options)

    def answer(self, request: ChatRequest, prompt: list[int], completion: list[int]) -> dict[str, Any]:
        """The chat-completion body for a finished generation."""
        policy = self.policy
        text = policy.decode(completion)
        stops = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
        cut = min((text.find(s) for s in stops if s and s in text), default=-1)
        if cut >= 0:
            text = text[:cut]
        turn = 1 + sum(1 for m in request.messages if m.get("role") == "assistant")
        message, has_calls = turn_to_message(text, turn)
        max_new = request.max_completion_tokens or request.max_tokens or policy.max_new_tokens
        ended = bool(completion) and completion[-1] in policy.end_ids
        if has_calls:
            finish = "tool_calls"
        elif cut >= 0 or ended or len(completion) < max_new:
            finish = "stop"
        else:
            finish = "length"
        choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
        if request.return_token_ids:
            choice["token_ids"] = list(completion)
        self.requests += 1
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.name,
            "choices": [choice],
            "usage": {
                "prompt_tokens": len(prompt),
                "completion_tokens": len(completion),
                "total_tokens": len(prompt) + len(completion),
            },
        }

    def health(self) -> dict[str, Any]:
        policy = self.policy
        body: dict[str, Any] = {
            "status": "ok",
            "model": self.name,
            "batched": policy.batched,
            "requests": self.requests,
        }
        if policy.batched and policy._generator is not None:
            body["generator"] = dict(policy._generator.stats)
        return body

    def close(self) -> None:
        self.policy.close()


def _error(status: int, message: str, kind: str = "invalid_request_error") -> Any:
    return JSONResponse(status_code=status, content={"error": {"message": message, "type": kind, "code": status}})


def _stream_chunks(body: dict[str, Any]) -> list[str]:
    """The whole answer as server-sent events: one content chunk, then the finish, then [DONE]."""
    choice = body["choices"][0]
    message = choice["message"]
    delta: dict[str, Any] = {"role": "assistant", "content": message.get("content") or ""}
    if message.get("reasoning_content"):
        delta["reasoning_content"] = message["reasoning_content"]
    if message.get("tool_calls"):
        delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
    head = {key: body[key] for key in ("id", "created", "model")}
    chunks = [
        {**head, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
        {
            **head,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}],
            "usage": body["usage"],
        },
    ]
    return [f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n" for chunk in chunks] + ["data: [DONE]\n\n"]


def build_app(server: StudentServer) -> FastAPI:
    """The FastAPI app answering for ``server``."""
    app = FastAPI(title=f"skillgym student server: {server.name}")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return server.health()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": server.name, "object": "model", "created": server.created, "owned_by": "skillgym"}],
        }

    @app.post("/v1/chat/completions")
    async def chat_completions(raw: Request) -> Any:
        try:
            payload = await raw.json()
        except ValueError as exc:
            return _error(400, f"the request body is not JSON: {exc}")
        try:
            request = ChatRequest.model_validate(payload)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
            return _error(400, f"invalid chat-completions request: {problems}")
        if request.model is not None and request.model != server.name:
            return _error(404, f"model {request.model!r} is not served here; this server serves {server.name!r}")
        try:
            prompt, options = server.prepare(request)
        except Exception as exc:  # the template refused the conversation: the client's doing
            return _error(400, f"cannot render the conversation with the chat template: {type(exc).__name__}: {exc}")
        try:
            completion = await asyncio.wrap_future(server.submit(prompt, options))
        except Exception as exc:  # the model failed: ours, not the client's
            log.exception("generation failed")
            return _error(500, f"generation failed: {type(exc).__name__}: {exc}", "server_error")
        body = server.answer(request, prompt, completion)
        if request.stream:
            return StreamingResponse(iter(_stream_chunks(body)), media_type="text/event-stream")
        return body

    return app


def _watch_parent(parent_pid: int, stop: Any) -> None:
    """Call ``stop`` once the process that started this server is gone (reparented)."""

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                log.warning("the parent process %d is gone; stopping", parent_pid)
                stop()
                return
            time.sleep(1.0)

    threading.Thread(target=watch, name="skillgym-parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m skillgym.training.student_server MODEL [--host H] [--port P] ...``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="model folder with full weights (or hub id)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--name", default=None, help="model name clients send (default: the folder's name)")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="tokens per turn when a request sets none")
    parser.add_argument("--batch-size", type=int, default=32, help="most turns generated together (0: unbatched)")
    parser.add_argument("--batch-wait-s", type=float, default=0.002)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this process is gone")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import torch
    import uvicorn

    if args.threads:
        torch.set_num_threads(args.threads)
    server = StudentServer(
        args.model,
        name=args.name,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        batch_wait_s=args.batch_wait_s,
    )
    config = uvicorn.Config(build_app(server), host=args.host, port=args.port, log_level="warning", access_log=False)
    web = uvicorn.Server(config)
    if args.parent_pid:

        def stop() -> None:
            web.should_exit = True

        _watch_parent(args.parent_pid, stop)
    log.info("serving %s as %r at http://%s:%d/v1", args.model, server.name, args.host, args.port)
    try:
        web.run()
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
