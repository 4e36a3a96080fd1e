"""Skills and subagents: loading, strict validation, and a searchable library.

from skillgym.skills import SkillLibrary, load_any, validate_path

lib = SkillLibrary(["skills/"], embedding_model="wordllama")   # offline embeddings
lib.search("my app crashes randomly", mode="hybrid")
lib.route("the checkout page crashes", {"debugger": "...", "designer": "..."})  # or decline
"""

from skillgym.skills.library import AmbiguousSkillName, RouteDecision, SkillLibrary
from skillgym.skills.loader import SkillLoadError, load_agent, load_any, load_collection, load_skill
from skillgym.skills.search import SearchError, SearchHit, available_modes
from skillgym.skills.validate import ValidationIssue, validate_path

__all__ = [
    "AmbiguousSkillName",
    "RouteDecision",
    "SearchError",
    "SearchHit",
    "SkillLibrary",
    "SkillLoadError",
    "ValidationIssue",
    "available_modes",
    "load_agent",
    "load_any",
    "load_collection",
    "load_skill",
    "validate_path",
]
