"""The rubric judge: an LLM scores an episode against named criteria, one by one, with reasons.

Criteria come from two places: the skill (did the answer follow the approach the skill
prescribes; did it do what the user asked) and the task (``reference["rubric"]``, a list of
strings or ``{"text", "weight", "id"}`` items written for that task). The judge returns
JSON — a score in [0, 1] and a reason per criterion — which is validated, repaired by
showing the judge its mistake, and recorded in ``Grade.details`` together with the rubric
and the judge model, so a trajectory says exactly how its reward was decided.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from skillgym.llm import ChatClient
from skillgym.sandbox.base import Sandbox
from skillgym.types import Grade, Message, SkillSpec, Task

JUDGE_SYSTEM = (
    "You are a strict, fair grader of an AI assistant's work. You receive the user's request, "
    "the assistant's transcript and final answer, optional context about a skill the assistant "
    "was meant to use, and a numbered rubric. Score every criterion independently: 1 when fully "
    "met, 0.5 when partly met, 0 when not met or when the transcript gives no evidence. Give a "
    "one or two sentence reason for each score. Reply with only JSON of the form "
    '{"scores": [{"id": "<criterion id>", "score": <0|0.5|1>, "reason": "<why>"}]}, one entry per criterion.'
)


class Criterion(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    text: str
    weight: float = Field(default=1.0, ge=0)
    source: str = "task"


class CriterionScore(BaseModel):
    id: str
    score: float = Field(ge=0.0, le=1.0)
    reason: str = Field(min_length=1)


class JudgeVerdict(BaseModel):
    scores: list[CriterionScore]


def skill_criteria(skill: SkillSpec) -> list[Criterion]:
    """Generic criteria any skill implies; the skill text itself goes to the judge as context."""
    return [
        Criterion(
            id="skill_followed",
            source="skill",
            text=f"Where the skill '{skill.name}' applies, the work follows the approach and rules its "
            "instructions prescribe; where it does not apply, the assistant does not force it.",
        ),
        Criterion(
            id="request_fulfilled",
            source="skill",
            text="The final answer does what the user asked, completely and correctly.",
        ),
    ]


def task_criteria(task: Task, key: str = "rubric") -> list[Criterion]:
    items = task.reference.get(key) or []
    if isinstance(items, str):
        items = [items]
    criteria = []
    for i, item in enumerate(items, start=1):
        if isinstance(item, str):
            criteria.append(Criterion(id=f"task_{i}", text=item))
        elif isinstance(item, dict) and item.get("text"):
            criteria.append(Criterion.model_validate({"id": f"task_{i}", **item, "source": "task"}))
        else:
            raise ValueError(f"task {task.id!r} reference.{key}[{i - 1}]: expected a string or an object with 'text'")
    return criteria


class RubricJudge:
    """Grades with an LLM judge at any OpenAI-compatible endpoint.

    ``judge`` is a model spec (``openai:MODEL@URL``, or ``MODEL`` with ``OPENAI_BASE_URL``) or a
    ready :class:`~skillgym.llm.ChatClient`. ``criteria`` adds fixed criteria (strings
    or dicts) to those of the ``skill`` and of each task.
    """

    kind = "rubric"

    def __init__(
        self,
        judge: Any,
        *,
        skill: SkillSpec | None = None,
        criteria: list[str | dict[str, Any]] | None = None,
        rubric_key: str = "rubric",
        max_repairs: int = 2,
        max_transcript_chars: int = 12_000,
        max_skill_chars: int = 6_000,
        cache_dir: str | None = None,
    ):
        self.client = (
            judge
            if isinstance(judge, ChatClient)
            else ChatClient.from_spec(str(judge), temperature=0.0, cache_dir=cache_dir)
        )
        self.skill = skill
        self.fixed = [
            Criterion(id=f"fixed_{i}", text=c, source="config")
            if isinstance(c, str)
            else Criterion.model_validate({"id": f"fixed_{i}", **c, "source": "config"})
            for i, c in enumerate(criteria or [], start=1)
        ]
        self.rubric_key = rubric_key
        self.max_repairs = max_repairs
        self.max_transcript_chars = max_transcript_chars
        self.max_skill_chars = max_skill_chars

    def rubric(self, task: Task) -> list[Criterion]:
        found = (skill_criteria(self.skill) if self.skill else []) + self.fixed + task_criteria(task, self.rubric_key)
        if not found:
            raise ValueError(
                f"task {task.id!r}: the rubric judge has no criteria (no skill, no fixed criteria, "
                f"no reference.{self.rubric_key})"
            )
        return found

    def judge_messages(
        self, task: Task, answer: str, messages: list[Message], rubric: list[Criterion]
    ) -> list[Message]:
        parts = [f"## User request\n{task.prompt}"]
        if self.skill is not None:
            text = self.skill.instructions.strip()[: self.max_skill_chars]
            parts.append(f"## Skill '{self.skill.name}'\n{self.skill.description}\n\n{text}")
        parts.append(f"## Transcript\n{render_transcript(messages, self.max_transcript_chars)}")
        parts.append(f"## Final answer\n{answer}")
        parts.append("## Rubric\n" + "\n".join(f"- {c.id}: {c.text}" for c in rubric))
        return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]

    def grade(self, task: Task, answer: str, messages: list[Message], sandbox: Sandbox | None) -> Grade:
        rubric = self.rubric(task)
        wanted = {c.id for c in rubric}

        def check(verdict: JudgeVerdict) -> None:
            got = [s.id for s in verdict.scores]
            missing, extra = sorted(wanted - set(got)), sorted(set(got) - wanted)
            if missing or extra or len(got) != len(set(got)):
                raise ValueError(
                    f"the scores must cover each criterion id exactly once; missing {missing}, unknown {extra}"
                )

        verdict, attempts = self.client.complete_json(
            self.judge_messages(task, answer, messages, rubric), JudgeVerdict, max_repairs=self.max_repairs, check=check
        )
        by_id = {s.id: s for s in verdict.scores}
        total = sum(c.weight for c in rubric) or 1.0
        score = sum(c.weight * by_id[c.id].score for c in rubric) / total
        return Grade(
            score=round(score, 6),
            components={"rubric": round(score, 6)},
            details={
                "judge_model": self.client.model,
                "judge_base_url": self.client.base_url,
                "judge_attempts": attempts,
                "rubric": [c.model_dump() for c in rubric],
                "scores": [by_id[c.id].model_dump() for c in rubric],
            },
        )


def render_transcript(messages: list[Message], limit: int) -> str:
    """The episode after the system prompt, compact; the middle is cut when over ``limit``."""
    lines = []
    for m in messages:
        role = m.get("role")
        if role == "system":
            continue
        text = str(m.get("content") or "")
        for call in m.get("tool_calls") or []:
            fn = call.get("function", {})
            text += f"\n[call {fn.get('name')}({fn.get('arguments')})]"
        lines.append(f"[{role}] {text}")
    out = "\n".join(lines)
    if len(out) > limit:
        half = limit // 2
        out = out[:half] + f"\n[... {len(out) - limit} characters cut ...]\n" + out[-half:]
    return out
