"""codebase-explorer-v0: an Explore-style subagent that answers questions about Python code.

The codebase (by default a fixed subset of this interpreter's standard library, see
:mod:`.codebase`; or any folder of Python sources) is mounted read-only at
``/workspace/repo``. Questions come from its syntax trees (:mod:`.tasks`), answers are graded
by exact match plus compactness (:mod:`.grader`), and :class:`ExpertPolicy` solves them
through the same tools a model gets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from skillgym.sandbox.base import Mount, SandboxConfig
from skillgym.skills.loader import load_skill as _load_skill_file
from skillgym.spec import EnvSpec, InstructionMode
from skillgym.types import SkillSpec

from .codebase import STDLIB_MODULES, STDLIB_PACKAGES, default_codebase, load_codebase
from .expert import ExpertPolicy
from .grader import CodebaseGrader
from .tasks import REPO_DIR, CodebaseTasks

__all__ = ["CodebaseGrader", "CodebaseTasks", "ExpertPolicy", "ENV_ID", "load_skill", "make_spec"]

ENV_ID = "codebase-explorer-v0"
TOOLS = ["grep", "glob", "read_file", "list_dir", "bash", "submit"]
# The skill sits in a folder of its own, so that the loader sees no bundled files but SKILL.md.
SKILL_PATH = Path(__file__).with_name("skill") / "SKILL.md"
ENV_NOTES = (
    f"The codebase is mounted read-only at /workspace/{REPO_DIR}. "
    "When you have the answer, call submit with the answer alone."
)


def load_skill(path: Path = SKILL_PATH) -> SkillSpec:
    """The project-written skill text, read with the core skills loader."""
    return _load_skill_file(path)


def make_spec(
    codebase: str | Path | None = None,
    seed: int = 0,
    instruction_mode: InstructionMode = "system",
    backend: str = "auto",
    **spec_kwargs: Any,
) -> EnvSpec:
    """The EnvSpec of codebase-explorer-v0 (registered as its spec factory).

    Args:
        codebase: A folder of Python sources; None: a fixed subset of the standard library.
        seed: Orders the tasks (splits do not depend on it).
        instruction_mode: ``system``, ``load_skill`` or ``none`` (no skill in the spec at all).
        backend: The sandbox backend (``auto``, ``docker``, ``local``).
        **spec_kwargs: Other :class:`EnvSpec` fields (``max_turns``, ``max_tool_output``, ...).

    Returns:
        The spec; ``subject_dir`` is the codebase's folder.
    """
    default = codebase is None
    root = default_codebase() if default else Path(codebase).expanduser().resolve()
    tasks = CodebaseTasks(load_codebase(root), seed=seed)
    code = tasks.codebase
    metadata = {
        "codebase": str(root),
        "codebase_name": root.name if not default else f"python-stdlib-subset ({root.name})",
        "codebase_hash": code.content_hash,
        "codebase_files": len(code.files),
        "task_counts": tasks.counts(),
        "seed": seed,
    }
    if default:
        metadata["stdlib_selection"] = {"packages": list(STDLIB_PACKAGES), "modules": list(STDLIB_MODULES)}
    options: dict[str, Any] = {"max_turns": 10, "max_tokens": 16_384}
    options.update(spec_kwargs)
    return EnvSpec(
        id=ENV_ID,
        description="Answer questions about a Python codebase with grep and read; return a compact exact answer.",
        # The ablation keeps the skill out of the spec, as the compiler does: nothing can leak
        # it, and trajectories record no skill hash for text the model never saw.
        skill=None if instruction_mode == "none" else load_skill(),
        tools=list(TOOLS),
        sandbox=SandboxConfig(backend=backend, mounts=[Mount(source=root, target=REPO_DIR, read_only=True)]),
        tasks=tasks,
        grader=CodebaseGrader(),
        system_prompt=ENV_NOTES,
        instruction_mode=instruction_mode,
        expert=ExpertPolicy,
        subject_dir=str(root),
        metadata=metadata,
        **options,
    )
