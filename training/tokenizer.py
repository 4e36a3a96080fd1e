"""A byte-level BPE tokenizer trained on an SFT dataset, for the tiny from-scratch student.

Three design choices, each measured against the 20-minute CPU budget (see ``EXPERIMENTS.md``):

* **The Qwen3 tokens.** ``<|im_start|>``, ``<|im_end|>`` and ``<|endoftext|>`` are *special*
  (a decoder with ``skip_special_tokens=True`` drops them), while ``<tool_call>``,
  ``</tool_call>``, ``<tool_response>``, ``</tool_response>``, ``<think>`` and ``</think>`` are
  single *non-special* added tokens, exactly as Qwen3's own tokenizer classifies them, so a
  server that strips special tokens keeps the tool-call markup.
* **Identifiers tokenize the same everywhere.** The pre-tokenizer isolates runs of
  ``[A-Za-z0-9_]``, runs of spaces, newlines and runs of punctuation before BPE runs, so a
  symbol is the same token sequence in the question (```NAME```), in the tool call
  (``'^NAME\\s*='``) and in the tool output. The student's core skill is copying a symbol
  from the question into a command and a fact from the output into the answer; a copy is far
  easier to learn when source and target are the same tokens.
* **Boilerplate lines are single tokens.** Lines that recur in a large share of the
  conversations (the skill text, the tool schemas, the template's tool instructions, the
  expert's fixed sentences) become one added token each (``line + "\\n"``). The system block
  shrinks from ~1,500 BPE tokens to ~60, which is most of the sequence length and so most of
  the CPU time of training and inference. Lines are a deliberate middle ground: a changed
  sentence in a skill only falls back to BPE for that sentence.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from skillgym.chat_template import CONTROL_TOKENS, MARKUP_TOKENS, qwen3_template

PAD_TOKEN = "<|endoftext|>"
# A tool call's JSON body: arguments are copied from the question or a tool result, so even
# a frequent call line (``{"answer": "3"}``) stays BPE, where copying works token by token.
_CALL_BODY = '{"name":'
# Runs of identifier characters, of spaces, single newlines and runs of other characters.
PRETOKENIZE_PATTERN = r"[A-Za-z0-9_]+| +|\n|[^A-Za-z0-9_ \n]+"


def boilerplate_lines(texts: list[str], min_fraction: float, min_chars: int = 6, max_lines: int = 2000) -> list[str]:
    """Lines (with their newline) found in at least ``min_fraction`` of ``texts``.

    A line holding one of the chat-format tokens is never boilerplate: those must stay
    single tokens of their own for the template, the parser and the loss mask.
    """
    reserved = [PAD_TOKEN, *CONTROL_TOKENS, *MARKUP_TOKENS]
    split_reserved = re.compile("|".join(re.escape(t) for t in reserved))
    counts: Counter[str] = Counter()
    for text in texts:
        lines = text.split("\n")[:-1]  # the last piece has no newline after it
        found = {line + "\n" for line in lines if len(line) >= min_chars}
        # A line around a format token (the template's tool instructions) contributes the
        # text between the tokens; the token itself stays a token of its own.
        for line in lines:
            pieces = split_reserved.split(line + "\n")
            if len(pieces) > 1:
                found.update(p for p in pieces if len(p) >= min_chars)
        counts.update(found)
    threshold = max(2, int(min_fraction * len(texts)))
    picked = [
        line for line, n in counts.most_common()
        if n >= threshold and not any(token in line for token in reserved) and not line.startswith(_CALL_BODY)
    ]
    return sorted(picked[:max_lines], key=lambda line: (-counts[line], line))


def train_tokenizer(
    texts: Iterable[str],
    *,
    vocab_size: int = 2048,
    boilerplate_min_fraction: float | None = 0.02,
    min_frequency: int = 2,
) -> Any:
    """Train the tokenizer on rendered conversations; returns a ``PreTrainedTokenizerFast``
    carrying the Qwen3 inference chat template, ``<|im_end|>`` as EOS and ``<|endoftext|>``
    as padding. ``vocab_size`` counts the BPE vocabulary (bytes and merges), not the added
    boilerplate tokens; ``boilerplate_min_fraction=None`` turns boilerplate tokens off."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = list(texts)
    if not texts:
        raise ValueError("cannot train a tokenizer on an empty dataset: export some trajectories first")
    boilerplate = boilerplate_lines(texts, boilerplate_min_fraction) if boilerplate_min_fraction else []

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    special = [PAD_TOKEN, *CONTROL_TOKENS]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in special],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # BPE learns from what is left once the boilerplate lines are gone, so its merges serve
    # the varying text (questions, commands, tool output) instead of the fixed prompt.
    tokenizer.train_from_iterator((_strip_lines(t, boilerplate) for t in texts), trainer=trainer, length=len(texts))
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in MARKUP_TOKENS])
    tokenizer.add_tokens([AddedToken(line, special=False, normalized=False) for line in boilerplate])

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token=PAD_TOKEN,
        extra_special_tokens=list(CONTROL_TOKENS),  # listed as special, as in Qwen3's tokenizer
        model_max_length=32_768,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = qwen3_template(training=False)
    return fast


def _strip_lines(text: str, boilerplate: list[str]) -> str:
    if not boilerplate:
        return text
    lines = set(boilerplate)
    return "".join(line for line in text.splitlines(keepends=True) if line not in lines)


def save_tokenizer(tokenizer: Any, path: Path) -> None:
    """Save with the inference template: the served model must render prompts as Qwen3 does."""
    tokenizer.chat_template = qwen3_template(training=False)
    tokenizer.save_pretrained(str(path))
