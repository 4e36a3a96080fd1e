"""Grading a research answer: HotpotQA's exact match and token F1, citations, compactness.

The answer is the short answer followed by the URLs it cites, e.g.::

    yes
    Sources: https://wiki.local/Scott_Derrickson https://wiki.local/Ed_Wood

URLs (and a ``Sources:`` label) are taken out before the short answer is compared with the
gold one, using the published HotpotQA definitions (written here from the paper's
description): lowercase, punctuation and the articles a/an/the removed, whitespace
collapsed; F1 over the remaining tokens, and 0 when either side is yes/no/noanswer and the
two differ. ``citation`` is the F1 of the cited pages against the pages holding the
supporting facts. ``score = f1 * (0.8 + 0.1 * citation + 0.1 * compactness)``: nothing for a
wrong answer however well sourced, up to a fifth off for a right one without sources or
buried in prose.
"""

from __future__ import annotations

import re
import string
from collections import Counter

from skillgym.graders.compactness import compactness
from skillgym.sandbox.base import Sandbox
from skillgym.types import Grade, Message, Task

from .corpus import url_key

_URL = re.compile(r"https?://[^\s<>\"]+", re.I)
_LABEL = re.compile(r"\b(?:sources?|citations?|references?|cited)\s*:", re.I)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)
_SPECIAL = ("yes", "no", "noanswer")


def normalize_answer(text: str) -> str:
    """HotpotQA/SQuAD normalization: lowercase, no punctuation, no articles, single spaces."""
    text = "".join(c for c in text.lower() if c not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str) -> float:
    """Token F1 of the normalized strings (0 when a yes/no/noanswer side differs)."""
    pred, ref = normalize_answer(prediction), normalize_answer(gold)
    if (pred in _SPECIAL or ref in _SPECIAL) and pred != ref:
        return 0.0
    pred_tokens, ref_tokens = pred.split(), ref.split()
    common = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def split_answer(answer: str) -> tuple[str, list[str]]:
    """(short answer, cited URLs in order, without repeats)."""
    urls = list(dict.fromkeys(_trim_url(m) for m in _URL.findall(answer)))
    short = _LABEL.sub(" ", _URL.sub(" ", answer))
    short = " ".join(short.split()).strip(" ,;-()[]")
    return short, urls


def _trim_url(url: str) -> str:
    """A URL as written in prose: no trailing punctuation, no closing bracket it did not open
    (titles such as ``Ed_Wood_(film)`` keep theirs)."""
    while url and (url[-1] in ".,;:!`]}>" or (url[-1] == ")" and url.count(")") > url.count("("))):
        url = url[:-1]
    return url


def citation_f1(cited: list[str], gold: list[str]) -> float:
    """F1 of the cited pages against the gold pages (URLs compared by :func:`url_key`)."""
    cited_keys, gold_keys = {url_key(u) for u in cited}, {url_key(u) for u in gold}
    hits = len(cited_keys & gold_keys)
    if not hits:
        return 0.0
    precision, recall = hits / len(cited_keys), hits / len(gold_keys)
    return 2 * precision * recall / (precision + recall)


class ResearchGrader:
    """Grades ``answer`` against ``task.reference``: ``answer`` (gold text) and ``sources``
    (gold URLs; may be empty, then citation counts as full marks)."""

    def grade(self, task: Task, answer: str, messages: list[Message], sandbox: Sandbox | None) -> Grade:
        if "answer" not in task.reference:
            raise ValueError(
                f"task {task.id!r} has no reference answer: web-research tasks need reference.answer "
                "(and optionally reference.sources, the URLs to cite)"
            )
        gold = str(task.reference["answer"])
        sources = [str(u) for u in task.reference.get("sources") or []]
        short, cited = split_answer(answer)
        em, f1 = exact_match(short, gold), f1_score(short, gold)
        citation = citation_f1(cited, sources) if sources else 1.0
        # The budget allows the answer and one line citing the gold pages: sources are wanted.
        budget = max(64, 2 * len(gold) + sum(len(u) + 1 for u in sources) + 10)
        compact = compactness(answer, messages, budget_chars=budget)
        score = f1 * (0.8 + 0.1 * citation + 0.1 * compact)
        return Grade(
            score=round(score, 6),
            components={"exact_match": em, "f1": round(f1, 6), "citation": round(citation, 6), "compactness": compact},
            details={"gold": gold, "short_answer": short, "cited": cited, "sources": sources},
        )
