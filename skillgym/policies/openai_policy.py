"""A policy backed by any OpenAI-compatible chat-completions endpoint.

OpenAI, vLLM, ``transformers serve``, SGLang, llama.cpp and the like: the policy POSTs the
conversation and the env's tool schemas through the core's :class:`~skillgym.openai_client.OpenAIClient`
and returns the assistant message as the action, plus ``usage`` and — when the server
returns them — ``token_ids`` (vLLM: request ``return_token_ids``; the completion's ids are
recorded, the prompt's go to ``prompt_token_ids``) and per-token ``logprobs``. Retries,
backoff and errors are the client's (:class:`OpenAIPolicyError` is its
:class:`~skillgym.openai_client.OpenAIError`).

Conversations are sent in the strict shape every server accepts (:func:`to_openai_messages`):
the env's note after an unparsable turn is a ``tool`` message that answers no call, which
OpenAI rejects, so it is sent as a ``user`` message, and an assistant turn whose calls were
not all answered has them folded back into its text as ``<tool_call>`` markup.

Images. A tool may return images beside its text (``images`` on a ``tool`` message, see
:class:`~skillgym.types.ImagePart`). With ``images=True`` (spec: ``openai:MODEL?images=true``)
they are sent to a multimodal model: the chat API takes text only in ``tool`` messages, so
each turn's tool messages keep their text and are followed by one ``user`` message holding
the images as ``image_url`` parts (base64 ``data:`` URLs). Off by default: a text-only
server rejects image parts, and the tool's text says what a text-only model needs.
"""

from __future__ import annotations

import json
from typing import Any

from skillgym.openai_client import OpenAIClient, OpenAIError, RetryPolicy
from skillgym.policies.base import Action, Policy
from skillgym.toolcalls import render_openai_call_text
from skillgym.types import ImagePart, Message

__all__ = ["OpenAIPolicy", "OpenAIPolicyError", "response_to_action", "to_openai_messages"]

OpenAIPolicyError = OpenAIError
"""A chat-completions request failed for good; ``status`` is the last HTTP status, if any."""


class OpenAIPolicy(Policy):
    """Chat completions over HTTP, sync (``act``) and truly async (``aact``).

    Args:
        model: The model name sent to the server.
        base_url: The endpoint; default ``$OPENAI_BASE_URL``, else OpenAI's.
        api_key: Default ``$OPENAI_API_KEY``.
        sampling: Merged into every request body (``temperature``, ``max_tokens``, ``top_p``,
            ``seed``, ``stop``, vLLM's ``skip_special_tokens`` ...).
        max_concurrency: Requests in flight from this instance: across threads for ``act``,
            and per event loop for ``aact`` (normally one loop).
        timeout: Seconds one request may take.
        max_retries: Retries after the first try (see :class:`~skillgym.openai_client.RetryPolicy`).
        backoff_base: Ceiling of the first pause between tries, in seconds.
        backoff_max: Longest pause.
        send_tools: Send the env's tool schemas (off for servers without tool support).
        send_reasoning: Send earlier turns' ``reasoning_content``.
        logprobs: Ask for per-token log-probabilities.
        return_token_ids: Ask a vLLM server for token ids.
        headers: Extra request headers.
        images: Send the images tools return (screenshots, plots) to the model as ``image_url``
            parts; for multimodal models only. A spec's ``?images=true`` sets it.
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
        images: bool = False,
    ):
        # Kept so a pickled policy (e.g. sent to a Ray actor) is rebuilt with fresh connections.
        self._init_args = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        if max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, got {max_retries}")
        self.client = OpenAIClient(
            base_url,
            api_key,
            timeout=timeout,
            max_concurrency=max_concurrency,
            headers=headers,
            retry=RetryPolicy(max_retries=max_retries, backoff_base=backoff_base, backoff_max=backoff_max),
        )
        self.model = model
        self.base_url, self.url = self.client.base_url, self.client.url
        self.sampling = dict(sampling or {})
        self.images = images
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.send_tools = send_tools
        self.send_reasoning = send_reasoning
        self.logprobs = logprobs
        self.return_token_ids = return_token_ids
        self.policy_id = f"openai:{model}"

    def __getstate__(self) -> dict[str, Any]:
        return dict(self._init_args)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    # -- requests ----------------------------------------------------------------------------
    def request_body(self, observation: list[Message], info: dict[str, Any]) -> dict[str, Any]:
        """The JSON body sent for this turn."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": to_openai_messages(observation, send_reasoning=self.send_reasoning, images=self.images),
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
        return _action(self.client.complete(self.request_body(observation, info)))

    async def aact(self, observation: list[Message], info: dict[str, Any]) -> Action:
        return _action(await self.client.acomplete(self.request_body(observation, info)))

    # -- lifecycle ---------------------------------------------------------------------------
    async def awarm(self, concurrency: int) -> None:
        """Open this event loop's connections before the first episodes (the rollout worker
        calls it while its clock is stopped), so they do not pay for it.

        Args:
            concurrency: Episodes that will run at once on this loop (connections to open).
        """
        await self.client.awarm(concurrency)

    def close(self) -> None:
        self.client.close()

    async def aclose(self) -> None:
        """Close this event loop's async connections (call before the loop ends to avoid warnings)."""
        await self.client.aclose()


def _action(data: dict[str, Any]) -> dict[str, Any]:
    choice = data["choices"][0]
    return response_to_action(data, choice, choice["message"])


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


def to_openai_messages(
    messages: list[Message], *, send_reasoning: bool = True, images: bool = False
) -> list[dict[str, Any]]:
    """The conversation in the shape strict servers accept.

    * Only standard fields are sent (the env's extra ``name`` on tool messages is dropped);
      ``reasoning_content`` of assistant turns is kept when ``send_reasoning`` (vLLM and
      Qwen3 templates read it) and dropped otherwise.
    * An assistant turn keeps structured ``tool_calls`` only when every call is well formed
      and answered by the ``tool`` messages right after it; otherwise its calls are written
      back into its text as ``<tool_call>`` markup, so the model still sees what it wrote.
    * A ``tool`` message that answers no kept call (the env's note after an unparsable turn)
      becomes a ``user`` message with the same text.
    * With ``images``, the images of a turn's tool messages (those that still have their
      bytes) follow its last tool message as one ``user`` message of ``image_url`` parts,
      introduced by a line naming the tool and the image; without, images are not sent.
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
        if images:
            shown = _image_message(messages[i + 1 : end])
            if shown is not None:
                out.append(shown)
        i = end
    return out


def _image_message(tool_messages: list[Message]) -> dict[str, Any] | None:
    """One ``user`` message with the images of a turn's tool messages, or None when none has bytes.

    Each image is introduced by a text part naming the tool and the file, so a model that
    gets several (a screenshot at 375 px and one at 1280 px) can tell them apart."""
    parts: list[dict[str, Any]] = []
    for tool in tool_messages:
        for raw in tool.get("images") or []:
            try:
                image = ImagePart.model_validate(raw)
            except ValueError:
                continue
            url = image.data_url()
            if url is None:  # a stored record keeps only the reference; nothing to show
                continue
            parts.append(
                {"type": "text", "text": f"Image returned by {tool.get('name') or 'the tool'}: {image.placeholder()}"}
            )
            parts.append({"type": "image_url", "image_url": {"url": url}})
    return {"role": "user", "content": parts} if parts else None


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
        markup = "\n".join(render_openai_call_text(c) for c in raw_calls)
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


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)
