"""The roster: which subagents an orchestrator may call, who plays each, and what a call may cost.

A roster is a YAML file (or the same data in Python) that names subagents. Each entry says
what the orchestrator sees (``description``), which environment defines the subagent (its
system prompt, tools and sandbox: a registered id, ``skill:NAME``, a skill folder or agent
file, or ``module:function``), which policy plays it (any policy spec: ``expert``,
``hf:PATH``, ``openai:MODEL@URL``; a vLLM LoRA adapter is ``openai:ADAPTER@URL``), its limits
and its prices. Swapping the ``policy`` line swaps a large model for the distilled student::

    subagents:
      - name: codebase-explorer
        description: Answers questions about the Python codebase ...
        env: codebase-explorer-v0
        policy: openai:student@http://127.0.0.1:8000/v1
        limits: {max_turns: 10, timeout_s: 120}
        prices: {input_per_million: 0.0, output_per_million: 0.0}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from skillgym.io import read_yaml_mapping, validation_message
from skillgym.policies.spec import parse_policy_spec
from skillgym.types import Usage

__all__ = ["Limits", "Prices", "Roster", "RosterError", "SubagentConfig", "load_roster"]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"


class RosterError(ValueError):
    """A roster file or inline subagent definition is invalid; the message names the field."""


class Limits(BaseModel):
    """What one subagent call may use.

    Args:
        max_turns: Assistant turns of the nested episode (None: the env's own limit).
        max_tokens: Token budget of the nested conversation (None: the env's own).
        timeout_s: Wall-clock seconds of the nested episode (turns, tools, grading) before the
            call is stopped and reported as ``timeout``; building the subagent's env and
            starting its sandbox (once per slot) are not counted.
        max_answer_chars: Characters of the answer handed back to the orchestrator; a longer
            answer is cut and the tool message says so.
    """

    model_config = ConfigDict(extra="forbid")

    max_turns: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=256)
    timeout_s: float = Field(default=300.0, gt=0)
    max_answer_chars: int = Field(default=4_000, ge=100)


class Prices(BaseModel):
    """US dollars per million tokens, for cost accounting."""

    model_config = ConfigDict(extra="forbid")

    input_per_million: float = Field(default=0.0, ge=0)
    output_per_million: float = Field(default=0.0, ge=0)

    def cost(self, usage: Usage) -> float:
        """The dollar cost of ``usage`` at these prices."""
        return (usage.prompt_tokens * self.input_per_million + usage.completion_tokens * self.output_per_million) / 1e6


class SubagentConfig(BaseModel):
    """One subagent the orchestrator may call.

    Args:
        name: What the orchestrator passes as ``config``.
        description: What the orchestrator reads in ``list_subagents`` (and what the scripted
            router matches tasks against).
        env: The environment that defines the subagent: a registered id (``name-vN``),
            ``skill:NAME``, a path to a skill folder / ``SKILL.md`` / agent ``.md`` file, or a
            ``module:function`` spec factory.
        env_args: Options for the env's spec factory (``backend``, ``codebase``, ...).
        policy: Who plays it: any policy spec (``expert``, ``hf:PATH``, ``openai:MODEL@URL``).
        limits: Turns, tokens, wall-clock timeout, answer length.
        prices: Dollars per million input/output tokens.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    description: str = Field(min_length=1)
    env: str = Field(min_length=1)
    env_args: dict[str, Any] = Field(default_factory=dict)
    policy: str = "expert"
    limits: Limits = Field(default_factory=Limits)
    prices: Prices = Field(default_factory=Prices)

    @field_validator("policy")
    @classmethod
    def _valid_policy(cls, value: str) -> str:
        return str(parse_policy_spec(value))  # raises with the accepted syntax

    @property
    def model(self) -> str:
        """The label costs are rolled up under: the policy spec without its options."""
        return self.policy.partition("?")[0]


class Roster(BaseModel):
    """The subagents an orchestrator may call.

    Args:
        subagents: The entries; names are unique.
        allow_inline: Whether the orchestrator may pass an inline definition (a dict with
            ``env`` and ``policy``) as ``config`` instead of a roster name. Off by default: an
            inline definition lets model output choose which model endpoint the host calls.
        orchestrator_prices: Prices of the orchestrator's own model, for the roll-up.
    """

    model_config = ConfigDict(extra="forbid")

    subagents: list[SubagentConfig] = Field(default_factory=list)
    allow_inline: bool = False
    orchestrator_prices: Prices = Field(default_factory=Prices)

    @model_validator(mode="after")
    def _unique(self) -> Roster:
        seen: set[str] = set()
        for entry in self.subagents:
            if entry.name in seen:
                raise ValueError(f"subagent name {entry.name!r} appears twice; names must be unique")
            seen.add(entry.name)
        return self

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.subagents]

    def get(self, name: str) -> SubagentConfig:
        """The entry called ``name`` (a ``KeyError`` listing the roster otherwise)."""
        for entry in self.subagents:
            if entry.name == name:
                return entry
        raise KeyError(f"no subagent named {name!r}; the roster has: {', '.join(self.names) or 'none'}")

    def with_policy(self, name: str, policy: str) -> Roster:
        """A copy with ``name`` played by ``policy`` (the baselines: same roster, another model)."""
        self.get(name)
        entries = [
            s.model_copy(update={"policy": str(parse_policy_spec(policy))}) if s.name == name else s
            for s in self.subagents
        ]
        return self.model_copy(update={"subagents": entries})

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude_defaults=True), sort_keys=False)


def load_roster(source: Roster | dict[str, Any] | str | Path) -> Roster:
    """A roster from a :class:`Roster`, its dict, or a YAML file.

    Args:
        source: The roster, its data, or the path of a YAML file.

    Returns:
        The validated roster.

    Raises:
        RosterError: naming the file and the field that is wrong.
    """
    if isinstance(source, Roster):
        return source
    where = "roster"
    if isinstance(source, (str, Path)):
        where = str(Path(source).expanduser())
        source = read_yaml_mapping(source, RosterError, "roster")
    if not isinstance(source, dict):
        raise RosterError(f"{where}: expected a mapping with a 'subagents' list, got {type(source).__name__}")
    try:
        return Roster.model_validate(source)
    except ValidationError as exc:
        raise RosterError(f"{where}: {validation_message(exc)}") from None


def parse_inline(config: dict[str, Any]) -> SubagentConfig:
    """An inline subagent definition (``config`` given as a dict in a tool call)."""
    data = dict(config)
    data.setdefault("name", "inline")
    data.setdefault("description", f"inline subagent on {data.get('env', '?')}")
    try:
        return SubagentConfig.model_validate(data)
    except ValidationError as exc:
        raise RosterError(f"inline config: {validation_message(exc)}") from None
