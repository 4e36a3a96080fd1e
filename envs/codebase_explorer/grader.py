"""Grading for codebase-explorer: exact match per question type, plus compactness.

``score = correct * (0.9 + 0.1 * compactness)``: a wrong answer scores 0 however short it is,
and a right answer loses up to a tenth for burying the answer in prose. Each matcher
tolerates only differences that cannot change the meaning: a workspace prefix on a path,
order and separators in a list, quote style and spacing in a Python expression.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable

from skillgym.graders.compactness import compactness
from skillgym.sandbox.base import Sandbox
from skillgym.types import Grade, Message, Task

_PATH_PREFIXES = ("/workspace/repo/", "workspace/repo/", "repo/", "./")
_PATH_RUN_RE = re.compile(r"[\w./-]+")
_WORD_CHAR_RE = re.compile(r"\w")
_MAX_COUNT_DIGITS = 100  # no method count is longer; int() refuses past 4,300 digits anyway
_INT_RE = re.compile(r"(?<![\w.])-?\d+(?![\w.])")
_EDGES = " \t\r\n`'\"*"


def _strip(text: str) -> str:
    """Outer whitespace and Markdown code/bold marks; one trailing period."""
    text = text.strip().strip("`*").strip()
    return text[:-1].rstrip() if text.endswith(".") and not text.endswith("..") else text


def path_variants(text: str) -> set[str]:
    """A path as written, and without each workspace prefix it may carry."""
    text = text.strip().strip(_EDGES).replace("\\", "/")
    variants = {text}
    for prefix in _PATH_PREFIXES:
        if text.startswith(prefix):
            variants.add(text[len(prefix) :])
    return variants


def path_tokens(text: str) -> list[str]:
    r"""The ``.py`` paths written in ``text``: in each run of path characters (word characters,
    ``.``, ``/``, ``-``), the longest prefix that ends in ``.py`` at a word boundary.

    This is what ``re.findall(r"[\w./-]+\.py\b", text)`` finds, in linear time: that regex
    retries from every start inside a long run, which is quadratic (a 100,000-character answer
    took over a minute to grade).
    """
    tokens = []
    for run in _PATH_RUN_RE.findall(text):
        end = run.rfind(".py")
        while end >= 1:  # at least one path character before ".py"
            after = run[end + 3 : end + 4]
            if not after or not _WORD_CHAR_RE.match(after):
                tokens.append(run[: end + 3])
                break
            end = run.rfind(".py", 0, end)
    return tokens


def match_path(answer: str, gold: str) -> bool:
    """The answer names the gold file: alone, with a workspace prefix, or as the only path in a sentence."""
    if gold in path_variants(_strip(answer)):
        return True
    tokens = set(path_tokens(answer))
    found = {p for token in tokens for p in path_variants(token)}
    return len(tokens) == 1 and gold in found


def _expr_key(text: str) -> str | None:
    """Canonical form of a Python expression (quote style and spacing fall away)."""
    try:
        return ast.dump(ast.parse(text.strip(), mode="eval"))
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # deep nesting (a.a.a..., -----1)
        return None


def match_value(answer: str, gold: str, param: str | None = None) -> bool:
    """Same Python expression; ``param=value`` is accepted for a parameter's default."""
    # Both the bare text and the text without a trailing period: "1." is a float literal.
    for text in {answer.strip().strip("`").strip(), _strip(answer)}:
        if param:
            text = re.sub(rf"^{re.escape(param)}\s*(?::[^=]*)?=\s*", "", text)
        if " ".join(text.split()) == " ".join(gold.split()):
            return True
        key = _expr_key(text)
        if key is not None and key == _expr_key(gold):
            return True
    return False


def name_set(text: str) -> set[str]:
    """Names from a list in any layout: commas, newlines, bullets, backticks, ``()``."""
    names = set()
    for part in re.split(r"[,;\s]+", text):
        part = part.strip(_EDGES + "-•").removesuffix("()").strip(_EDGES)
        if part and part.lower() not in ("and",):
            names.add(part)
    return names


def match_names(answer: str, gold: str) -> bool:
    return name_set(_strip(answer)) == name_set(gold)


def match_count(answer: str, gold: str) -> bool:
    """Exactly one integer in the answer, equal to the gold count."""
    found = _INT_RE.findall(_strip(answer))
    if any(len(n) > _MAX_COUNT_DIGITS for n in found):
        return False  # an integer that long is not the count, and int() could not even read it
    return {int(n) for n in found} == {int(gold)}


def _module_variants(text: str) -> set[str]:
    """A module written as a dotted name or as a file path, reduced to dotted names."""
    out = set()
    for variant in path_variants(text):
        variant = variant.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
        out.add(variant)
    return out


def match_constant(answer: str, gold: str, symbol: str | None = None) -> bool:
    """``module: value``; the module may be a path, and may end with ``.NAME``."""
    gold_module, _, gold_value = gold.partition(": ")
    text = _strip(answer)
    for sep in (":", "="):  # "module = value" is unambiguous too
        module, found, value = text.partition(sep)
        if not found:
            continue
        modules = _module_variants(module)
        if symbol:
            modules |= {m.removesuffix("." + symbol) for m in modules}
        if gold_module in modules and match_value(value, gold_value):
            return True
    return False


class CodebaseGrader:
    """Grades a final answer against ``task.reference["answer"]`` by ``qtype``."""

    def __init__(self, budget_floor: int = 32, budget_factor: float = 2.0):
        # The compactness budget scales with the gold answer: twice its length, at least 32
        # characters, so a bare answer always scores full marks and a sentence around it does not.
        self.budget_floor = budget_floor
        self.budget_factor = budget_factor

    def is_correct(self, task: Task, answer: str) -> bool:
        ref, meta = task.reference, task.metadata
        qtype, gold = ref["qtype"], str(ref["answer"])
        matchers: dict[str, Callable[[], bool]] = {
            "where": lambda: match_path(answer, gold),
            "default": lambda: match_value(answer, gold, meta.get("param")),
            "callers": lambda: match_names(answer, gold),
            "methods": lambda: match_count(answer, gold),
            "constant": lambda: match_constant(answer, gold, meta.get("symbol")),
        }
        if qtype not in matchers:
            raise ValueError(f"task {task.id!r}: unknown qtype {qtype!r} in reference")
        return bool(answer.strip()) and matchers[qtype]()

    def grade(self, task: Task, answer: str, messages: list[Message], sandbox: Sandbox | None) -> Grade:
        gold = str(task.reference["answer"])
        correct = float(self.is_correct(task, answer))
        budget = max(self.budget_floor, int(self.budget_factor * len(gold)))
        compact = compactness(answer, messages, budget_chars=budget)
        score = correct * (0.9 + 0.1 * compact)
        return Grade(
            score=round(score, 6),
            components={"correct": correct, "compactness": compact},
            details={"qtype": task.reference["qtype"], "gold": gold, "answer_chars": len(answer.strip())},
        )
