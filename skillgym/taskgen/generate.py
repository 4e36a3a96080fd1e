"""Teacher-generated tasks for any skill.

1. Grow a topic graph from the skill (:mod:`skillgym.taskgen.topics`).
2. Walk a deterministic plan of batches: each batch is one leaf topic crossed with a
   persona, a difficulty and a request style (precise or vague); a share of batches asks
   for negative cases, requests near the skill's domain where it should not be used.
3. Validate every batch (:mod:`skillgym.taskgen.schemas`), repairing bad replies by showing
   the teacher its error; drop near duplicates (MinHash LSH); stop at ``n`` tasks.

The plan depends only on the config and the seed, and every LLM call is cached by request
hash, so running the same command again after an interruption replays the finished calls
from disk and continues where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, Field

from skillgym.compiler.build import slug
from skillgym.llm import ChatClient, StructuredOutputError
from skillgym.taskgen.dedupe import NearDuplicateFilter
from skillgym.taskgen.schemas import TaskBatch, TaskDraft
from skillgym.taskgen.topics import TopicGraph, TopicNode, grow_topic_graph, skill_brief
from skillgym.types import SkillSpec, Task

DEFAULT_PERSONAS = [
    "a beginner who knows little of the field and describes the goal in everyday words",
    "a busy senior practitioner who writes terse requests and expects expert work",
    "a product or project manager who cares about outcomes more than technique",
    "a student learning the subject who wants to understand the reasoning",
    "a meticulous reviewer who specifies constraints and edge cases",
]
DIFFICULTIES = ["easy", "medium", "hard"]
STYLES = {
    "precise": "The request is precise: it states the goal, the inputs and the constraints.",
    "vague": "The request is vague and underspecified, as real users often write: the assistant must infer "
    "or ask about the missing details.",
}
TASK_SYSTEM = (
    "You write realistic, self-contained tasks for evaluating an AI assistant that works in a sandboxed "
    "workspace with shell and file tools (no internet). Reply with only JSON."
)


class GenerationConfig(BaseModel):
    n: int = Field(default=100, ge=1)
    breadth: int = Field(default=6, ge=1, description="Top-level topics.")
    fanout: int = Field(default=3, ge=1, description="Subtopics per topic.")
    depth: int = Field(default=2, ge=1, le=3)
    batch_size: int = Field(default=5, ge=1, le=20, description="Tasks per teacher call.")
    personas: list[str] = Field(default_factory=lambda: list(DEFAULT_PERSONAS))
    difficulties: list[str] = Field(default_factory=lambda: list(DIFFICULTIES))
    styles: list[Literal["precise", "vague"]] = Field(default_factory=lambda: ["precise", "vague"])
    negative_fraction: float = Field(default=0.15, ge=0.0, le=0.9)
    dedupe_threshold: float = Field(default=0.7, gt=0.0, le=1.0)
    max_repairs: int = Field(default=3, ge=0)
    max_calls: int | None = Field(default=None, description="Task-batch calls before giving up; default 3*n/batch+8.")
    validation_fraction: float = Field(default=0.1, ge=0.0, le=0.5)
    test_fraction: float = Field(default=0.1, ge=0.0, le=0.5)
    seed: int = 0


class Slot(BaseModel):
    """One planned teacher call."""

    index: int
    topic_id: str
    persona: str
    difficulty: str
    style: str
    negative: bool


class GenerationResult(BaseModel):
    tasks: list[Task]
    topics: TopicGraph
    calls: int = Field(description="Task-batch calls made (cached or not).")
    failed_calls: list[str] = Field(default_factory=list, description="Batches whose replies never validated.")
    duplicates: int = 0
    http_calls: int = 0
    cache_hits: int = 0


def plan(graph: TopicGraph, config: GenerationConfig, count: int) -> list[Slot]:
    """The first ``count`` batches: leaves round-robin, the other axes shuffled per round."""
    leaves = graph.leaves() or [n for n in graph.nodes if n.depth > 0] or graph.nodes[:1]
    rng = random.Random(config.seed)
    slots: list[Slot] = []
    negatives_due = 0.0
    while len(slots) < count:
        order = list(leaves)
        rng.shuffle(order)
        for leaf in order:
            if len(slots) >= count:
                break
            negatives_due += config.negative_fraction
            negative = negatives_due >= 1.0
            if negative:
                negatives_due -= 1.0
            slots.append(
                Slot(
                    index=len(slots),
                    topic_id=leaf.id,
                    persona=rng.choice(config.personas),
                    difficulty=rng.choice(config.difficulties),
                    style=rng.choice(config.styles),
                    negative=negative,
                )
            )
    return slots


def generate_tasks(
    skill: SkillSpec,
    client: ChatClient,
    config: GenerationConfig | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> GenerationResult:
    """Generate up to ``config.n`` distinct tasks for ``skill`` with the teacher ``client``."""
    config = config or GenerationConfig()
    graph = grow_topic_graph(
        skill, client, breadth=config.breadth, fanout=config.fanout, depth=config.depth, max_repairs=config.max_repairs
    )
    by_id = {n.id: n for n in graph.nodes}
    max_calls = config.max_calls or (3 * config.n) // config.batch_size + 8
    dedupe = NearDuplicateFilter(config.dedupe_threshold)
    tasks: list[Task] = []
    failed: list[str] = []
    recent: dict[str, list[str]] = {}  # topic id -> prompts already made there (asked to avoid)
    calls = 0
    for slot in plan(graph, config, max_calls):
        if len(tasks) >= config.n:
            break
        calls += 1
        topic = by_id[slot.topic_id]
        try:
            batch, _ = client.complete_json(
                batch_messages(skill, graph, topic, slot, config, recent.get(topic.id, [])),
                TaskBatch,
                max_repairs=config.max_repairs,
            )
        except StructuredOutputError as exc:
            failed.append(f"batch {slot.index} ({topic.name}): {exc.last_error}")
            continue
        for draft in batch.tasks:
            task = to_task(skill, graph, topic, slot, draft, config, client.model)
            if len(tasks) < config.n and dedupe.add(task.id, task.prompt):
                tasks.append(task)
                recent.setdefault(topic.id, []).append(task.prompt)
        if progress:
            progress(len(tasks), config.n)
    return GenerationResult(
        tasks=tasks,
        topics=graph,
        calls=calls,
        failed_calls=failed,
        duplicates=len(dedupe.rejected),
        http_calls=client.http_calls,
        cache_hits=client.cache_hits,
    )


def batch_messages(
    skill: SkillSpec, graph: TopicGraph, topic: TopicNode, slot: Slot, config: GenerationConfig, avoid: list[str]
) -> list[dict[str, str]]:
    path = " > ".join(graph.path(topic)) or topic.name
    if slot.negative:
        goal = (
            f"Write {config.batch_size} NEGATIVE tasks: requests that sound related to '{path}' but where this "
            "skill should NOT be applied (a different approach, a plain answer, or declining fits better). The "
            "rubric must describe the right behaviour, e.g. that the assistant does not force the skill's "
            "procedure onto the request and still helps appropriately."
        )
    else:
        goal = f"Write {config.batch_size} tasks where this skill applies, about: {path} ({topic.description})."
    example = {
        "tasks": [
            {
                "prompt": "the user's message",
                "rubric": ["a checkable criterion", "another"],
                "files": {"relative/path.txt": "file content the request refers to (optional)"},
                "answer": None,
                "checks": [],
            }
        ]
    }
    lines = [
        skill_brief(skill),
        "",
        goal,
        f"Persona of the user: {slot.persona}.",
        f"Difficulty: {slot.difficulty}. {STYLES[slot.style]}",
        "Each task must be solvable offline in the workspace. When the request is about code, data or a "
        "document, include the needed files (small, realistic) in 'files' rather than describing them. Give "
        "2 to 5 rubric items a grader can verify from the transcript. Set 'answer' only when a single short "
        "correct answer exists; add shell 'checks' only when a command can verify the result.",
        f"Batch {slot.index + 1}: make the tasks different from each other and from earlier ones.",
    ]
    if avoid:
        lines.append(
            "Earlier tasks on this topic (do not repeat them):\n" + "\n".join(f"- {p[:160]}" for p in avoid[-8:])
        )
    lines.append(f"Reply with JSON like {json.dumps(example)}.")
    return [{"role": "system", "content": TASK_SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


def to_task(
    skill: SkillSpec,
    graph: TopicGraph,
    topic: TopicNode,
    slot: Slot,
    draft: TaskDraft,
    config: GenerationConfig,
    teacher: str,
) -> Task:
    digest = hashlib.sha256(f"{skill.name}\n{draft.prompt.strip()}".encode()).hexdigest()
    reference: dict = {"rubric": draft.rubric, "skill_applies": not slot.negative}
    if draft.answer:
        reference["answer"] = draft.answer
    if draft.checks:
        reference["checks"] = [{"command": c} for c in draft.checks]
    bucket = int(digest[:8], 16) / 0xFFFFFFFF
    split = (
        "test"
        if bucket < config.test_fraction
        else "validation"
        if bucket < config.test_fraction + config.validation_fraction
        else "train"
    )
    return Task(
        id=f"{slug(skill.name)}-{digest[:12]}",
        prompt=draft.prompt.strip(),
        files=draft.files,
        reference=reference,
        split=split,  # type: ignore[arg-type]
        metadata={
            "topic": topic.name,
            "topic_path": graph.path(topic),
            "persona": slot.persona,
            "difficulty": slot.difficulty,
            "style": slot.style,
            "negative": slot.negative,
            "skill": skill.name,
            "skill_hash": skill.content_hash,
            "teacher": teacher,
        },
    )
