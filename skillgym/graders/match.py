"""Answer matchers: compare a final answer with the gold answer in ``task.reference``."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable

from skillgym.sandbox.base import Sandbox
from skillgym.types import Grade, Message, Task

_PUNCT_EDGES = string.whitespace + "`'\".,;:!?()[]{}<>*"
_NUMBER_RE = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def normalize(text: str) -> str:
    """Lowercase, fold whitespace, drop quotes/backticks/trailing punctuation at the edges."""
    text = " ".join(str(text).split()).lower()
    return text.strip(_PUNCT_EDGES)


def exact(answer: str, gold: str) -> float:
    return float(answer.strip() == str(gold).strip())


def normalized(answer: str, gold: str) -> float:
    return float(normalize(answer) == normalize(gold))


def numeric(answer: str, gold: str, rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> float:
    """1.0 when the first number in the answer equals the gold number within tolerance."""
    found = _NUMBER_RE.search(answer.replace(",", ""))
    if not found:
        return 0.0
    value, target = float(found.group()), float(str(gold).replace(",", ""))
    return float(abs(value - target) <= max(abs_tol, rel_tol * abs(target)))


def regex(answer: str, gold: str) -> float:
    """``gold`` is a regular expression that must match somewhere in the answer."""
    return float(re.search(gold, answer, re.IGNORECASE | re.DOTALL) is not None)


def token_f1(answer: str, gold: str) -> float:
    pred, ref = normalize(answer).split(), normalize(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


MATCHERS: dict[str, Callable[..., float]] = {
    "exact": exact,
    "normalized": normalized,
    "numeric": numeric,
    "regex": regex,
    "f1": token_f1,
}


class AnswerMatch:
    """Grades ``answer`` against ``task.reference[key]`` (a string or a list of acceptable ones)."""

    def __init__(self, mode: str = "normalized", key: str = "answer", **options: float):
        if mode not in MATCHERS:
            raise ValueError(f"unknown match mode {mode!r}; choose one of {sorted(MATCHERS)}")
        self.mode, self.key, self.options = mode, key, options

    def grade(self, task: Task, answer: str, messages: list[Message], sandbox: Sandbox | None) -> Grade:
        if self.key not in task.reference:
            raise KeyError(f"task {task.id!r} has no reference[{self.key!r}] for the {self.mode!r} matcher")
        golds = task.reference[self.key]
        golds = golds if isinstance(golds, list) else [golds]
        score = max(MATCHERS[self.mode](answer, str(g), **self.options) for g in golds)
        return Grade(score=score, components={self.mode: score})
