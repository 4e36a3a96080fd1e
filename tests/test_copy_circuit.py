"""The tiny student's built-in copy circuit (training/copy_circuit.py).

Copying is measured on sequences of random tokens repeated once: in the second half every
next token is predictable only by finding it in the first half. No training happens here.
"""

from __future__ import annotations

import pytest
import torch

from skillgym.training.copy_circuit import CopyCircuitSpec, install_copy_circuit
from skillgym.training.tiny import TinyModelSpec, build_tiny_model


class _Vocab:
    """What build_tiny_model reads from a tokenizer."""

    def __init__(self, size: int) -> None:
        self.size, self.eos_token_id, self.pad_token_id = size, 0, 1

    def __len__(self) -> int:
        return self.size


SHAPE = dict(hidden_size=192, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, intermediate_size=256)


def copy_accuracy(model, vocab: int, half: int = 50, alphabet: int | None = None) -> float:
    """``alphabet``: draw the tokens from only this many, so that pieces repeat inside a span."""
    generator = torch.Generator().manual_seed(1)
    first = torch.randint(2, 2 + (alphabet or vocab - 2), (6, half), generator=generator)
    tokens = torch.cat([first, first], dim=1)
    with torch.no_grad():
        logits = model.eval()(input_ids=tokens).logits
    predicted = logits[:, half:-1].argmax(-1)
    return (predicted == tokens[:, half + 1 :]).float().mean().item()


def test_the_circuit_copies_unseen_tokens_before_any_training():
    spec = TinyModelSpec(**SHAPE, rope_theta=1e6, copy_circuit=CopyCircuitSpec())
    with_circuit = build_tiny_model(spec, _Vocab(3000))
    plain = build_tiny_model(spec.model_copy(update={"copy_circuit": None}), _Vocab(3000))
    assert copy_accuracy(with_circuit, 3000) > 0.9
    assert copy_accuracy(plain, 3000) < 0.05


def test_matching_two_tokens_continues_spans_with_repeated_pieces():
    """With one matched token, a span like FILENAME_LENGTH (LEN twice) can jump to the wrong
    continuation; matching the token before it as well tells the two apart."""
    spec = TinyModelSpec(**SHAPE, rope_theta=1e6, copy_circuit=CopyCircuitSpec())
    one = build_tiny_model(spec, _Vocab(3000))
    two = build_tiny_model(spec.model_copy(update={"copy_circuit": CopyCircuitSpec(match_tokens=2)}), _Vocab(3000))
    assert copy_accuracy(two, 3000) > 0.9
    assert copy_accuracy(two, 3000, alphabet=40) > copy_accuracy(one, 3000, alphabet=40) + 0.2


def test_the_circuit_survives_save_and_load_as_a_plain_qwen3(tmp_path):
    from transformers import AutoModelForCausalLM

    model = build_tiny_model(TinyModelSpec(**SHAPE, rope_theta=1e6, copy_circuit=CopyCircuitSpec()), _Vocab(3000))
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(loaded).__name__ == "Qwen3ForCausalLM"
    assert copy_accuracy(loaded, 3000) == copy_accuracy(model, 3000) > 0.9


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rope_theta": 10_000.0}, "raise tiny.rope_theta"),
        ({"num_key_value_heads": 2}, "num_key_value_heads = num_attention_heads"),
        ({"num_hidden_layers": 1}, "at least 2 layers"),
        ({"tie_word_embeddings": False}, "tie_word_embeddings"),
    ],
)
def test_shapes_the_circuit_cannot_use_are_refused_with_the_setting_to_change(change, message):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    shape = {**SHAPE, "rope_theta": 1e6, "tie_word_embeddings": True, **change}
    config = Qwen3Config(vocab_size=300, head_dim=48, **shape)
    with pytest.raises(ValueError, match=message):
        install_copy_circuit(Qwen3ForCausalLM(config))
