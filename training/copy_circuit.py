"""A copy circuit built into the tiny student's initial weights.

A subagent on codebase-explorer copies all the time: the symbol in the question goes into
the command, the fact in the tool output goes into the answer. A transformer copies an
arbitrary span with an *induction* circuit: one head moves "which token came before me"
into each position, a head in the next layer finds the earlier position whose predecessor
is the current token and predicts the token found there. Trained from scratch, such heads
form only after millions of tokens; within the main job's minutes they never did
(EXPERIMENTS.md §7), and the student garbled every symbol it copied.

So the tiny student starts with the circuit in place, written into an ordinary
``Qwen3ForCausalLM`` (same architecture and files, so vLLM and ``transformers serve``
load it as any Qwen3). Everything else (which command a question needs, where a span
starts and ends, when to stop) is still learned by SFT, and so is every weight here: the
construction is an initialization, not a frozen part.

Layout of the residual stream of width ``H`` (``T`` = token dimensions, even):

* ``[0, T)``: token identity. Embeddings are random Gaussian vectors here and zero elsewhere,
  so the tied output head reads this block and copying a token's vector predicts that token,
  including tokens the student never saw in training (test-split symbols).
* ``[T, 2T)``: the previous token's identity, written by layer 0.
* ``[2T, 3T)``, with ``match_tokens=2`` only: the token two positions back, written by layer 0.
* after the last block: a constant 1, which lets a head compute a query and key that do not
  depend on the token: pure position.

Layer 0, heads 0 and 1 (previous-token heads): query and key are built from the constant
dimension in the fastest-rotating RoPE pairs, with the key turned one step ahead, so the
score peaks at distance 1. Each head carries half of the token block into the previous-token
block.

Layer 1, heads 0 and 1 (induction heads): the query is the current token, the key the
previous-token block, compared in the slowest-rotating RoPE pairs (nearly position-free
over the sequence lengths here). The value is the token at the matched position, written
back into the token block. With ``match_tokens=2`` (layer 0's heads 2 and 3 then look two
steps back) the induction heads also compare the previous token with each position's
second one back, so a span with a repeated piece (``FILENAME_LENGTH``) continues from the
right occurrence. Layer 1's heads 2 and 3 get the same copying value path with their
addressing left to training: that is how the student learns where a span *starts* (the
symbol after the question's wording), which no earlier occurrence can point to.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class CopyCircuitSpec(BaseModel):
    """Strengths of the built-in copy circuit (defaults measured in EXPERIMENTS.md §9)."""

    model_config = ConfigDict(extra="forbid")

    embedding_scale: float = Field(
        default=0.15, gt=0, description="Std of the token vectors: sets how confident a copy is at initialization."
    )
    copy_gain: float = Field(
        default=6.0, gt=0, description="Weight with which an induction head writes the copied token."
    )
    position_pairs: int = Field(default=6, ge=1, description="Fast RoPE pairs the previous-token heads use.")
    position_gain: float = Field(default=3.0, gt=0, description="q/k norm weight on those pairs (sharpness).")
    content_gain: float = Field(default=3.0, gt=0, description="q/k norm weight on the content pairs (sharpness).")
    span: int = Field(
        default=256, ge=16, description="Sequence length over which a content pair may rotate at most half a radian."
    )
    match_tokens: int = Field(
        default=1,
        ge=1,
        le=2,
        description="Tokens the induction heads match: 1 (the current token) or 2 (also the one before it; "
        "fewer wrong continuations inside spans with repeated pieces, at the cost of a narrower token block).",
    )
    addressing_heads: bool = Field(
        default=True, description="Give layer 1's heads 2 and 3 the copying value path, with learned addressing."
    )


def _check(config: Any, spec: CopyCircuitSpec) -> tuple[int, list[int]]:
    """(token dimensions, content RoPE pairs), or a ValueError saying what the shape lacks."""
    hidden, head_dim = config.hidden_size, config.head_dim
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    if config.num_hidden_layers < 2:
        raise ValueError("copy_circuit needs at least 2 layers (tiny.num_hidden_layers)")
    if heads < 2:
        raise ValueError("copy_circuit needs at least 2 attention heads (tiny.num_attention_heads)")
    if kv_heads != heads:
        raise ValueError(
            "copy_circuit writes each head's key and value: set tiny.num_key_value_heads = num_attention_heads"
        )
    if not config.tie_word_embeddings:
        raise ValueError(
            "copy_circuit relies on the output head reading the token vectors: set tiny.tie_word_embeddings"
        )
    if (spec.match_tokens == 2 or spec.addressing_heads) and heads < 4:
        raise ValueError(
            "copy_circuit.match_tokens=2 and copy_circuit.addressing_heads need at least 4 attention heads "
            "(tiny.num_attention_heads)"
        )
    blocks = spec.match_tokens + 1  # the token, its predecessor(s)
    tokens = min(2 * head_dim, (hidden - 1) // blocks) // 2 * 2
    if tokens < 16:
        raise ValueError(f"tiny.hidden_size {hidden} leaves only {tokens} token dimensions for the copy circuit")
    if spec.position_pairs > head_dim // 4:
        raise ValueError(f"copy_circuit.position_pairs must be at most head_dim/4 = {head_dim // 4}")
    inv_freq = _inverse_frequencies(config)
    content = [i for i, f in enumerate(inv_freq) if f * spec.span < 0.5]
    if len(content) < 8:
        raise ValueError(
            f"only {len(content)} RoPE pairs turn less than half a radian over {spec.span} tokens; "
            "raise tiny.rope_theta (e.g. 1e6) or tiny.head_dim"
        )
    return tokens, content


def _inverse_frequencies(config: Any) -> list[float]:
    theta = (getattr(config, "rope_parameters", None) or {}).get("rope_theta", getattr(config, "rope_theta", 10_000.0))
    dim = config.head_dim
    return [theta ** (-(2 * i) / dim) for i in range(dim // 2)]


def install_copy_circuit(model: Any, spec: CopyCircuitSpec | None = None, seed: int = 0) -> dict[str, int]:
    """Overwrite the embeddings and the first two layers' attention heads 0-3 of a freshly
    built ``Qwen3ForCausalLM`` with the copy circuit; returns the layout it used."""
    import torch

    spec = spec or CopyCircuitSpec()
    config = model.config
    tokens, content = _check(config, spec)
    head_dim, half = config.head_dim, config.head_dim // 2
    per_head = tokens // 2  # each of two heads carries half of the token block
    previous, before_previous = tokens, 2 * tokens
    constant = (spec.match_tokens + 1) * tokens
    inv_freq = _inverse_frequencies(config)
    generator = torch.Generator().manual_seed(seed)
    layer0, layer1 = model.model.layers[0].self_attn, model.model.layers[1].self_attn

    def clear(attn: Any, head: int, addressing: bool = True) -> None:
        """Zero a head's value and output (and its query and key unless ``addressing`` is False)."""
        rows = slice(head * head_dim, (head + 1) * head_dim)
        weights = [attn.v_proj.weight] + ([attn.q_proj.weight, attn.k_proj.weight] if addressing else [])
        for weight in weights:
            weight[rows] = 0
        attn.o_proj.weight[:, rows] = 0

    def copy_value(attn: Any, head: int, source: int, target: int, gain: float) -> None:
        """Head ``head`` reads ``per_head`` dimensions from ``source`` and writes them at ``target``."""
        for j in range(per_head):
            attn.v_proj.weight[head * head_dim + j, source + j] = 1.0
            attn.o_proj.weight[target + j, head * head_dim + j] = gain

    with torch.no_grad():
        embeddings = model.model.embed_tokens.weight
        embeddings.zero_()
        embeddings[:, :tokens] = torch.randn(embeddings.shape[0], tokens, generator=generator)
        embeddings[:, constant] = 1.0
        embeddings *= spec.embedding_scale

        # Layer 0: heads 0-1 look 1 step back (and heads 2-3 two steps, for two-token matching)
        # and copy that token's identity into the previous-token block(s).
        lookbacks = [(1, previous)] + ([(2, before_previous)] if spec.match_tokens == 2 else [])
        for step, block in lookbacks:
            for half_index in (0, 1):
                head = 2 * (step - 1) + half_index
                clear(layer0, head)
                for i in range(spec.position_pairs):
                    layer0.q_proj.weight[head * head_dim + i, constant] = 1.0
                    layer0.k_proj.weight[head * head_dim + i, constant] = math.cos(step * inv_freq[i])
                    layer0.k_proj.weight[head * head_dim + i + half, constant] = math.sin(step * inv_freq[i])
                copy_value(layer0, head, source=half_index * per_head, target=block + half_index * per_head, gain=1.0)
        for i in range(spec.position_pairs):
            for norm in (layer0.q_norm, layer0.k_norm):
                norm.weight[i] = norm.weight[i + half] = spec.position_gain

        dims = [*content, *(i + half for i in content)]
        # Query blocks matched against key blocks: the current token against each position's
        # predecessor, and (two-token) the previous token against each position's second one back.
        pairs = [(0, previous)] + ([(previous, before_previous)] if spec.match_tokens == 2 else [])
        share = len(dims) // len(pairs)
        for head in (0, 1):  # induction heads
            clear(layer1, head)
            for k, (query_block, key_block) in enumerate(pairs):
                part = dims[k * share : (k + 1) * share] if k < len(pairs) - 1 else dims[k * share :]
                basis = torch.linalg.qr(torch.randn(tokens, len(part), generator=generator))[0].T
                for r, d in enumerate(part):
                    layer1.q_proj.weight[head * head_dim + d, query_block : query_block + tokens] = basis[r]
                    layer1.k_proj.weight[head * head_dim + d, key_block : key_block + tokens] = basis[r]
            copy_value(layer1, head, source=head * per_head, target=head * per_head, gain=spec.copy_gain)
        for d in dims:
            layer1.q_norm.weight[d] = spec.content_gain
            layer1.k_norm.weight[d] = spec.content_gain

        if spec.addressing_heads:
            for head in (2, 3):  # copying value path; the query and key stay random, to be learned
                clear(layer1, head, addressing=False)
                copy_value(
                    layer1, head, source=(head - 2) * per_head, target=(head - 2) * per_head, gain=spec.copy_gain / 2
                )
    return {"token_dims": tokens, "content_pairs": len(content)}


__all__ = ["CopyCircuitSpec", "install_copy_circuit"]
