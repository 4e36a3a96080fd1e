"""Skills and subagents: loading, strict validation, and a searchable library.

    from skillgym.skills import SkillLibrary, load_any, validate_path
"""

from skillgym.skills.library import AmbiguousSkillName, SkillLibrary
from skillgym.skills.loader import SkillLoadError, load_agent, load_any, load_collection, load_skill
from skillgym.skills.search import SearchError, SearchHit
from skillgym.skills.validate import ValidationIssue, validate_path

__all__ = [
    "AmbiguousSkillName",
    "SearchError",
    "SearchHit",
    "SkillLibrary",
    "SkillLoadError",
    "ValidationIssue",
    "load_agent",
    "load_any",
    "load_collection",
    "load_skill",
    "validate_path",
]
