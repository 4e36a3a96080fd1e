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
* **Templates are single tokens, the copied words are not.** A task prompt is fixed wording
  around a few names, and an assistant turn is mostly a fixed command with a few words
  copied from the task or a tool result (``grep ... 'NAME' ...``). Cut every user and
  assistant line at each word specific to that conversation (in under 5% of conversations):
  the pieces in between that recur in a large share of conversations are the template, and
  each becomes one added token. The copied words keep their BPE pieces, so copying still
  works token by token, while a template costs one token instead of dozens.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from skillgym.chat_template import CONTROL_TOKENS, MARKUP_TOKENS, student_template

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
        line
        for line, n in counts.most_common()
        if n >= threshold and not any(token in line for token in reserved) and not line.startswith(_CALL_BODY)
    ]
    return sorted(picked[:max_lines], key=lambda line: (-counts[line], line))


def boilerplate_blocks(texts: list[str], lines: list[str], min_fraction: float) -> list[str]:
    """Runs of consecutive boilerplate lines (blank lines allowed inside) that recur whole,
    such as a system prompt with its tool schemas: one token for the block, not one a line."""
    known = set(lines)
    counts: Counter[str] = Counter()
    for text in texts:
        run: list[str] = []
        found: set[str] = set()
        for line in text.splitlines(keepends=True) + [""]:
            if line in known or (line == "\n" and run):
                run.append(line)
                continue
            while run and run[-1] == "\n":
                run.pop()
            if len(run) >= 2:
                found.add("".join(run))
            run = []
        counts.update(found)
    threshold = max(2, int(min_fraction * len(texts)))
    return sorted((block for block, n in counts.items() if n >= threshold), key=lambda b: (-len(b), b))


_TURN_RE = re.compile(r"<\|im_start\|>(\w+)\n(.*?)(?:<\|im_end\|>|\Z)", re.DOTALL)
_WORD_RE = re.compile(r"[A-Za-z0-9_]{2,}")


def template_fragments(
    texts: list[str], min_fraction: float, min_chars: int = 12, max_fragments: int = 2000
) -> list[str]:
    """Recurring pieces of user and assistant turns between conversation-specific words
    (the symbols a task names, the facts a tool prints, which the model copies).

    Format tokens never end up inside a fragment (the loss mask and the parser need them as
    tokens of their own).
    """
    reserved = re.compile("|".join(re.escape(t) for t in [PAD_TOKEN, *CONTROL_TOKENS, *MARKUP_TOKENS]))
    parsed = [_TURN_RE.findall(text) for text in texts]
    # <tool_response> blocks are rendered inside user turns, so "user" covers tool results.
    user_words = [{w for role, body in turns if role == "user" for w in _WORD_RE.findall(body)} for turns in parsed]
    # Words in many conversations' prompts ("class", "module") belong to the wording of the
    # task, not to what is copied: only conversation-specific words cut a template.
    common = {w for w, n in Counter(w for words in user_words for w in words).items() if n >= 0.05 * len(texts)}
    counts: Counter[str] = Counter()
    for turns, words in zip(parsed, user_words):
        copied = words - common
        if not copied:
            continue
        cut = re.compile(
            r"(?<![A-Za-z0-9_])(?:"
            + "|".join(re.escape(w) for w in sorted(copied, key=len, reverse=True))
            + r")(?![A-Za-z0-9_])"
        )
        found: set[str] = set()
        for role, body in turns:
            if role not in ("user", "assistant"):
                continue
            for line in body.split("\n"):
                for piece in reserved.split(line):
                    found.update(p for p in cut.split(piece) if len(p) >= min_chars)
        counts.update(found)
    threshold = max(2, int(min_fraction * len(texts)))
    picked = [piece for piece, n in counts.most_common(max_fragments) if n >= threshold]
    # Longest first: when one fragment contains another, the tokenizer should see the long one.
    return sorted(picked, key=lambda piece: (-len(piece), piece))


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
    blocks = boilerplate_blocks(texts, boilerplate, boilerplate_min_fraction) if boilerplate else []
    fragments = template_fragments(texts, boilerplate_min_fraction) if boilerplate_min_fraction else []
    fragments = [f for f in fragments if f not in set(boilerplate)]

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
    tokenizer.train_from_iterator(
        (_strip_fragments(_strip_lines(t, boilerplate), fragments) for t in texts), trainer=trainer, length=len(texts)
    )
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in MARKUP_TOKENS])
    tokenizer.add_tokens([AddedToken(line, special=False, normalized=False) for line in boilerplate])
    tokenizer.add_tokens([AddedToken(block, special=False, normalized=False) for block in blocks])
    tokenizer.add_tokens([AddedToken(piece, special=False, normalized=False) for piece in fragments])

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token=PAD_TOKEN,
        extra_special_tokens=list(CONTROL_TOKENS),  # listed as special, as in Qwen3's tokenizer
        model_max_length=32_768,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = student_template()
    return fast


def _strip_lines(text: str, boilerplate: list[str]) -> str:
    if not boilerplate:
        return text
    lines = set(boilerplate)
    return "".join(line for line in text.splitlines(keepends=True) if line not in lines)


def _strip_fragments(text: str, fragments: list[str]) -> str:
    for piece in fragments:
        text = text.replace(piece, "\n")
    return text


def save_tokenizer(tokenizer: Any, path: Path) -> None:
    """Save with the template the student trained on, so that serving renders every turn's
    prompt as a prefix of its training text (:func:`~skillgym.chat_template.student_template`)."""
    tokenizer.chat_template = student_template()
    tokenizer.save_pretrained(str(path))
