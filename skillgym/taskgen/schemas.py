"""What the teacher model must return, as pydantic models (validated, then repaired)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class TopicItem(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=2, max_length=120)
    description: str = Field(default="", max_length=600)


class TopicList(BaseModel):
    topics: list[TopicItem] = Field(min_length=1)

    @field_validator("topics")
    @classmethod
    def _distinct(cls, topics: list[TopicItem]) -> list[TopicItem]:
        names = [t.name.strip().lower() for t in topics]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"topic names must be distinct; repeated: {dupes}")
        return topics


class TaskDraft(BaseModel):
    """One task as the teacher writes it; the generator adds ids, splits and metadata."""

    model_config = ConfigDict(extra="ignore")

    prompt: str = Field(min_length=15, description="The user's request, as the user would write it.")
    rubric: list[str] = Field(min_length=1, max_length=8, description="Checkable criteria a good response meets.")
    files: dict[str, str] = Field(
        default_factory=dict, description="Workspace files the request refers to: path -> text."
    )
    answer: str | None = Field(default=None, description="A short gold answer, only when one exact answer exists.")
    checks: list[str] = Field(default_factory=list, description="Shell commands that exit 0 when the work is done.")

    @field_validator("rubric")
    @classmethod
    def _non_empty_items(cls, items: list[str]) -> list[str]:
        cleaned = [i.strip() for i in items if i and i.strip()]
        if not cleaned:
            raise ValueError("rubric items must be non-empty strings")
        return cleaned

    @field_validator("files")
    @classmethod
    def _relative_paths(cls, files: dict[str, str]) -> dict[str, str]:
        bad = [p for p in files if p.startswith("/") or ".." in p.split("/") or not p.strip()]
        if bad:
            raise ValueError(f"file paths must be relative and stay inside the workspace; bad: {bad}")
        return files


class TaskBatch(BaseModel):
    tasks: list[TaskDraft] = Field(min_length=1)
