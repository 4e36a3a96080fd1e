"""A policy backed by any OpenAI-compatible chat-completions endpoint.

OpenAI, vLLM, ``transformers serve``, SGLang, llama.cpp and the like: the policy POSTs the
conversation and the env's tool schemas to ``{base_url}/chat/completions`` and returns the
assistant message as the action, plus ``usage`` and — when the server returns them —
``token_ids`` (vLLM: request ``return_token_ids``; the completion's ids are recorded, the
prompt's go to ``prompt_token_ids``) and per-token ``logprobs``.

It speaks HTTP through httpx directly (no SDK retries underneath ours), retries 408, 429,
5xx, timeouts and connection errors with exponential backoff and jitter (honouring
``Retry-After``), and fails with :class:`OpenAIPolicyError` naming the URL, the attempts and
the last answer once ``max_retries`` retries are spent. Other 4xx answers fail at once.

Conversations are sent in the strict shape every server accepts (:func:`to_openai_messages`):
the env's note after an unparsable turn is a ``tool`` message that answers no call, which
OpenAI rejects, so it is sent as a ``user`` message, and an assistant turn whose calls were
not all answered has them folded back into its text as ``<tool_call>`` markup.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import random
import ssl
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx

from skillgym.policies.base import Action, Policy
from skillgym.types import Message

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_RETRY_STATUSES = frozenset({408, 409, 429})


class OpenAIPolicyError(RuntimeError):
    """A chat-completions request failed for good; ``status`` is the last HTTP status, if any."""

    def __init__(self, message: str, *, status: int | None = None, attempts: int = 0):
        super().__init__(message)
        self.status = status
        self.attempts = attempts


class _Retryable(Exception):
    def __init__(self, reason: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(reason)
        self.reason, self.status, self.retry_after = reason, status, retry_after


class OpenAIPolicy(Policy):
    """Chat completions over HTTP, sync (``act``) and truly async (``aact``).

    ``sampling`` is merged into every request body (``temperature``, ``max_tokens``,
    ``top_p``, ``seed``, ``stop``, vLLM's ``skip_special_tokens`` ...). ``max_concurrency``
    bounds the requests in flight from this instance: across threads for ``act``, and per
    event loop for ``aact`` (normally one loop). ``max_retries`` is the number of retries
    after the first try.
    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        sampling: dict[str, Any] | None = None,
        *,
        max_concurrency: int = 64,
        timeout: float = 120.0,
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        send_tools: bool = True,
        send_reasoning: bool = True,
        logprobs: bool = False,
        return_token_ids: bool = False,
        headers: dict[str, str] | None = None,
    ):
        # Kept so a pickled policy (e.g. sent to a Ray actor) is rebuilt with fresh clients.
        self._init_args = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, got {max_retries}")
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key and self.base_url == DEFAULT_BASE_URL:
            raise ValueError("no API key for api.openai.com: set OPENAI_API_KEY or pass api_key=")
        self.url = self.base_url + "/chat/completions"
        self.sampling = dict(sampling or {})
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.send_tools = send_tools
        self.send_reasoning = send_reasoning
        self.logprobs = logprobs
        self.return_token_ids = return_token_ids
        self.policy_id = f"openai:{model}"
        # Local servers accept any key; sending one keeps proxies that demand a header happy.
        self._headers = {"Authorization": f"Bearer {key or 'EMPTY'}", **(headers or {})}
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, 10.0))
        self._sync_slots = _SyncSlots(max_concurrency, self._client_options)
        # Async clients belong to one event loop: one set of slots per loop.
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _AsyncSlots] = weakref.WeakKeyDictionary()
        self._rng = random.Random()
        self._ssl: ssl.SSLContext | None = None
        self._ssl_lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return dict(self._init_args)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    # -- requests ----------------------------------------------------------------------------
    def request_body(self, observation: list[Message], info: dict[str, Any]) -> dict[str, Any]:
        """The JSON body sent for this turn."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": to_openai_messages(observation, send_reasoning=self.send_reasoning),
        }
        tools = info.get("tools") or []
        if self.send_tools and tools:
            body["tools"] = tools
        if self.logprobs:
            body["logprobs"] = True
        if self.return_token_ids:
            body["return_token_ids"] = True
        body.update(self.sampling)
        return body

    def act(self, observation: list[Message], info: dict[str, Any]) -> Action:
        body = self.request_body(observation, info)
        last: _Retryable | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self._backoff(attempt, last))
            try:
                with self._sync_slots.client() as client:
                    response = client.post(self.url, json=body, headers=self._headers)
                return self._action(response, attempt + 1)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                last = _Retryable(f"{type(exc).__name__}: {exc}")
            except _Retryable as exc:
                last = exc
        raise self._exhausted(last)

    async def aact(self, observation: list[Message], info: dict[str, Any]) -> Action:
        body = self.request_body(observation, info)
        slots = self._async_slots()
        last: _Retryable | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                await asyncio.sleep(self._backoff(attempt, last))
            try:
                async with slots.client() as client:
                    response = await client.post(self.url, json=body, headers=self._headers)
                return self._action(response, attempt + 1)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                last = _Retryable(f"{type(exc).__name__}: {exc}")
            except _Retryable as exc:
                last = exc
        raise self._exhausted(last)

    def _async_slots(self) -> _AsyncSlots:
        loop = asyncio.get_running_loop()
        slots = self._async.get(loop)
        if slots is None:
            slots = self._async[loop] = _AsyncSlots(self.max_concurrency, self._client_options)
        return slots

    def _client_options(self) -> dict[str, Any]:
        # Building an SSL context loads the CA bundle (~20 ms); do it once, not once per client.
        with self._ssl_lock:
            if self._ssl is None:
                import certifi

                self._ssl = ssl.create_default_context(cafile=certifi.where())
        return {"limits": httpx.Limits(max_connections=1, max_keepalive_connections=1), "timeout": self._timeout,
                "verify": self._ssl}

    def _backoff(self, attempt: int, last: _Retryable | None) -> float:
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        delay = ceiling / 2 + self._rng.uniform(0, ceiling / 2)  # "equal jitter": spread, never zero
        if last is not None and last.retry_after is not None:
            delay = max(delay, min(last.retry_after, self.backoff_max))
        return delay

    def _exhausted(self, last: _Retryable | None) -> OpenAIPolicyError:
        attempts = self.max_retries + 1
        reason = last.reason if last else "no attempt was made"
        return OpenAIPolicyError(
            f"POST {self.url} (model {self.model!r}) failed after {attempts} attempt(s); last error: {reason}. "
            "Check that the server is up and serves this model; raise max_retries or timeout for a busy server.",
            status=last.status if last else None,
            attempts=attempts,
        )

    def _action(self, response: httpx.Response, attempts: int) -> dict[str, Any]:
        status = response.status_code
        if status in _RETRY_STATUSES or status >= 500:
            raise _Retryable(f"HTTP {status}: {_snippet(response.text)}", status, _retry_after(response))
        if status >= 400:
            hint = {
                401: "check OPENAI_API_KEY or api_key=",
                404: f"check the base URL ({self.base_url}) and that model {self.model!r} is served",
            }.get(status, "the server rejected the request; see its message")
            raise OpenAIPolicyError(
                f"POST {self.url} (model {self.model!r}) answered HTTP {status}: {_snippet(response.text)}; {hint}",
                status=status,
                attempts=attempts,
            )
        try:
            data = response.json()
            choice = data["choices"][0]
            message = choice["message"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise OpenAIPolicyError(
                f"POST {self.url} answered HTTP {status} with a body that is not a chat completion "
                f"({type(exc).__name__}: {exc}): {_snippet(response.text)}",
                status=status,
                attempts=attempts,
            ) from None
        return response_to_action(data, choice, message)

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        self._sync_slots.close()
        self._async = weakref.WeakKeyDictionary()  # async clients die with their loops

    async def aclose(self) -> None:
        """Close this event loop's async clients (call before the loop ends to avoid warnings)."""
        slots = self._async.pop(asyncio.get_running_loop(), None)
        if slots is not None:
            await slots.aclose()


# -- connection slots -----------------------------------------------------------------------------
# One single-connection client per concurrency slot, handed out through a queue. The queue is
# the concurrency limit, and it keeps httpx fast: httpcore's pool scans every connection on
# each request, which at 128 connections cost ~20 ms of CPU a request.

class _Slots:
    def __init__(self, size: int, make: Callable[[], Any], free: Any):
        self._make, self._free = make, free  # LIFO: the last client used has a warm connection
        for _ in range(size):
            free.put_nowait(None)  # clients are made on first use
        self._made: list[Any] = []

    def _ready(self, client: Any) -> Any:
        if client is None:
            client = self._make()
            self._made.append(client)
        return client


class _SyncSlots(_Slots):
    def __init__(self, size: int, options: Callable[[], dict[str, Any]]):
        super().__init__(size, lambda: httpx.Client(**options()), queue.LifoQueue())

    @contextmanager
    def client(self) -> Iterator[httpx.Client]:
        client = self._free.get()
        try:
            client = self._ready(client)
            yield client
        finally:
            self._free.put_nowait(client)

    def close(self) -> None:
        for client in self._made:
            client.close()


class _AsyncSlots(_Slots):
    def __init__(self, size: int, options: Callable[[], dict[str, Any]]):
        super().__init__(size, lambda: httpx.AsyncClient(**options()), asyncio.LifoQueue())

    @asynccontextmanager
    async def client(self) -> AsyncIterator[httpx.AsyncClient]:
        client = await self._free.get()
        try:
            client = self._ready(client)
            yield client
        finally:
            self._free.put_nowait(client)

    async def aclose(self) -> None:
        for client in self._made:
            await client.aclose()


def response_to_action(data: dict[str, Any], choice: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    """A chat-completion choice as an action dict (assistant message plus recorded extras)."""
    action: dict[str, Any] = {"role": "assistant", "content": _text(message.get("content"))}
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if reasoning:
        action["reasoning_content"] = reasoning
    if message.get("tool_calls"):
        action["tool_calls"] = message["tool_calls"]
    usage = data.get("usage") or {}
    action["usage"] = {
        "prompt_tokens": int(usage.get("prompt_tokens") or 0),
        "completion_tokens": int(usage.get("completion_tokens") or 0),
    }
    if choice.get("token_ids") is not None:
        action["token_ids"] = list(choice["token_ids"])
    prompt_ids = data.get("prompt_token_ids", choice.get("prompt_token_ids"))
    if prompt_ids is not None:
        action["prompt_token_ids"] = list(prompt_ids)
    entries = (choice.get("logprobs") or {}).get("content") or []
    if entries:
        action["logprobs"] = [float(e["logprob"]) for e in entries]
    if choice.get("finish_reason") is not None:
        action["finish_reason"] = choice["finish_reason"]
    return action


# -- the strict conversation shape --------------------------------------------------------------

def to_openai_messages(messages: list[Message], *, send_reasoning: bool = True) -> list[dict[str, Any]]:
    """The conversation in the shape strict servers accept.

    * Only standard fields are sent (the env's extra ``name`` on tool messages is dropped);
      ``reasoning_content`` of assistant turns is kept when ``send_reasoning`` (vLLM and
      Qwen3 templates read it) and dropped otherwise.
    * An assistant turn keeps structured ``tool_calls`` only when every call is well formed
      and answered by the ``tool`` messages right after it; otherwise its calls are written
      back into its text as ``<tool_call>`` markup, so the model still sees what it wrote.
    * A ``tool`` message that answers no kept call (the env's note after an unparsable turn)
      becomes a ``user`` message with the same text.
    """
    out: list[dict[str, Any]] = []
    i = 0
    while i < len(messages):
        message = messages[i]
        role = message.get("role")
        if role != "assistant":
            if role == "tool":
                out.append({"role": "user", "content": _text(message.get("content"))})
            else:
                clean = {"role": role, "content": message.get("content") or ""}
                if message.get("name"):
                    clean["name"] = message["name"]
                out.append(clean)
            i += 1
            continue
        end = i + 1
        while end < len(messages) and messages[end].get("role") == "tool":
            end += 1
        answered = [str(m.get("tool_call_id")) for m in messages[i + 1 : end]]
        assistant, kept = _assistant(message, answered, send_reasoning)
        out.append(assistant)
        for tool in messages[i + 1 : end]:
            call_id = str(tool.get("tool_call_id"))
            if call_id in kept:
                kept.discard(call_id)  # one answer per call
                out.append({"role": "tool", "tool_call_id": call_id, "content": _text(tool.get("content"))})
            else:
                out.append({"role": "user", "content": _text(tool.get("content"))})
        i = end
    return out


def _assistant(message: Message, answered: list[str], send_reasoning: bool) -> tuple[dict[str, Any], set[str]]:
    content = _text(message.get("content"))
    out: dict[str, Any] = {"role": "assistant", "content": content}
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if send_reasoning and isinstance(reasoning, str) and reasoning:
        out["reasoning_content"] = reasoning
    raw_calls = message.get("tool_calls") or []
    if not isinstance(raw_calls, list):
        raw_calls = [raw_calls]
    calls = [_clean_call(c) for c in raw_calls]
    ids = [c["id"] for c in calls if c is not None]
    if calls and None not in calls and len(set(ids)) == len(ids) and set(ids) <= set(answered):
        out["tool_calls"] = calls
        return out, set(ids)
    if raw_calls:
        markup = "\n".join(_call_markup(c) for c in raw_calls)
        out["content"] = f"{content}\n{markup}" if content else markup
    return out, set()


def _clean_call(call: Any) -> dict[str, Any] | None:
    if not isinstance(call, dict):
        return None
    fn = call.get("function") if isinstance(call.get("function"), dict) else None
    if fn is None or not isinstance(fn.get("name"), str) or not call.get("id"):
        return None
    arguments = fn.get("arguments")
    if arguments is None:
        arguments = "{}"
    elif not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    else:
        try:
            json.loads(arguments)
        except json.JSONDecodeError:
            return None  # strict servers reject unparsable arguments in history
    return {"id": str(call["id"]), "type": "function", "function": {"name": fn["name"], "arguments": arguments}}


def _call_markup(call: Any) -> str:
    fn = call.get("function", call) if isinstance(call, dict) else {}
    fn = fn if isinstance(fn, dict) else {}
    arguments = fn.get("arguments", {})
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False, default=str)
    return f'<tool_call>\n{{"name": {json.dumps(str(fn.get("name", "")))}, "arguments": {arguments}}}\n</tool_call>'


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


def _snippet(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
