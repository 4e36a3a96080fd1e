"""EnvSpec: everything that defines an environment, in one validated record."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from skillgym.graders.base import Grader
from skillgym.sandbox.base import SandboxConfig
from skillgym.tasks import TaskSource
from skillgym.types import SkillSpec

ENV_ID_RE = re.compile(r"^(?P<name>[a-z0-9][a-z0-9_.:-]*?)-v(?P<version>\d+)$")

InstructionMode = Literal["system", "load_skill", "none"]


class EnvSpec(BaseModel):
    """An environment: a skill, its tools and sandbox, a task source and a grader.

    ``instruction_mode`` decides how the skill reaches the model: its text in the system
    prompt (``system``), on demand through a ``load_skill`` tool (``load_skill``), or not at
    all (``none``, the ablation that measures what the skill is worth).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    id: str = Field(description="'name-vN', e.g. 'codebase-explorer-v0'.")
    description: str = ""
    skill: SkillSpec | None = None
    tools: list[str] = Field(default_factory=lambda: ["bash", "read_file", "glob", "grep", "list_dir", "submit"])
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    tasks: TaskSource
    grader: Grader
    system_prompt: str = Field(default="", description="Environment notes appended to the system prompt.")
    instruction_mode: InstructionMode = "system"
    max_turns: int = Field(default=16, ge=1)
    max_tokens: int = Field(default=32_768, ge=256, description="Token budget for the whole conversation.")
    max_tool_output: int = Field(default=8_000, ge=200, description="Characters of one tool result shown to the model.")
    expert: Callable[[], Any] | None = Field(default=None, description="Factory of the env's scripted expert policy.")
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not ENV_ID_RE.match(value):
            raise ValueError(f"env id {value!r} must look like 'name-vN' (lowercase, e.g. 'my-skill-v0')")
        return value

    @property
    def name(self) -> str:
        return ENV_ID_RE.match(self.id)["name"]  # type: ignore[index]

    @property
    def version(self) -> int:
        return int(ENV_ID_RE.match(self.id)["version"])  # type: ignore[index]
