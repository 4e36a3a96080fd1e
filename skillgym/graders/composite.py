"""A weighted composite of graders, and the compactness score as a grader of its own."""

from __future__ import annotations

from dataclasses import dataclass

from skillgym.graders.base import Grader
from skillgym.graders.compactness import compactness
from skillgym.sandbox.base import Sandbox
from skillgym.types import Grade, Message, Task


@dataclass
class Part:
    grader: Grader
    weight: float = 1.0
    name: str | None = None


class Composite:
    """Score = sum(weight * part score) / sum(weights). Each part's score is a component
    (named by ``name``, else by its type, numbered when repeated) and its details are kept."""

    def __init__(self, parts: list[Part]):
        if not parts:
            raise ValueError("a composite grader needs at least one part")
        if any(p.weight < 0 for p in parts) or sum(p.weight for p in parts) <= 0:
            raise ValueError("composite weights must be non-negative and not all zero")
        self.parts = parts
        self.names = _unique_names([p.name or _type_name(p.grader) for p in parts])

    def grade(self, task: Task, answer: str, messages: list[Message], sandbox: Sandbox | None) -> Grade:
        total = sum(p.weight for p in self.parts)
        score, components, details = 0.0, {}, {}
        for name, part in zip(self.names, self.parts):
            grade = part.grader.grade(task, answer, messages, sandbox)
            score += part.weight * grade.score
            components[name] = grade.score
            details[name] = {"weight": part.weight, "components": grade.components, **grade.details}
        return Grade(score=round(min(1.0, max(0.0, score / total)), 6), components=components, details=details)


class Compactness:
    """The subagent contract as a grader: short answers that condense the trace score high."""

    def __init__(self, budget_chars: int = 200):
        self.budget_chars = budget_chars

    def grade(self, task: Task, answer: str, messages: list[Message], sandbox: Sandbox | None) -> Grade:
        budget = int(task.reference.get("compactness_budget", self.budget_chars))
        score = compactness(answer, messages, budget)
        return Grade(
            score=score,
            components={"compactness": score},
            details={"answer_chars": len(answer.strip()), "budget_chars": budget},
        )


def _type_name(grader: Grader) -> str:
    return getattr(grader, "kind", None) or type(grader).__name__.lower()


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if names.count(name) == 1 else f"{name}_{seen[name]}")
    return out
