"""Language-model warm-up on source code, before SFT, for a student trained from scratch.

Why: a subagent's traces are mostly *copying* — a symbol from the question into a command,
a fact from a tool result into the answer. A tiny model trained only on a few thousand
traces memorizes their symbols instead of learning to copy (measured: right command
template for 100% of questions, garbled symbols in 98%). Code is dense with repeated
identifiers, and next-token prediction on it is the classic way the copying circuits
(induction heads) of small transformers form. A few minutes of it come first.

No leakage: the corpus is code the env does not ask about. Files whose content also occurs
under ``exclude`` (the env's own codebase) are skipped by content hash.

``corpus: copy`` is the direct variant: synthetic sequences in which a random span of
identifier pieces recurs later, so that the only way to predict the recurrence is to copy
it; it touches no data at all.
"""

from __future__ import annotations

import hashlib
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class WarmupSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    corpus: str = Field(
        default="stdlib",
        description="A folder of source files, 'stdlib' (this Python's standard library), or 'copy' (synthetic recurring spans).",
    )
    exclude: list[str] = Field(
        default_factory=list, description="Folders whose files (by content) are left out: the env's codebase."
    )
    minutes: float = Field(default=3.0, gt=0, description="Wall-time budget of the warm-up.")
    seq_len: int = Field(default=256, ge=16)
    batch_size: int = Field(default=16, ge=1)
    learning_rate: float = Field(default=2e-3, gt=0)
    max_files: int = Field(default=4000, ge=1)
    seed: int = 0


def corpus_files(spec: WarmupSpec) -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"]) if spec.corpus == "stdlib" else Path(spec.corpus)
    if not root.is_dir():
        raise FileNotFoundError(f"warm-up corpus {root} is not a folder; set warmup.corpus to a folder of source files")
    excluded = {_digest(p) for folder in spec.exclude for p in Path(folder).rglob("*.py") if p.is_file()}
    files = []
    for path in sorted(root.rglob("*.py")):
        parts = set(path.relative_to(root).parts)
        if parts & {"site-packages", "test", "tests", "__pycache__", "idlelib", "lib2to3"}:
            continue  # installed packages, test suites and bundled apps: other code, not the language's
        if _digest(path) in excluded:
            continue
        files.append(path)
        if len(files) >= spec.max_files:
            break
    if not files:
        raise FileNotFoundError(f"warm-up corpus {root} holds no Python files outside {spec.exclude}")
    return files


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _chunks(tokenizer: Any, files: list[Path], seq_len: int, seed: int) -> Iterator[list[int]]:
    """Endless fixed-length windows over the files' token stream, in a seeded file order."""
    import random

    rng = random.Random(seed)
    order = list(files)
    eos = tokenizer.eos_token_id
    while True:
        rng.shuffle(order)
        buffer: list[int] = []
        for path in order:
            text = path.read_text(encoding="utf-8", errors="replace")
            buffer.extend(tokenizer(text, add_special_tokens=False)["input_ids"] + [eos])
            while len(buffer) >= seq_len:
                yield buffer[:seq_len]
                buffer = buffer[seq_len:]


def _copy_rows(tokenizer: Any, seq_len: int, seed: int) -> Iterator[list[int]]:
    """Rows of random identifier pieces in which spans recur: [span, filler, span, filler, ...]."""
    import random
    import re

    rng = random.Random(seed)
    ident = re.compile(r"[A-Za-z0-9_.]+")
    pieces = [
        i
        for t, i in tokenizer.get_vocab().items()
        if i not in tokenizer.all_special_ids and ident.fullmatch(tokenizer.convert_tokens_to_string([t]))
    ]
    if len(pieces) < 16:
        raise ValueError("the tokenizer has too few identifier pieces for the copy warm-up")
    while True:
        row: list[int] = []
        while len(row) < seq_len:
            span = [rng.choice(pieces) for _ in range(rng.randint(2, 6))]
            gap = [rng.choice(pieces) for _ in range(rng.randint(0, 12))]
            row += span + gap + span
        yield row[:seq_len]


def lm_warmup(model: Any, tokenizer: Any, spec: WarmupSpec, bf16: bool = False) -> dict[str, float]:
    """Next-token training on the corpus until the time budget is spent; returns what it did."""
    import torch

    torch.manual_seed(spec.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate, weight_decay=0.01)
    if spec.corpus == "copy":
        files: list[Path] = []
        stream = _copy_rows(tokenizer, spec.seq_len, spec.seed)
    else:
        files = corpus_files(spec)
        stream = _chunks(tokenizer, files, spec.seq_len, spec.seed)
    model.train()
    started, steps, tokens, loss_value = time.perf_counter(), 0, 0, float("nan")
    budget = spec.minutes * 60
    while time.perf_counter() - started < budget:
        batch = torch.tensor([next(stream) for _ in range(spec.batch_size)])
        # Linear warm-up then linear decay over the time budget (steps are not known ahead).
        progress = (time.perf_counter() - started) / budget
        for group in optimizer.param_groups:
            group["lr"] = spec.learning_rate * min(1.0, (steps + 1) / 50) * max(0.05, 1.0 - progress)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16 and not torch.cuda.is_available()):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        steps, tokens, loss_value = steps + 1, tokens + batch.numel(), float(loss.detach())
    return {
        "files": len(files),
        "steps": steps,
        "tokens": tokens,
        "final_loss": round(loss_value, 4),
        "seconds": round(time.perf_counter() - started, 1),
    }
