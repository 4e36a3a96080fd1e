"""The scripted router: an orchestrator policy for offline runs and a routing baseline.

It plays orchestrator-v0 through its tools, as a model would: ``list_subagents``, then
``subagent`` with the task passed on verbatim to the entry whose description fits the task
best (:meth:`skillgym.skills.SkillLibrary.route`: description word coverage, plus embedding
similarity where an offline embedder is installed), then ``submit`` with the subagent's
answer. When nothing fits (or with ``delegate=False``) it answers alone, which it cannot do
well: that is the "no subagents" floor.

It keeps no state between turns (each turn is read off the chat), so it also works behind a
scripted model server that replays it.
"""

from __future__ import annotations

import threading
from typing import Any

from skillgym.policies.base import Action, Policy
from skillgym.skills.library import ROUTE_MIN_SCORE, SkillLibrary
from skillgym.toolcalls import render_tool_call_text
from skillgym.types import Message

__all__ = ["ALONE_ANSWER", "ScriptedRouter", "parse_subagent_reply"]

ALONE_ANSWER = "I cannot answer this without a subagent."

_LIBRARY: SkillLibrary | None = None
_LIBRARY_LOCK = threading.Lock()


def _library() -> SkillLibrary:
    global _LIBRARY
    with _LIBRARY_LOCK:
        if _LIBRARY is None:
            _LIBRARY = SkillLibrary()
        return _LIBRARY


def parse_subagent_reply(text: str) -> dict[str, Any]:
    """The parts of a ``subagent`` tool message: ``status``, ``files`` and ``answer``."""
    status, files, answer = "", [], ""
    head, sep, rest = text.partition("\nanswer:")
    if not sep and text.startswith("answer:"):
        head, rest = "", text.removeprefix("answer:")
    for line in head.splitlines():
        if line.startswith("status: "):
            status = line.removeprefix("status: ").strip()
        elif line.startswith("files: "):
            files = [p.strip() for p in line.removeprefix("files: ").split(",") if p.strip()]
    answer = rest.removeprefix("\n") if rest.strip() != "(none)" else ""
    return {"status": status, "files": files, "answer": answer}


class ScriptedRouter(Policy):
    """Routes each task to one subagent by description and answers with its answer.

    Args:
        delegate: False: never call a subagent (the "no subagents" baseline).
        min_score: Route only when the best description scores at least this much
            (see :meth:`SkillLibrary.route`); otherwise answer alone.
    """

    def __init__(self, delegate: bool = True, min_score: float = ROUTE_MIN_SCORE) -> None:
        self.delegate = delegate
        self.min_score = min_score
        self.policy_id = "router" if delegate else "router:alone"
        self.last_decision: Any = None

    def act(self, observation: list[Message], info: dict[str, Any]) -> Action:
        task = next((str(m.get("content") or "") for m in observation if m.get("role") == "user"), "")
        last = observation[-1] if observation else {}
        tool = last.get("name") if last.get("role") == "tool" else None
        if not self.delegate:
            return _call("submit", {"answer": ALONE_ANSWER})
        if tool == "subagent":
            return _call("submit", {"answer": parse_subagent_reply(str(last.get("content") or ""))["answer"]})
        if tool == "list_subagents":
            roster = _parse_listing(str(last.get("content") or ""))
            decision = _library().route(task, roster, min_score=self.min_score) if roster else None
            self.last_decision = decision
            if decision is None or decision.choice is None:
                return _call("submit", {"answer": ALONE_ANSWER})
            return _call("subagent", {"prompt": task, "config": decision.choice})
        return _call("list_subagents", {})


def _parse_listing(text: str) -> dict[str, str]:
    roster: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, description = line.partition(": ")
        if sep and name and " " not in name:
            roster[name] = description
    return roster


def _call(name: str, arguments: dict[str, Any]) -> str:
    return render_tool_call_text(name, arguments)
