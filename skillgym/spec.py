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

    The spec is the whole definition of an env and costs nothing to build: reading it
    (:func:`skillgym.make_spec`) starts no sandbox. :class:`~skillgym.env.SkillEnv` runs it.

    Args:
        id: ``name-vN``, e.g. ``codebase-explorer-v0``; ``name`` and ``version`` are its parts.
        description: One line about the env.
        skill: The skill (or subagent) whose text the model gets; None for none.
        tools: Built-in tool names offered to the model (see :mod:`skillgym.tools`).
        sandbox: Image, limits, mounts and backend of the sandbox each env starts.
        tasks: The task source (``tasks(split)``, ``get(task_id)``), e.g. a
            :class:`~skillgym.tasks.TaskList`.
        grader: Scores a final answer in [0, 1] (``grade(task, answer, messages, sandbox)``).
        system_prompt: Env notes appended to the system message (after the skill text).
        instruction_mode: How the skill reaches the model: its text in the system prompt
            (``system``), on demand through a ``load_skill`` tool (``load_skill``), or not at
            all (``none``, the ablation that measures what the skill is worth; trajectories
            then record no skill hash).
        max_turns: Assistant turns before the episode is truncated.
        max_identical_turns: Consecutive identical turns (the same assistant message, tool calls
            and tool results) after which the episode is truncated as stuck; None: never. A policy
            that meets the same result with the same turn again and again (a small model repeating
            one malformed call) then ends in a few turns with reward 0 and a reason, instead of
            running to the turn budget or the episode's time limit.
        max_tokens: Token budget of the whole conversation.
        loose_string_calls: Run a call whose only argument is a string that holds unescaped
            double quotes or raw line breaks (``{"answer": "mod: "value""}``, what small models
            write when they copy quoted text) as that string, instead of refusing it as invalid
            JSON; the trajectory's ``repairs`` record each such reading. Off by default, so
            that training rewards the valid JSON strict servers require; for serving a small
            model as a subagent.
        max_tool_output: Characters of one tool result shown to the model.
        host_tools: Tools that run on the host instead of in the sandbox (their ``__call__``
            ignores the sandbox): for tools that need what the sandbox must not have, such as
            a search index or the network. Offered after the built-in tools, before ``submit``.
        expert: Factory of the env's scripted expert policy (the ``expert`` policy spec).
        subject_dir: The folder the env's tasks are about (e.g. the codebase an explorer
            searches), or None. Pipelines keep it out of warm-up and pretraining data, so a
            student cannot memorize the answers' source.
        metadata: Anything else worth recording (codebase hash, task counts, image, ...).
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
    max_identical_turns: int | None = Field(
        default=3,
        ge=2,
        description="Consecutive identical turns before the episode is truncated as stuck; None: never.",
    )
    max_tokens: int = Field(default=32_768, ge=256, description="Token budget for the whole conversation.")
    loose_string_calls: bool = Field(
        default=False,
        description="Read a one-string-argument call with unescaped quotes or raw line breaks instead of refusing it.",
    )
    max_tool_output: int = Field(default=8_000, ge=200, description="Characters of one tool result shown to the model.")
    host_tools: list[Any] = Field(
        default_factory=list,
        description="Tool objects (skillgym.tools.Tool) whose calls run in the host process, not in the "
        "sandbox (e.g. web_search over a local index): offered after the built-in tools, before submit.",
    )
    expert: Callable[[], Any] | None = Field(default=None, description="Factory of the env's scripted expert policy.")
    subject_dir: str | None = Field(
        default=None,
        description="The folder the env's tasks are about (e.g. a codebase); pipelines keep it out of "
        "warm-up/pretraining data.",
    )
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
