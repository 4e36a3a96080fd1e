"""The embedded default student: a small Qwen3-architecture model built from a config.

Nothing is downloaded: the architecture is transformers' ``Qwen3ForCausalLM`` with its
weights freshly initialized, sized for full fine-tuning on two CPU cores in minutes.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .copy_circuit import CopyCircuitSpec, install_copy_circuit


class TinyModelSpec(BaseModel):
    """Shape of the from-scratch model. Defaults: ~3.5M parameters, 4 layers of width 256."""

    model_config = ConfigDict(extra="forbid")

    hidden_size: int = Field(default=256, ge=16, description="Width of the residual stream.")
    num_hidden_layers: int = Field(default=4, ge=1, description="Transformer blocks; copying needs at least 2.")
    num_attention_heads: int = Field(default=4, ge=1, description="Query heads per layer.")
    num_key_value_heads: int = Field(default=4, ge=1, description="Key/value heads (fewer than query heads: GQA).")
    intermediate_size: int = Field(default=768, ge=16, description="Width of each MLP.")
    max_position_embeddings: int = Field(default=2048, ge=64, description="Longest sequence the RoPE tables cover.")
    head_dim: int | None = Field(default=None, ge=8, description="Width of each head (None: hidden_size / heads).")
    rope_theta: float = Field(default=10_000.0, gt=0, description="RoPE base; the copy circuit wants slow pairs (1e6).")
    tie_word_embeddings: bool = Field(default=True, description="Share input and output embeddings (fewer parameters).")
    initializer_range: float = Field(default=0.02, gt=0)
    copy_circuit: CopyCircuitSpec | None = Field(
        default=None,
        description="Start with an induction (copy) circuit in layers 0-1 (training/copy_circuit.py); null: plain init.",
    )


def build_tiny_model(spec: TinyModelSpec, tokenizer: Any, seed: int = 0) -> Any:
    """A freshly initialized ``Qwen3ForCausalLM`` whose vocabulary matches ``tokenizer``."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    if spec.head_dim is None and spec.hidden_size % spec.num_attention_heads:
        raise ValueError(
            f"tiny.hidden_size ({spec.hidden_size}) must be a multiple of tiny.num_attention_heads "
            f"({spec.num_attention_heads})"
        )
    if spec.num_attention_heads % spec.num_key_value_heads:
        raise ValueError("tiny.num_attention_heads must be a multiple of tiny.num_key_value_heads")
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        head_dim=spec.head_dim or spec.hidden_size // spec.num_attention_heads,
        max_position_embeddings=spec.max_position_embeddings,
        rope_theta=spec.rope_theta,
        tie_word_embeddings=spec.tie_word_embeddings,
        initializer_range=spec.initializer_range,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        use_cache=True,
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    if spec.copy_circuit is not None:
        try:
            install_copy_circuit(model, spec.copy_circuit, seed=seed)
        except ValueError as error:
            raise ValueError(f"{error}; or build the model without it: tiny.copy_circuit=null") from None
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model
