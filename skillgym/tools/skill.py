"""``load_skill``: progressive disclosure of a skill's instructions (the model asks for them)."""

from __future__ import annotations

from skillgym.sandbox.base import Sandbox
from skillgym.tools.base import Tool, ToolArgs
from skillgym.types import SkillSpec


class LoadSkillArgs(ToolArgs):
    pass


class LoadSkill(Tool):
    """Built per skill: the description tells the model what it would load."""

    name = "load_skill"
    description = "Load the full instructions of the skill named in the system prompt."
    Args = LoadSkillArgs

    def __init__(self, skill: SkillSpec):
        self.skill = skill

    def __call__(self, sandbox: Sandbox, args: LoadSkillArgs) -> str:
        return f"# Skill: {self.skill.name}\n\n{self.skill.instructions.strip()}"
