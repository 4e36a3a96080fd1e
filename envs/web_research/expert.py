"""The scripted expert: searches, reads and answers through the tools like a competent agent.

It knows the gold supporting titles and the gold answer (from the task source, by the
episode's task id) and uses them only to *decide*: which result to open, what to search for
next, which span to report. Every string it writes into a tool call or the answer is copied
from what the episode has already shown it (the system prompt, the question, or tool
output), so a student trained on its traces sees everything it needs to do the same.

Recipe: search the question; open each gold page the results list; for a gold page not
listed, search its title where a page already read (or a snippet) names it, else search the
question with more results; then submit the answer span copied from a page read (or
``yes``/``no``, which the system prompt names) and one ``Sources:`` line with the URLs read.
"""

from __future__ import annotations

import re
from typing import Any

from skillgym.policies.base import Action, Policy
from skillgym.toolcalls import render_tool_call_text
from skillgym.types import Message

from .grader import f1_score, normalize_answer

_RESULT = re.compile(r"^\d+\. (?P<title>.+)\n {3}(?P<url>\S+)\n {3}(?P<snippet>.*)$", re.M)
_STATUS = re.compile(r"^\[page \d+ of \d+; (?:next offset (\d+)|end of page)\]$", re.M)


class ExpertPolicy(Policy):
    """The web-research expert.

    Args:
        tasks: The env's task source (the expert reads a task's reference by id).
        k: Results per search.
    """

    policy_id = "expert"

    def __init__(self, tasks: Any, k: int = 5) -> None:
        self.tasks = tasks
        self.k = k
        self._reset_state()

    def _reset_state(self) -> None:
        self.gold_titles: list[str] = []
        self.answer = ""
        self.results: dict[str, str] = {}  # title -> url, as listed by web_search
        self.snippets: list[str] = []
        self.pages: dict[str, str] = {}  # title -> text read
        self.queries: set[tuple[str, int]] = set()
        self.question = ""
        self.system = ""
        self._seen_tools = 0
        self.informed = True

    def reset(self, observation: list[Message], info: dict[str, Any]) -> None:
        self._reset_state()
        try:
            task = self.tasks.get(info["task_id"])
        except KeyError:  # a question from outside the task source (an orchestrator's call): no gold
            task = None
        self.informed = task is not None
        self.gold_titles = list(task.reference.get("gold_titles") or []) if task else []
        self.answer = str(task.reference.get("answer", "")) if task else ""
        self.system = next((m["content"] for m in observation if m["role"] == "system"), "")
        self.question = next(m["content"] for m in observation if m["role"] == "user")

    # -- reading what the tools printed ------------------------------------------------------
    def _read(self, observation: list[Message]) -> None:
        tool_messages = [m for m in observation if m.get("role") == "tool"]
        for m in tool_messages[self._seen_tools :]:
            text = m.get("content") or ""
            if m.get("name") == "web_search":
                for hit in _RESULT.finditer(text):
                    self.results.setdefault(hit["title"], hit["url"])
                    self.snippets.append(hit["snippet"])
            elif m.get("name") == "web_fetch" and not text.startswith("Error"):
                head, _, rest = text.partition("\n")
                _, _, body = rest.partition("\n")
                _, _, body = body.partition("\n")  # after the [page ...] status line
                self.pages[head] = self.pages.get(head, "") + body
        self._seen_tools = len(tool_messages)

    def _seen_texts(self) -> list[str]:
        return [*self.pages.values(), self.question, *self.snippets]

    # -- acting ------------------------------------------------------------------------------
    def act(self, observation: list[Message], info: dict[str, Any]) -> Action:
        self._read(observation)
        if not self.queries:
            return self._search(self.question, self.k)
        if not self.informed and not self.gold_titles:
            # Uninformed: read the two best results and report the first sentence of the best.
            self.gold_titles = list(self.results)[:2]
        # Open listed gold pages in the order the results list them (not the hidden order of the
        # gold titles): which page comes first is then something a student can see.
        for title in [t for t in self.results if t in self.gold_titles]:
            if title not in self.pages:
                return render_tool_call_text("web_fetch", {"url": self.results[title]})
        for title in self.gold_titles:
            if title in self.pages or title in self.results:
                continue
            for query, k in self._queries_for(title):
                if (query, k) not in self.queries:
                    return self._search(query, k)
        return render_tool_call_text("submit", {"answer": self._final_answer()})

    def _search(self, query: str, k: int) -> str:
        self.queries.add((query, k))
        return render_tool_call_text("web_search", {"query": query, "k": k})

    def _queries_for(self, title: str) -> list[tuple[str, int]]:
        """Searches that may list a gold page, each copied from what was seen: its title as a
        page or snippet writes it, the sentence read that shares most words with it, the question."""
        plan = []
        span = self._find_span(title)
        if span is not None:
            plan.append((span, 10))
        words = set(normalize_answer(title).split())
        sentences = [s.strip() for text in self.pages.values() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]
        if sentences and words:
            best = max(sentences, key=lambda s: len(words & set(normalize_answer(s).split())))
            if words & set(normalize_answer(best).split()):
                plan.append((best[:300], 10))
        plan.append((self.question, 20))
        return plan

    def _find_span(self, target: str) -> str | None:
        """``target`` as written in something seen: exact, else case-insensitive."""
        texts = self._seen_texts()
        if any(target in t for t in texts):
            return target
        pattern = re.compile(re.escape(target), re.I)
        for t in texts:
            hit = pattern.search(t)
            if hit:
                return hit.group(0)
        return None

    def _final_answer(self) -> str:
        short = self._answer_span()
        # Cite in reading order (the order the trace shows), not the hidden order of the gold titles.
        urls = [self.results[t] for t in self.pages if t in self.gold_titles and t in self.results]
        return f"{short}\nSources: {' '.join(urls)}" if urls else short

    def _answer_span(self) -> str:
        if not self.informed:
            first = next(iter(self.pages.values()), "")
            return re.split(r"(?<=[.!?])\s+", first.strip())[0] if first.strip() else "I found nothing."
        gold = normalize_answer(self.answer)
        if gold in ("yes", "no"):
            return gold if re.search(rf"\b{gold}\b", self.system) else self._best_window()
        return self._find_span(self.answer) or self._best_window()

    def _best_window(self) -> str:
        """The run of words in what was read that scores best against the gold answer (F1)."""
        best, best_f1 = "", 0.0
        size = max(1, len(self.answer.split()))
        for text in self._seen_texts():
            words = text.split()
            for n in range(max(1, size - 1), size + 3):
                for i in range(0, max(1, len(words) - n + 1)):
                    window = " ".join(words[i : i + n]).strip(".,;:()\"'")
                    f1 = f1_score(window, self.answer)
                    if f1 > best_f1:
                        best, best_f1 = window, f1
        return best or (self.pages and next(iter(self.pages.values())).split(".")[0]) or "unknown"
