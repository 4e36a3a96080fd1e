"""A real OpenAI-compatible chat-completions server on loopback, answered by a script.

For tests and benchmarks of everything that talks to an LLM over HTTP: the server is a
Starlette app under uvicorn in a background thread (its own event loop), so requests cross
a real socket, real HTTP parsing and real JSON. Waiting (``delay_s``) is an ``asyncio.sleep``,
so hundreds of concurrent requests cost almost nothing beyond the delay.

    with ScriptedOpenAIServer(ReplayResponder.for_env(env), delay_s=0.2) as server:
        policy = OpenAIPolicy("expert", base_url=server.base_url)

Fault injection: ``fail_first`` requests are answered with ``fail_status`` (429/500...,
with ``Retry-After`` when ``retry_after`` is set), the first ``malformed_arguments`` replies
that carry tool calls get arguments that are not valid JSON, and ``strict`` makes the server
reject conversations OpenAI would reject (a ``tool`` message that answers no call, calls left
unanswered) with HTTP 400.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import json
import multiprocessing
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from skillgym.policies.base import Policy
from skillgym.toolcalls import parse_turn, render_tool_call_text
from skillgym.types import Message

Responder = Callable[[dict[str, Any]], "dict[str, Any] | ErrorReply | Awaitable[dict[str, Any] | ErrorReply]"]


@dataclass
class ErrorReply:
    """What a responder returns to answer with an HTTP error instead of a completion."""

    status: int
    message: str = "scripted error"
    headers: dict[str, str] = field(default_factory=dict)


# -- building responses ------------------------------------------------------------------------


def tool_call(name: str, arguments: dict[str, Any] | str, call_id: str | None = None) -> dict[str, Any]:
    """One OpenAI tool call (``arguments`` as given if a string, else JSON-encoded)."""
    args = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return {
        "id": call_id or f"call_{uuid.uuid4().hex[:12]}",
        "type": "function",
        "function": {"name": name, "arguments": args},
    }


def assistant_message(
    content: str = "", tool_calls: list[dict[str, Any]] | None = None, reasoning: str | None = None
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    if reasoning:
        message["reasoning_content"] = reasoning
    return message


def approx_usage(request: dict[str, Any], message: dict[str, Any]) -> dict[str, int]:
    """A tokenizer-free usage estimate (~4 characters a token), so clients have usage to record."""
    prompt = len(json.dumps(request.get("messages", []), ensure_ascii=False)) // 4 + 1
    completion = len(json.dumps(message, ensure_ascii=False)) // 4 + 1
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def chat_completion(
    message: dict[str, Any],
    *,
    model: str = "scripted",
    usage: dict[str, int] | None = None,
    finish_reason: str | None = None,
    choice_extra: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A full ``chat.completion`` response around one assistant message. ``choice_extra``
    adds fields to the choice (e.g. vLLM's ``token_ids``, ``logprobs``), ``extra`` to the top
    level (e.g. ``prompt_token_ids``)."""
    choice = {
        "index": 0,
        "message": message,
        "finish_reason": finish_reason or ("tool_calls" if message.get("tool_calls") else "stop"),
        **(choice_extra or {}),
    }
    response = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:16]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        **extra,
    }
    if usage is not None:
        response["usage"] = usage
    return response


# -- the server --------------------------------------------------------------------------------


class ScriptedOpenAIServer:
    """``POST /v1/chat/completions`` answered by ``respond(request_json)``; ``GET /v1/models``.

    ``respond`` may be sync (keep it fast: it runs on the server's event loop) or async, and
    returns a full completion (has ``choices``), a bare assistant message (wrapped, with an
    estimated ``usage``), or an :class:`ErrorReply`. A responder that raises yields HTTP 500
    with the traceback in the message. Counters: ``request_count``, ``in_flight``,
    ``max_in_flight``, ``failures_injected``; ``requests`` keeps every request body when
    ``record`` is on.

    ``process=True`` serves from a forked child process instead of a thread. Use it for
    throughput benchmarks: in one process the server and the client contend for the GIL
    and every socket call can wait a switch interval for it. The child inherits
    ``respond`` by fork (no pickling); the counters live in shared memory, and ``requests``
    is not recorded.
    """

    def __init__(
        self,
        respond: Responder,
        delay_s: float = 0.0,
        *,
        fail_first: int = 0,
        fail_status: int = 500,
        retry_after: float | None = None,
        malformed_arguments: int = 0,
        strict: bool = True,
        models: Sequence[str] = ("scripted",),
        record: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        process: bool = False,
    ):
        self.respond = respond
        self.delay_s = delay_s
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.retry_after = retry_after
        self.malformed_arguments = malformed_arguments
        self.strict = strict
        self.models = list(models)
        self.record = record and not process
        self.host = host
        self.port = port
        self.process = process
        self.requests: list[dict[str, Any]] = []
        # request_count, in_flight, max_in_flight, failures_injected, malformed replies sent:
        # shared memory when the server runs in a child process.
        self._counts: Any = multiprocessing.get_context("fork").RawArray("q", 5) if process else [0] * 5
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._child: Any = None
        self._running = False

    # -- lifecycle ---------------------------------------------------------------------------
    request_count = property(lambda self: self._counts[0], lambda self, v: self._counts.__setitem__(0, v))
    in_flight = property(lambda self: self._counts[1], lambda self, v: self._counts.__setitem__(1, v))
    max_in_flight = property(lambda self: self._counts[2], lambda self, v: self._counts.__setitem__(2, v))
    failures_injected = property(lambda self: self._counts[3], lambda self, v: self._counts.__setitem__(3, v))

    @property
    def base_url(self) -> str:
        if not self._running:
            raise RuntimeError("the server is not running: use it as a context manager or call start()")
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> ScriptedOpenAIServer:
        import uvicorn

        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted sockets only then, and
        # without it every response waits ~40 ms on Nagle + delayed ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(2048)  # connections queue from now on, even before the server loop runs
        self.port = sock.getsockname()[1]
        if self.process:
            self._child = multiprocessing.get_context("fork").Process(
                target=self._serve_child, args=(sock,), daemon=True, name=f"scripted-openai-{self.port}"
            )
            self._child.start()
            sock.close()
            self._running = True
            self._wait_until_answering()
            return self
        config = uvicorn.Config(
            self._app(),
            log_level="warning",
            access_log=False,
            lifespan="off",
            backlog=2048,
            timeout_keep_alive=120,  # pooled client connections must not be dropped between turns
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"scripted-openai-{self.port}"
        )
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the scripted OpenAI server did not start on {self.host}:{self.port}")
            time.sleep(0.005)
        self._running = True
        return self

    def _serve_child(self, sock: socket.socket) -> None:
        import uvicorn

        config = uvicorn.Config(
            self._app(), log_level="warning", access_log=False, lifespan="off", backlog=2048, timeout_keep_alive=120
        )
        uvicorn.Server(config).run(sockets=[sock])

    def _wait_until_answering(self) -> None:
        import httpx

        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{self.base_url}/models", timeout=1.0).raise_for_status()
                return
            except httpx.HTTPError:
                if not self._child.is_alive() or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"the scripted OpenAI server process did not answer on port {self.port}"
                    ) from None
                time.sleep(0.02)

    def stop(self) -> None:
        self._running = False
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._thread = None
        if self._child is not None:
            self._child.terminate()
            self._child.join(timeout=5)
            if self._child.is_alive():
                self._child.kill()
                self._child.join(timeout=5)
            self._child = None

    def __enter__(self) -> ScriptedOpenAIServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- the app -----------------------------------------------------------------------------
    def _app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.routing import Route

        return Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/models", self._list_models, methods=["GET"]),
            ]
        )

    async def _list_models(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        data = [{"id": m, "object": "model", "created": 0, "owned_by": "skillgym"} for m in self.models]
        return JSONResponse({"object": "list", "data": data})

    async def _chat(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        arrived = time.perf_counter()
        counts = self._counts
        counts[0] += 1
        counts[1] += 1
        counts[2] = max(counts[2], counts[1])
        try:
            try:
                body = await request.json()
            except ValueError as exc:
                return _error(400, f"the request body is not JSON: {exc}")
            if self.record:
                self.requests.append(body)
            if counts[3] < self.fail_first:
                counts[3] += 1
                headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}
                return _error(self.fail_status, f"injected failure {counts[3]}/{self.fail_first}", headers)
            problem = _validate(body) if self.strict else None
            if problem:
                return _error(400, problem)
            try:
                reply = self.respond(body)
                if inspect.isawaitable(reply):
                    reply = await reply
            except Exception:
                reply = ErrorReply(500, "the responder raised:\n" + traceback.format_exc(limit=8))
            if self.delay_s:
                # The answer leaves delay_s after the request came in, the time spent reading and
                # answering it included: the server's latency is delay_s, which benchmarks take as
                # the ideal (sleeping delay_s on top counted this server's CPU as the client's).
                await asyncio.sleep(max(0.0, self.delay_s - (time.perf_counter() - arrived)))
            if isinstance(reply, ErrorReply):
                return _error(reply.status, reply.message, reply.headers)
            if "choices" not in reply:
                reply = chat_completion(reply, model=body.get("model", "scripted"), usage=approx_usage(body, reply))
            if counts[4] < self.malformed_arguments and reply["choices"][0]["message"].get("tool_calls"):
                counts[4] += 1
                reply = _malform(reply)
            if body.get("stream"):
                return _stream(reply)
            return JSONResponse(reply)
        finally:
            counts[1] -= 1


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Any:
    from starlette.responses import JSONResponse

    kind = "rate_limit_error" if status == 429 else "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse(
        {"error": {"message": message, "type": kind, "code": status}}, status_code=status, headers=headers
    )


def _stream(reply: dict[str, Any]) -> Any:
    """The completion as server-sent ``chat.completion.chunk`` events (for clients that ask
    ``stream: true``, e.g. verifiers' interception proxy): the whole message in one delta,
    then the finish reason and usage, then ``[DONE]``."""
    from starlette.responses import StreamingResponse

    choice = reply["choices"][0]
    delta = {k: v for k, v in choice["message"].items() if v is not None}
    if delta.get("tool_calls"):
        delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(delta["tool_calls"])]
    head = {k: reply[k] for k in ("id", "created", "model") if k in reply}
    chunks = [
        {**head, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
        {
            **head,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {}, "finish_reason": choice.get("finish_reason")}],
            **({"usage": reply["usage"]} if "usage" in reply else {}),
        },
    ]
    events = [f"data: {json.dumps(c, ensure_ascii=False)}\n\n" for c in chunks] + ["data: [DONE]\n\n"]
    return StreamingResponse(iter(events), media_type="text/event-stream")


def _malform(reply: dict[str, Any]) -> dict[str, Any]:
    reply = copy.deepcopy(reply)
    for call in reply["choices"][0]["message"]["tool_calls"]:
        call["function"]["arguments"] = call["function"]["arguments"].rstrip("}") + ', "oops'
    return reply


def _validate(body: dict[str, Any]) -> str | None:
    """What OpenAI would reject in a conversation: the checks strict servers make."""
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "you must provide a model parameter"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty array"
    pending: set[str] = set()
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("system", "developer", "user", "assistant", "tool"):
            return f"messages[{i}]: invalid role {role!r}"
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in pending:
                return (
                    f"messages[{i}]: messages with role 'tool' must be a response to a preceding message "
                    f"with 'tool_calls' (no call has id {call_id!r})"
                )
            pending.discard(call_id)
            continue
        if pending:
            return (
                f"messages[{i}]: an assistant message with 'tool_calls' must be followed by tool messages "
                f"responding to each 'tool_call_id'; missing: {sorted(pending)}"
            )
        if role == "assistant":
            for k, call in enumerate(message.get("tool_calls") or []):
                try:
                    json.loads(call["function"]["arguments"])
                    pending.add(call["id"])
                except (KeyError, TypeError, ValueError):
                    return f"messages[{i}].tool_calls[{k}]: needs an id and JSON-string function.arguments"
    return None


# -- replaying a scripted expert -----------------------------------------------------------------


class ReplayResponder:
    """Answers each request with what the env's scripted expert would say next.

    The server is stateless, so every request rebuilds the expert's episode from the
    conversation: a fresh expert is reset with the messages before the first assistant turn
    and shown every earlier prefix (its answers discarded), which replays any internal state
    of a deterministic expert; its next action is the reply. ``mode`` says how the reply
    carries tool calls: ``text`` (``<tool_call>`` markup in ``content``), ``structured``
    (``tool_calls`` with the ids the env itself would assign, ``call_<turn>_<i>``, so
    trajectories match the in-process expert id for id) or ``auto`` (as the expert wrote it).
    ``task_info(prompt)`` may supply the ``task_id``/``task_metadata`` an expert reads from
    ``info``; :meth:`for_env` builds it from an env's task source.
    """

    def __init__(
        self,
        expert_factory: Callable[[], Policy],
        *,
        mode: Literal["auto", "text", "structured"] = "auto",
        task_info: Callable[[str], dict[str, Any]] | None = None,
    ):
        self.expert_factory = expert_factory
        self.mode = mode
        self.task_info = task_info

    @classmethod
    def for_env(cls, env: Any, mode: Literal["auto", "text", "structured"] = "auto") -> ReplayResponder:
        spec = env.env_spec
        if spec.expert is None:
            raise ValueError(f"{spec.id} has no scripted expert to replay")
        index: dict[str, dict[str, Any]] = {}

        def task_info(prompt: str) -> dict[str, Any]:
            if not index:  # built on first use: task sources may be large
                index.update(_tasks_by_prompt(spec))
            return dict(index.get(prompt, {}))

        return cls(spec.expert, mode=mode, task_info=task_info)

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        messages = _restore_tool_names(request.get("messages", []))
        info: dict[str, Any] = {"tools": request.get("tools", [])}
        first_user = next((m for m in messages if m.get("role") == "user"), None)
        if self.task_info is not None and first_user is not None:
            info.update(self.task_info(str(first_user.get("content", ""))))
        turns = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
        expert = self.expert_factory()
        expert.reset(messages[: turns[0]] if turns else messages, info)
        for index in turns:
            expert.act(messages[:index], info)
        action = expert.act(messages, info)
        message = self._message(action, turn=len(turns) + 1)
        return chat_completion(message, model=request.get("model", "scripted"), usage=approx_usage(request, message))

    def _message(self, action: Any, turn: int) -> dict[str, Any]:
        if self.mode == "auto":
            if isinstance(action, str):
                return assistant_message(action)
            return {k: v for k, v in action.items() if k in ("role", "content", "tool_calls", "reasoning_content")}
        if self.mode == "text":
            if isinstance(action, str):
                return assistant_message(action)
            parsed = parse_turn(action)
            parts = [parsed.content] if parsed.content else []
            parts += [render_tool_call_text(c.name or "", c.arguments or {}) for c in parsed.calls]
            return assistant_message("\n".join(parts), reasoning=parsed.reasoning)
        parsed = parse_turn(action, call_id_prefix=f"call_{turn}")
        calls = [tool_call(c.name or "", c.arguments if c.arguments is not None else c.raw, c.id) for c in parsed.calls]
        return assistant_message(parsed.content, calls, parsed.reasoning)


def _tasks_by_prompt(spec: Any) -> dict[str, dict[str, Any]]:
    """The ``info`` fields of reset() for every task, keyed by its prompt."""
    out: dict[str, dict[str, Any]] = {}
    for split in ("train", "validation", "test"):
        try:
            tasks = spec.tasks.tasks(split)
        except (ValueError, KeyError):  # a source may not have every split
            continue
        for task in tasks:
            out.setdefault(
                task.prompt,
                {"task_id": task.id, "task_metadata": dict(task.metadata), "env_id": spec.id, "split": task.split},
            )
    return out


def _restore_tool_names(messages: list[Message]) -> list[Message]:
    """Give tool messages back the ``name`` of the call they answer (clients drop it)."""
    names: dict[str, str] = {}
    out = []
    for message in messages:
        for call in message.get("tool_calls") or []:
            names[str(call.get("id"))] = call.get("function", {}).get("name")
        if message.get("role") == "tool" and "name" not in message and str(message.get("tool_call_id")) in names:
            message = {**message, "name": names[str(message["tool_call_id"])]}
        out.append(message)
    return out
