"""Any skillgym env served as an `OpenEnv <https://github.com/meta-pytorch/OpenEnv>`_ environment server.

    skillgym serve-env codebase-explorer-v0 --protocol openenv --port 8000

OpenEnv clients (``openenv.GenericEnvClient``, TRL's OpenEnv integration, ...) connect a
WebSocket to ``/ws`` and exchange ``{"type": "reset" | "step" | "state" | "close", "data": ...}``
messages; the server answers ``{"type": "observation" | "state" | "error", "data": ...}``,
the wire format of OpenEnv's own ``http_server`` (written here from that protocol, so the
server needs no OpenEnv install and no second copy of the env's tools or grader).

One WebSocket connection is one session with its own :class:`~skillgym.SkillEnv` and so its
own sandbox, started on the first ``reset``; the session and its sandbox are closed when the
client closes or goes away (disconnect, or a missed WebSocket ping), and on server shutdown.

Messages:
- ``reset``: ``data`` may hold ``task_id``, ``split``, ``seed`` (and OpenEnv's
  ``episode_id``, recorded). Observation: ``messages`` (the chat so far: system and user),
  ``tools`` (OpenAI schemas), ``task_id``.
- ``step``: ``data = {"message": <assistant turn>}``: raw model text (``<tool_call>`` markup)
  or an OpenAI assistant message dict. Observation: ``messages`` (this turn and its tool
  results); ``reward`` (the grader's score on the final step, else 0.0), ``done``;
  ``metadata`` carries ``terminated``, ``truncated`` and ``reward_components``.
- ``state``: the session's id, env, task, step count and whether the episode is over.
Errors carry OpenEnv's codes (``INVALID_JSON``, ``UNKNOWN_TYPE``, ``VALIDATION_ERROR``,
``EXECUTION_ERROR``, ``CAPACITY_REACHED``, ``SESSION_ERROR``) and ``PAYLOAD_TOO_LARGE``; a
bad message never ends the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

import skillgym
from skillgym.env import SkillEnv

MAX_MESSAGE_BYTES = 1_000_000
"""Largest client message handled (a step carries one model turn; more is a broken client)."""


class ResetData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task_id: str | None = None
    split: str | None = None
    seed: int | None = Field(default=None, ge=0)
    episode_id: str | None = Field(default=None, max_length=255)


class StepData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str | dict[str, Any]
    """One assistant turn: raw text with ``<tool_call>`` markup, or an OpenAI message dict."""


class ProtocolError(Exception):
    """A client mistake, answered as an error message with ``code``."""

    def __init__(self, code: str, message: str, **extra: Any):
        super().__init__(message)
        self.code = code
        self.extra = extra


@dataclass
class _Session:
    id: str
    env: SkillEnv | None = None
    messages: int = 0
    steps: int = 0
    done: bool = False
    task_id: str | None = None
    episode_id: str | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class OpenEnvServer:
    """The Starlette app serving env ``env_id`` over OpenEnv's WebSocket protocol.

    Args:
        env_id: Any id :func:`skillgym.make` accepts (``name-vN``, ``skill:NAME``, ``module:function``).
        env_kwargs: Options for :func:`skillgym.make` (e.g. ``split``, ``sandbox``).
        max_sessions: Concurrent sessions (each holds a sandbox); more are refused with
            ``CAPACITY_REACHED``.
        max_message_bytes: Larger messages are refused with ``PAYLOAD_TOO_LARGE``.
    """

    def __init__(
        self,
        env_id: str,
        env_kwargs: dict[str, Any] | None = None,
        *,
        max_sessions: int = 16,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ):
        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs or {})
        self.spec = skillgym.make_spec(env_id, **self.env_kwargs)  # fails now on a bad id, starts nothing
        self.max_sessions = max_sessions
        self.max_message_bytes = max_message_bytes
        self.sessions: dict[str, _Session] = {}
        self.sessions_opened = 0
        self.sessions_closed = 0

    # -- the app ---------------------------------------------------------------------------------
    def app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.routing import Route, WebSocketRoute

        @contextlib.asynccontextmanager
        async def lifespan(_app: Any):
            try:
                yield
            finally:  # sessions still open at shutdown: close their sandboxes
                await asyncio.gather(*(self._close(s) for s in list(self.sessions.values())))

        return Starlette(
            routes=[
                Route("/health", self._health, methods=["GET"]),
                Route("/metadata", self._metadata, methods=["GET"]),
                Route("/schema", self._schema, methods=["GET"]),
                Route("/reset", self._stateless, methods=["POST"]),
                Route("/step", self._stateless, methods=["POST"]),
                WebSocketRoute("/ws", self._ws),
            ],
            lifespan=lifespan,
        )

    async def _health(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        return JSONResponse({"status": "healthy", "env_id": self.env_id, "sessions": len(self.sessions)})

    async def _metadata(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        return JSONResponse(
            {
                "name": self.env_id,
                "description": self.spec.skill.description,
                "version": skillgym.__version__ if hasattr(skillgym, "__version__") else None,
            }
        )

    async def _schema(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        observation = {
            "type": "object",
            "properties": {"messages": {"type": "array"}, "tools": {"type": "array"}, "task_id": {"type": "string"}},
        }
        return JSONResponse(
            {
                "action": StepData.model_json_schema(),
                "reset": ResetData.model_json_schema(),
                "observation": observation,
                "state": {"type": "object"},
            }
        )

    async def _stateless(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        return JSONResponse(
            {
                "error": {
                    "code": "SESSION_ERROR",
                    "message": (
                        "this server keeps episodes in sessions: connect a WebSocket to /ws (one session and sandbox "
                        "per connection) and send reset/step messages there"
                    ),
                }
            },
            status_code=400,
        )

    # -- one session per WebSocket ------------------------------------------------------------
    async def _ws(self, websocket: Any) -> None:
        from starlette.websockets import WebSocketDisconnect

        await websocket.accept()
        asked = websocket.query_params.get("session_id")
        if asked is not None:  # sessions are bound to their connection; none can be re-attached
            await _send_error(
                websocket,
                ProtocolError(
                    "SESSION_ERROR",
                    f"unknown session_id {asked!r}: a session "
                    "lives as long as its WebSocket; connect without session_id",
                ),
            )
            await websocket.close()
            return
        if len(self.sessions) >= self.max_sessions:
            await _send_error(
                websocket,
                ProtocolError(
                    "CAPACITY_REACHED",
                    f"{len(self.sessions)} of {self.max_sessions} sessions are in use; retry later",
                    active_sessions=len(self.sessions),
                    max_sessions=self.max_sessions,
                ),
            )
            await websocket.close()
            return
        session = _Session(id=uuid.uuid4().hex)
        self.sessions[session.id] = session
        self.sessions_opened += 1
        try:
            while True:
                raw = await websocket.receive()
                if raw["type"] == "websocket.disconnect":
                    break
                text = raw.get("text")
                if text is None and raw.get("bytes") is not None:
                    text = raw["bytes"].decode("utf-8", errors="replace")
                try:
                    reply, closing = await self._handle(session, text or "")
                except ProtocolError as exc:
                    await _send_error(websocket, exc)
                    continue
                except Exception as exc:  # the env failed (not the client): say so, keep the session
                    await _send_error(websocket, ProtocolError("EXECUTION_ERROR", f"{type(exc).__name__}: {exc}"))
                    continue
                if closing:
                    break
                await websocket.send_text(json.dumps(reply, ensure_ascii=False, default=str))
        except WebSocketDisconnect:
            pass
        finally:
            await self._close(session)
            with contextlib.suppress(Exception):
                await websocket.close()

    async def _handle(self, session: _Session, text: str) -> tuple[dict[str, Any], bool]:
        if len(text.encode("utf-8", errors="replace")) > self.max_message_bytes:
            raise ProtocolError(
                "PAYLOAD_TOO_LARGE",
                f"a message may hold {self.max_message_bytes} bytes; "
                f"this one holds {len(text.encode('utf-8', errors='replace'))}",
            )
        try:
            message = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProtocolError("INVALID_JSON", f"Invalid JSON: {exc}") from None
        if not isinstance(message, dict):
            raise ProtocolError(
                "VALIDATION_ERROR", f"a message is a JSON object with a 'type'; got {type(message).__name__}"
            )
        kind = message.get("type")
        data = message.get("data", {})
        if data is None:
            data = {}
        unknown = sorted(set(message) - {"type", "data"})
        if unknown:
            raise ProtocolError(
                "VALIDATION_ERROR", f"unknown message field(s) {unknown}; a message has 'type' and 'data'"
            )
        if kind not in ("reset", "step", "state", "close"):
            raise ProtocolError("UNKNOWN_TYPE", f"Unknown message type: {kind!r}; use reset, step, state or close")
        if kind == "close":
            return {}, True
        if not isinstance(data, dict):
            raise ProtocolError(
                "VALIDATION_ERROR", f"'data' of a {kind} message is an object; got {type(data).__name__}"
            )
        async with session.lock:
            if kind == "reset":
                return await self._reset(session, _validated(ResetData, data, kind)), False
            if kind == "step":
                return await self._step(session, _validated(StepData, data, kind)), False
            return {"type": "state", "data": self._state(session)}, False

    async def _reset(self, session: _Session, data: ResetData) -> dict[str, Any]:
        if session.env is None:
            session.env = await asyncio.to_thread(skillgym.make, self.env_id, **self.env_kwargs)
        options: dict[str, Any] = {}
        if data.task_id is not None:
            options["task_id"] = data.task_id
        if data.split is not None:
            options["split"] = data.split
        try:
            messages, info = await asyncio.to_thread(session.env.reset, seed=data.seed, options=options)
        except (KeyError, ValueError) as exc:  # unknown task id or split: the client's mistake
            raise ProtocolError("VALIDATION_ERROR", f"reset: {exc}") from None
        session.messages, session.steps, session.done = len(messages), 0, False
        session.task_id, session.episode_id = info.get("task_id"), data.episode_id
        observation = {"messages": messages, "tools": info.get("tools", []), "task_id": info.get("task_id")}
        # What a policy reads from reset's info besides the chat (e.g. a scripted expert's task metadata).
        metadata = {
            "session_id": session.id,
            "env_id": self.env_id,
            "task_id": info.get("task_id"),
            "task_metadata": info.get("task_metadata", {}),
        }
        return {
            "type": "observation",
            "data": {"observation": observation, "reward": None, "done": False, "metadata": metadata},
        }

    async def _step(self, session: _Session, data: StepData) -> dict[str, Any]:
        if session.env is None or session.task_id is None:
            raise ProtocolError("SESSION_ERROR", 'step before reset: send {"type": "reset"} first')
        if session.done:
            raise ProtocolError("SESSION_ERROR", 'the episode is over: send {"type": "reset"} to start another')
        messages, reward, terminated, truncated, info = await asyncio.to_thread(session.env.step, data.message)
        new = messages[session.messages :]
        session.messages, session.steps = len(messages), session.steps + 1
        session.done = bool(terminated or truncated)
        metadata = {
            "terminated": bool(terminated),
            "truncated": bool(truncated),
            "reward_components": info.get("reward_components", {}),
            "truncation_reason": info.get("truncation_reason"),
        }
        return {
            "type": "observation",
            "data": {
                "observation": {"messages": new},
                "reward": float(reward),
                "done": session.done,
                "metadata": metadata,
            },
        }

    def _state(self, session: _Session) -> dict[str, Any]:
        return {
            "session_id": session.id,
            "env_id": self.env_id,
            "task_id": session.task_id,
            "episode_id": session.episode_id,
            "step_count": session.steps,
            "done": session.done,
        }

    async def _close(self, session: _Session) -> None:
        if self.sessions.pop(session.id, None) is None:
            return
        env, session.env = session.env, None
        if env is not None:
            await asyncio.to_thread(env.close)
        self.sessions_closed += 1


def _validated(model: type[BaseModel], data: dict[str, Any], kind: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'data'}: {e['msg']}" for e in exc.errors())
        raise ProtocolError("VALIDATION_ERROR", f"bad {kind} data: {problems}") from None


async def _send_error(websocket: Any, error: ProtocolError) -> None:
    payload = {"type": "error", "data": {"message": str(error), "code": error.code, **error.extra}}
    await websocket.send_text(json.dumps(payload, ensure_ascii=False))


def serve(server: OpenEnvServer, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run ``server`` in the foreground (uvicorn) until interrupted."""
    import uvicorn

    uvicorn.run(
        server.app(),
        host=host,
        port=port,
        log_level="warning",
        ws_max_size=4 * server.max_message_bytes,
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
    )


class ServerThread:
    """``server`` on a loopback port in a background thread (tests, benchmarks)::

    with ServerThread(OpenEnvServer("codebase-explorer-v0")) as running:
        url = running.base_url
    """

    def __init__(self, server: OpenEnvServer, host: str = "127.0.0.1", port: int = 0):
        self.server = server
        self.host = host
        self.port = port
        self._uvicorn: Any = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ServerThread:
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.server.app(),
            log_level="warning",
            ws_max_size=4 * self.server.max_message_bytes,
            ws_ping_interval=5.0,
            ws_ping_timeout=5.0,
        )
        self._uvicorn = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._uvicorn.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._uvicorn.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"the OpenEnv server for {self.server.env_id} did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=60)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
