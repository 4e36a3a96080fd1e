"""Structured (JSON) outputs from a chat model, with repair and a disk cache.

Task generation and the rubric judge ask a model for JSON that must fit a pydantic schema.
Models get this wrong in two ways — text that is not JSON (fences, prose, truncation) and
JSON that breaks the schema — and both are usually fixed by showing the model its mistake.
:meth:`ChatClient.complete_json` does exactly that, a bounded number of times, and then
fails with an error that names the schema, the attempts and the last problem.

Every completion is cached on disk under a hash of the request (model, messages, sampling),
so an interrupted run that is started again replays finished calls instead of paying for
them twice. HTTP, retries and backoff are the core client's
(:class:`~skillgym.openai_client.OpenAIClient`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from skillgym.io import atomic_write_text
from skillgym.openai_client import OpenAIClient, OpenAIError, RetryPolicy
from skillgym.policies.spec import parse_policy_spec
from skillgym.types import Message

T = TypeVar("T", bound=BaseModel)

_FENCE_RE = re.compile(r"```(?:json)?\s*\n(.*?)```", re.DOTALL)


LLMError = OpenAIError
"""A request failed for good (after retries) or the server answered nonsense."""


class StructuredOutputError(LLMError):
    """The model's replies never fit the schema, even after repair attempts."""

    def __init__(self, message: str, *, attempts: int, last_output: str, last_error: str):
        super().__init__(message)
        self.attempts, self.last_output, self.last_error = attempts, last_output, last_error


def extract_json(text: str) -> Any:
    """The JSON value in ``text``: the whole text, else the inside of a code fence, else the
    value starting at the first ``{`` or ``[`` (prose around it is ignored). A truncated
    value is an error, never silently replaced by a nested fragment of it."""
    stripped = text.strip()
    fence = _FENCE_RE.search(stripped)
    if fence:
        stripped = fence.group(1).strip()
    try:
        return json.loads(stripped)
    except json.JSONDecodeError as first_error:
        starts = [i for i in (stripped.find("{"), stripped.find("[")) if i >= 0]
        if not starts:
            raise first_error
        value, _ = json.JSONDecoder().raw_decode(stripped, min(starts))
        return value


class ChatClient:
    """Text and JSON answers from any OpenAI-compatible server, cached on disk.

    Args:
        model: The model name sent to the server.
        base_url: The endpoint; default ``$OPENAI_BASE_URL`` (required: there is no default server).
        api_key: Default ``$OPENAI_API_KEY``.
        temperature: Default sampling temperature.
        max_tokens: Cap on each reply (None: the server's).
        timeout: Seconds one request may take.
        max_retries: Retries of a failed request (see :class:`~skillgym.openai_client.RetryPolicy`).
        backoff_base: Ceiling of the first pause between tries, in seconds.
        cache_dir: Folder of cached completions (None: no cache).
        json_mode: Ask for ``response_format: json_object`` (dropped for servers that refuse it).
    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        temperature: float = 0.7,
        max_tokens: int | None = 4096,
        timeout: float = 180.0,
        max_retries: int = 4,
        backoff_base: float = 0.5,
        cache_dir: str | Path | None = None,
        json_mode: bool = True,
    ):
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "").rstrip("/")
        if not self.base_url:
            raise ValueError(
                f"no endpoint for model {model!r}: set OPENAI_BASE_URL or write the spec as 'openai:{model}@http://host:port/v1'"
            )
        self.temperature, self.max_tokens = temperature, max_tokens
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.json_mode = json_mode
        self.cache_hits = 0
        self.client = OpenAIClient(
            self.base_url,
            api_key,
            timeout=timeout,
            max_concurrency=1,
            retry=RetryPolicy(max_retries=max_retries, backoff_base=backoff_base),
        )

    @property
    def http_calls(self) -> int:
        """HTTP requests sent so far, retries included (cache hits send none)."""
        return self.client.http_calls

    @property
    def backoff_base(self) -> float:
        return self.client.retry.backoff_base

    @backoff_base.setter
    def backoff_base(self, value: float) -> None:
        self.client.retry.backoff_base = value

    @classmethod
    def from_spec(cls, spec: str, **kwargs: Any) -> ChatClient:
        """From the policy-spec syntax (``openai:MODEL[@URL][?temperature=..&max_tokens=..]``;
        a bare ``MODEL`` means ``openai:MODEL``), so teachers and judges are named like policies."""
        text = spec.strip()
        parsed = parse_policy_spec(text if text.startswith("openai:") else f"openai:{text}")
        if parsed.kind != "openai" or not parsed.model:
            raise ValueError(f"model spec {spec!r}: expected 'openai:MODEL[@http://host:port/v1]'")
        for key in ("temperature", "max_tokens"):
            if key in parsed.sampling:
                kwargs.setdefault(key, parsed.sampling[key])
        return cls(parsed.model, parsed.base_url, **kwargs)

    @property
    def label(self) -> str:
        return f"{self.model}@{self.base_url}"

    # -- plain completions -------------------------------------------------------------------
    def chat(self, messages: list[Message], *, temperature: float | None = None) -> str:
        """The assistant's text for ``messages`` (from the cache when this exact request ran before)."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature if temperature is None else temperature,
        }
        if self.max_tokens:
            body["max_tokens"] = self.max_tokens
        if self.json_mode:
            body["response_format"] = {"type": "json_object"}
        key = _request_key(body)
        cached = self._cache_get(key)
        if cached is not None:
            self.cache_hits += 1
            return cached
        text = self._post(body)
        self._cache_put(key, body, text)
        return text

    def _post(self, body: dict[str, Any]) -> str:
        try:
            data = self.client.complete(body)
        except OpenAIError as exc:
            if exc.status == 400 and "response_format" in body and "response_format" in exc.body:
                # Some servers do not know JSON mode; the prompt asks for JSON anyway.
                self.json_mode = False
                return self._post({k: v for k, v in body.items() if k != "response_format"})
            raise
        return data["choices"][0]["message"].get("content") or ""

    # -- structured outputs ------------------------------------------------------------------
    def complete_json(
        self,
        messages: list[Message],
        schema: type[T],
        *,
        max_repairs: int = 3,
        check: Callable[[T], None] | None = None,
        temperature: float | None = None,
    ) -> tuple[T, int]:
        """Ask for JSON fitting ``schema``; returns (the validated object, attempts used).

        A reply that is not JSON, breaks the schema, or fails ``check`` (which raises
        ``ValueError`` with a message for the model) is shown back to the model with the
        error, up to ``max_repairs`` times; then :class:`StructuredOutputError`.
        """
        conversation = list(messages)
        output, error = "", ""
        for attempt in range(1, max_repairs + 2):
            output = self.chat(conversation, temperature=temperature)
            try:
                value = schema.model_validate(extract_json(output))
                if check is not None:
                    check(value)
                return value, attempt
            except json.JSONDecodeError as exc:
                error = f"the reply is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
            except ValidationError as exc:
                error = "the JSON does not match the schema: " + _validation_summary(exc)
            except ValueError as exc:
                error = str(exc)
            conversation = conversation + [
                {"role": "assistant", "content": output},
                {"role": "user", "content": repair_prompt(error, schema)},
            ]
        raise StructuredOutputError(
            f"{self.label}: no reply fit {schema.__name__} after {max_repairs + 1} attempts; "
            f"last problem: {error}. Last reply began: {output[:200]!r}",
            attempts=max_repairs + 1,
            last_output=output,
            last_error=error,
        )

    # -- cache ---------------------------------------------------------------------------------
    def _cache_file(self, key: str) -> Path | None:
        return self.cache_dir / key[:2] / f"{key}.json" if self.cache_dir else None

    def _cache_get(self, key: str) -> str | None:
        file = self._cache_file(key)
        if file is None or not file.is_file():
            return None
        try:
            return json.loads(file.read_text(encoding="utf-8"))["response"]
        except (ValueError, KeyError):
            return None  # a damaged entry is a miss, and is overwritten on the next call

    def _cache_put(self, key: str, body: dict[str, Any], text: str) -> None:
        file = self._cache_file(key)
        if file is None:
            return
        file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(file, json.dumps({"request": body, "response": text}, ensure_ascii=False))

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def repair_prompt(error: str, schema: type[BaseModel]) -> str:
    return (
        f"Your last reply could not be used: {error}.\n"
        "Reply again with only one JSON object (no prose, no code fences) that matches this JSON schema:\n"
        + json.dumps(schema.model_json_schema(), ensure_ascii=False)
    )


def _validation_summary(exc: ValidationError, limit: int = 6) -> str:
    parts = []
    for err in exc.errors()[:limit]:
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        parts.append(f"field {where}: {err['msg']}")
    more = len(exc.errors()) - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _request_key(body: dict[str, Any]) -> str:
    # The endpoint URL is left out on purpose: the same model served elsewhere answers alike.
    payload = {k: v for k, v in body.items() if k != "response_format"}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
