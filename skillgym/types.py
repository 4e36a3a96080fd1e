"""The records that cross skillgym's boundaries: skills, tasks, grades and trajectories.

Everything here is a pydantic model so it validates on the way in and serializes losslessly
on the way out (trajectory shards, task files, dataset export).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Message = dict[str, Any]
"""One OpenAI-format chat message: ``role``, ``content`` and optionally ``tool_calls``,
``tool_call_id``, ``name`` and ``reasoning_content``. Kept as a plain dict because it must
round-trip byte for byte through providers, datasets and chat templates."""

Split = Literal["train", "validation", "test"]


class SkillSpec(BaseModel):
    """A parsed skill (Agent Skills ``SKILL.md`` folder) or subagent definition (agent ``.md``)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str
    instructions: str = Field(description="The body of the file: the skill text or system prompt.")
    kind: Literal["skill", "agent"] = "skill"
    allowed_tools: list[str] | None = Field(
        default=None, description="Tool names the skill asks for; None means no restriction."
    )
    files: list[str] = Field(default_factory=list, description="Bundled files, relative to the skill folder.")
    license: str | None = None
    model: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict, description="Every other frontmatter field.")
    source_path: str | None = None
    content_hash: str = ""

    def model_post_init(self, __context: Any) -> None:
        if not self.content_hash:
            self.content_hash = self.compute_hash()

    def compute_hash(self) -> str:
        """sha256 over the fields that change what a model sees (not where the file lives)."""
        payload = json.dumps(
            {
                "name": self.name,
                "description": self.description,
                "instructions": self.instructions,
                "allowed_tools": self.allowed_tools,
                "files": sorted(self.files),
            },
            sort_keys=True,
        )
        return "sha256:" + hashlib.sha256(payload.encode()).hexdigest()

    @property
    def folder(self) -> Path | None:
        return Path(self.source_path).parent if self.source_path else None


class Task(BaseModel):
    """One unit of work for an environment."""

    model_config = ConfigDict(extra="forbid")

    id: str
    prompt: str
    files: dict[str, str] = Field(
        default_factory=dict, description="Seed files for the workspace: relative path -> text."
    )
    reference: dict[str, Any] = Field(
        default_factory=dict,
        description="What the grader needs: gold answer, checks, rubric items, question type, ...",
    )
    metadata: dict[str, Any] = Field(default_factory=dict, description="Topic, difficulty, persona, ...")
    split: Split = "train"


class Grade(BaseModel):
    """A grader's verdict: a score in [0, 1] and the parts that explain it."""

    score: float = Field(ge=0.0, le=1.0)
    components: dict[str, float] = Field(default_factory=dict)
    details: dict[str, Any] = Field(default_factory=dict)


class StepTiming(BaseModel):
    """Wall time of one env step: the policy's turn is timed by the caller, tools by the env."""

    turn: int
    tool_seconds: float = 0.0
    policy_seconds: float | None = None


class ToolError(BaseModel):
    turn: int
    tool: str | None
    error: str


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Trajectory(BaseModel):
    """The lossless record of one episode: enough to replay, train on, or audit it."""

    env_id: str
    env_version: int
    task_id: str
    skill_hash: str | None = None
    policy_id: str = "unknown"
    messages: list[Message] = Field(default_factory=list)
    tools: list[dict[str, Any]] = Field(default_factory=list, description="OpenAI tool schemas offered.")
    timings: list[StepTiming] = Field(default_factory=list)
    tool_errors: list[ToolError] = Field(default_factory=list)
    reward: float | None = None
    reward_components: dict[str, float] = Field(default_factory=dict)
    grade_details: dict[str, Any] = Field(default_factory=dict)
    final_answer: str | None = None
    terminated: bool = False
    truncated: bool = False
    usage: Usage = Field(default_factory=Usage)
    token_ids: list[list[int]] | None = Field(default=None, description="Per assistant turn, when the policy gives them.")
    logprobs: list[list[float]] | None = None
    children: list[Trajectory] = Field(default_factory=list, description="Subagent episodes called from this one.")
    seed: int | None = None
    sample_index: int = 0
    status: Literal["ok", "failed"] = "ok"
    error: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def num_turns(self) -> int:
        return sum(1 for m in self.messages if m.get("role") == "assistant")
