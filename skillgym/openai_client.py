"""The one client for OpenAI-compatible chat-completions endpoints (OpenAI, vLLM,
``transformers serve``, SGLang, llama.cpp, ...), used by the OpenAI policy, task generation
and the rubric judge.

It speaks HTTP directly (no SDK retries underneath ours): httpx for the sync face
(:meth:`OpenAIClient.complete`), aiohttp for the async face (:meth:`OpenAIClient.acomplete`).
One :class:`RetryPolicy`, applied by one loop of tries, decides for both: 408, 409, 429, 5xx,
timeouts and connection errors are retried with exponential backoff and jitter (honouring
``Retry-After``); other 4xx answers fail at once; both faces read the answer through one
function. Every failure is an :class:`OpenAIError` that names the URL, the model, the attempts
and the last answer.

Requests in flight are bounded by ``max_concurrency``. Sync: one single-connection httpx
client per slot, handed out through a queue across threads (httpcore's pool scans every
connection on each request, which at 128 connections cost ~20 ms of CPU a request). Async:
one aiohttp session per event loop behind a semaphore. The async face is aiohttp, not httpx,
because the rollout driver is bound by its one interpreter lock: httpx's async client costs
about 1.7 ms of CPU per request there, aiohttp about 0.5 ms, and at 32+ concurrent episodes
that difference is most of the framework's overhead (``python -m skillgym.benchmarks.rollout``).
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
import urllib.parse
import urllib.request
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import aiohttp
import httpx
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DEFAULT_BASE_URL", "OpenAIClient", "OpenAIError", "RetryPolicy"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRY_STATUSES = frozenset({408, 409, 429})
# TimeoutError covers aiohttp's timeouts (asyncio.TimeoutError is TimeoutError since 3.11).
_TRANSPORT_ERRORS = (httpx.TimeoutException, httpx.TransportError, aiohttp.ClientError, TimeoutError)


class OpenAIError(RuntimeError):
    """A chat-completions request failed for good.

    Attributes:
        status: The last HTTP status, or None when no answer came (connection error, timeout).
        attempts: Requests made, retries included.
        body: The start of the last answer's body ("" when none came).
    """

    def __init__(self, message: str, *, status: int | None = None, attempts: int = 0, body: str = ""):
        super().__init__(message)
        self.status = status
        self.attempts = attempts
        self.body = body


class RetryPolicy(BaseModel):
    """When and how long to wait before trying a request again."""

    model_config = ConfigDict(validate_assignment=True)

    max_retries: int = Field(default=5, ge=0, description="Retries after the first try.")
    backoff_base: float = Field(
        default=0.5, ge=0, description="Ceiling of the first pause, in seconds; doubles per retry."
    )
    backoff_max: float = Field(default=30.0, ge=0, description="Longest pause, and the cap on a server's Retry-After.")

    def delay(self, retry: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry).

        Args:
            retry: Which retry this is, from 1.
            retry_after: The server's ``Retry-After`` in seconds, if it sent one.
            rng: Source of jitter (default: the ``random`` module's).

        Returns:
            A pause in [ceiling / 2, ceiling] ("equal jitter": spread out, never zero), at least
            ``retry_after`` (capped at ``backoff_max``).
        """
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (retry - 1))
        delay = ceiling / 2 + (rng or random).uniform(0, ceiling / 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_max))
        return delay


class _Retryable(Exception):
    def __init__(self, reason: str, status: int | None = None, retry_after: float | None = None, body: str = ""):
        super().__init__(reason)
        self.reason, self.status, self.retry_after, self.body = reason, status, retry_after, body


class _Tries:
    """The tries of one request under a :class:`RetryPolicy`: iterating gives the pause before
    each try (0 before the first); :meth:`recording` keeps a retryable failure and lets the
    next try start, while any other error propagates."""

    def __init__(self, policy: RetryPolicy, rng: random.Random):
        self.policy, self.rng = policy, rng
        self.number = 0  # tries started
        self.last: _Retryable | None = None

    def __iter__(self) -> Iterator[float]:
        for number in range(1, self.policy.max_retries + 2):
            self.number = number
            retry_after = self.last.retry_after if self.last else None
            yield self.policy.delay(self.number - 1, retry_after, self.rng) if self.number > 1 else 0.0

    @contextmanager
    def recording(self) -> Iterator[None]:
        try:
            yield
        except aiohttp.InvalidURL as exc:  # trying again cannot help
            raise OpenAIError(f"invalid URL {exc}: check the base URL") from None
        except _TRANSPORT_ERRORS as exc:
            self.last = _Retryable(_transport_reason(exc))
        except _Retryable as exc:
            self.last = exc


class OpenAIClient:
    """Chat completions against ``{base_url}/chat/completions``, sync and async.

    Args:
        base_url: The endpoint (``http://host:port/v1``); default ``$OPENAI_BASE_URL``, else OpenAI's.
        api_key: Sent as a bearer token; default ``$OPENAI_API_KEY``. Local servers accept any
            key, and sending one keeps proxies that demand the header happy.
        timeout: Seconds one request may take (connecting: at most 10).
        retry: The retry policy (default: :class:`RetryPolicy`'s defaults).
        max_concurrency: Requests in flight at once from this client.
        headers: Extra request headers.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 120.0,
        retry: RetryPolicy | None = None,
        max_concurrency: int = 64,
        headers: dict[str, str] | None = None,
    ):
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key and self.base_url == DEFAULT_BASE_URL:
            raise ValueError("no API key for api.openai.com: set OPENAI_API_KEY or pass api_key=")
        self.url = self.base_url + "/chat/completions"
        self.retry = retry or RetryPolicy()
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.http_calls = 0
        """HTTP requests sent so far, retries included."""
        self._headers = {"Authorization": f"Bearer {key or 'EMPTY'}", **(headers or {})}
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, 10.0))
        self._sync = _SyncSlots(max_concurrency, self._client_options)
        # An aiohttp session belongs to one event loop: one per loop.
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _AsyncSession] = weakref.WeakKeyDictionary()
        self._rng = random.Random()
        self._ssl: ssl.SSLContext | None = None
        self._lock = threading.Lock()

    # -- requests ------------------------------------------------------------------------------
    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` and return the chat completion, retrying as the policy says.

        Args:
            body: The request body (``model``, ``messages``, sampling parameters, ...).

        Returns:
            The response JSON; ``choices[0]["message"]`` is checked to exist.

        Raises:
            OpenAIError: A non-retryable answer, a body that is not a chat completion, or
                retries spent.
        """
        tries = _Tries(self.retry, self._rng)
        for pause in tries:
            if pause:
                time.sleep(pause)
            with tries.recording(), self._sync.client() as client:
                self._count()
                response = client.post(self.url, json=body, headers=self._headers)
                return self._completion(response.status_code, response.content, response.headers, body, tries.number)
        raise self._exhausted(body, tries)

    async def acomplete(self, body: dict[str, Any]) -> dict[str, Any]:
        """The async face of :meth:`complete` (same retries, same errors); never blocks the loop."""
        session = await self._async_session()
        tries = _Tries(self.retry, self._rng)
        for pause in tries:
            if pause:
                await asyncio.sleep(pause)
            with tries.recording():
                async with session.limit:
                    self._count()
                    async with session.http.post(
                        self.url, json=body, headers=self._headers, proxy=session.proxy
                    ) as response:
                        raw = await response.read()
                return self._completion(response.status, raw, response.headers, body, tries.number)
        raise self._exhausted(body, tries)

    async def awarm(self, connections: int | None = None) -> None:
        """Open this event loop's connections now, so the first requests do not pay for it.

        Builds the loop's session and sends ``GET {base_url}/models`` on up to ``connections``
        connections at once (default ``max_concurrency``). Errors are ignored: warming is an
        optimization, and real requests report real failures. Not counted in ``http_calls``.

        Args:
            connections: How many connections to open (capped at ``max_concurrency``).
        """
        session = await self._async_session()
        count = min(self.max_concurrency, connections or self.max_concurrency)

        async def one() -> None:
            try:
                async with (
                    session.limit,
                    session.http.get(self.base_url + "/models", headers=self._headers, proxy=session.proxy) as response,
                ):
                    await response.read()
            except (aiohttp.ClientError, TimeoutError, ValueError):
                pass

        # All at once: no connection is free yet when each starts, so each opens its own.
        await asyncio.gather(*(one() for _ in range(max(1, count))))

    def _count(self) -> None:
        with self._lock:
            self.http_calls += 1

    def _completion(
        self, status: int, raw: bytes, headers: Mapping[str, str], body: dict[str, Any], attempts: int
    ) -> dict[str, Any]:
        """The parsed completion, or :class:`_Retryable` / :class:`OpenAIError` saying why not
        (one reading of an answer for both faces)."""
        model = body.get("model")
        if status in RETRY_STATUSES or status >= 500:
            text = _decode(raw)
            raise _Retryable(f"HTTP {status}: {snippet(text)}", status, _retry_after(headers), text)
        if status >= 400:
            text = _decode(raw)
            hint = {
                401: "check OPENAI_API_KEY or api_key=",
                404: f"check the base URL ({self.base_url}) and that model {model!r} is served",
            }.get(status, "the server rejected the request; see its message")
            if status in (400, 422) and _has_images(body):
                hint += (
                    "; the request carried images (image_url parts): check that the model takes image input, "
                    "or turn images off (images=false)"
                )
            raise OpenAIError(
                f"POST {self.url} (model {model!r}) answered HTTP {status}: {snippet(text)}; {hint}",
                status=status,
                attempts=attempts,
                body=text[:2000],
            )
        try:
            data = json.loads(raw)
            data["choices"][0]["message"]  # noqa: B018 - the shape check itself
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            text = _decode(raw)
            raise OpenAIError(
                f"POST {self.url} answered HTTP {status} with a body that is not a chat completion "
                f"({type(exc).__name__}: {exc}): {snippet(text)}",
                status=status,
                attempts=attempts,
                body=text[:2000],
            ) from None
        return data

    def _exhausted(self, body: dict[str, Any], tries: _Tries) -> OpenAIError:
        attempts, last = tries.number, tries.last
        reason = last.reason if last else "no attempt was made"
        return OpenAIError(
            f"POST {self.url} (model {body.get('model')!r}) failed after {attempts} attempt(s); last error: {reason}. "
            "Check that the server is up and serves this model; raise max_retries or timeout for a busy server.",
            status=last.status if last else None,
            attempts=attempts,
            body=(last.body if last else "")[:2000],
        )

    # -- connections ---------------------------------------------------------------------------
    async def _async_session(self) -> _AsyncSession:
        loop = asyncio.get_running_loop()
        session = self._async.get(loop)
        if session is None:
            session = self._async[loop] = _AsyncSession(
                self.max_concurrency, self.timeout, self._ssl_context(), self.base_url
            )
            await session.guard.__anext__()
        return session

    def _ssl_context(self) -> ssl.SSLContext:
        # Building an SSL context loads the CA bundle (~20 ms); do it once, not once per client.
        with self._lock:
            if self._ssl is None:
                import certifi

                self._ssl = ssl.create_default_context(cafile=certifi.where())
            return self._ssl

    def _client_options(self) -> dict[str, Any]:
        return {
            "limits": httpx.Limits(max_connections=1, max_keepalive_connections=1),
            "timeout": self._timeout,
            "verify": self._ssl_context(),
        }

    def close(self) -> None:
        """Close the sync connections (async ones close with their event loops; see :meth:`aclose`)."""
        self._sync.close()
        self._async = weakref.WeakKeyDictionary()

    async def aclose(self) -> None:
        """Close this event loop's async connections now (``asyncio.run`` also closes them when
        its loop ends)."""
        session = self._async.pop(asyncio.get_running_loop(), None)
        if session is not None:
            await session.guard.aclose()


class _AsyncSession:
    """One event loop's aiohttp session; ``limit`` bounds the requests in flight.

    The semaphore, not the connector, makes requests wait, so waiting for a free connection
    does not count against a request's timeout. ``guard`` is an async generator, started once,
    whose ``finally`` closes the session: the loop tracks running async generators and closes
    them at shutdown (``loop.shutdown_asyncgens``, which ``asyncio.run`` calls), so a session
    whose owner never called :meth:`OpenAIClient.aclose` is still closed before its loop ends
    instead of warning "Unclosed client session" when collected.
    """

    def __init__(self, size: int, timeout: float, ssl_context: ssl.SSLContext, base_url: str):
        self.limit = asyncio.Semaphore(size)
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=size, ssl=ssl_context),
            timeout=aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 10.0)),
        )
        # The environment's proxy (as httpx, the sync face, uses it), looked up once here:
        # aiohttp's trust_env would look it up (and ~/.netrc) in a thread on every request.
        self.proxy = _env_proxy(base_url)
        self.guard = self._close_at_shutdown()

    async def _close_at_shutdown(self) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await self.http.close()


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


def snippet(text: str, limit: int = 300) -> str:
    """``text`` on one line, cut to ``limit`` characters (for error messages)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _has_images(body: dict[str, Any]) -> bool:
    """Whether a request sends ``image_url`` content parts (a text-only server rejects them)."""
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and any(isinstance(p, dict) and p.get("type") == "image_url" for p in content):
            return True
    return False


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def _transport_reason(exc: BaseException) -> str:
    """Why no answer came, named alike for both faces (httpx and aiohttp say it differently)."""
    if isinstance(exc, (httpx.TimeoutException, TimeoutError)):
        kind = (
            "ConnectTimeout" if isinstance(exc, (httpx.ConnectTimeout, aiohttp.ConnectionTimeoutError)) else "Timeout"
        )
        return f"{kind}: no answer in time ({type(exc).__name__}{': ' + str(exc) if str(exc) else ''})"
    if isinstance(exc, (httpx.ConnectError, aiohttp.ClientConnectorError)):
        return f"ConnectError: {exc}"
    return f"{type(exc).__name__}: {exc}"


def _env_proxy(url: str) -> str | None:
    """The proxy ``$HTTP(S)_PROXY`` names for ``url``, unless ``$NO_PROXY`` exempts its host."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname is None or urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies().get(parts.scheme)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
