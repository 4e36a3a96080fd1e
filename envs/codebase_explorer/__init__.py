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

from skillgym.env import SkillEnv
from skillgym.sandbox.base import Mount, SandboxConfig
from skillgym.spec import EnvSpec, InstructionMode
from skillgym.types import SkillSpec

from .codebase import STDLIB_MODULES, STDLIB_PACKAGES, default_codebase, load_codebase
from .expert import ExpertPolicy
from .grader import CodebaseGrader
from .tasks import REPO_DIR, CodebaseTasks

__all__ = ["CodebaseGrader", "CodebaseTasks", "ExpertPolicy", "ENV_ID", "load_skill", "make_env", "make_spec"]

ENV_ID = "codebase-explorer-v0"
TOOLS = ["grep", "glob", "read_file", "list_dir", "bash", "submit"]
SKILL_PATH = Path(__file__).with_name("SKILL.md")
ENV_NOTES = (
    f"The codebase is mounted read-only at /workspace/{REPO_DIR}. "
    "When you have the answer, call submit with the answer alone."
)


def load_skill(path: Path = SKILL_PATH) -> SkillSpec:
    """Parse the project's SKILL.md: a ``key: value`` frontmatter between ``---`` lines, then the body."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---" or "---" not in (line.strip() for line in lines[1:]):
        raise ValueError(f"{path}:1: expected a frontmatter block between '---' lines")
    end = next(i for i, line in enumerate(lines[1:], start=1) if line.strip() == "---")
    fields: dict[str, str] = {}
    for lineno, line in enumerate(lines[1:end], start=2):
        key, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"{path}:{lineno}: expected 'key: value' in the frontmatter")
        fields[key.strip()] = value.strip()
    for key in ("name", "description"):
        if not fields.get(key):
            raise ValueError(f"{path}: frontmatter field {key!r} is missing or empty")
    tools = fields.get("allowed-tools")
    return SkillSpec(
        name=fields["name"],
        description=fields["description"],
        instructions="\n".join(lines[end + 1 :]).strip() + "\n",
        allowed_tools=tools.split() if tools else None,
        source_path=str(path),
    )


def make_spec(
    codebase: str | Path | None = None,
    seed: int = 0,
    instruction_mode: InstructionMode = "system",
    backend: str = "auto",
    **spec_kwargs: Any,
) -> EnvSpec:
    """The EnvSpec for ``codebase`` (a folder of Python sources; None: the stdlib subset)."""
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
        skill=load_skill(),
        tools=list(TOOLS),
        sandbox=SandboxConfig(backend=backend, mounts=[Mount(source=root, target=REPO_DIR, read_only=True)]),
        tasks=tasks,
        grader=CodebaseGrader(),
        system_prompt=ENV_NOTES,
        instruction_mode=instruction_mode,
        expert=ExpertPolicy,
        metadata=metadata,
        **options,
    )


def make_env(
    codebase: str | Path | None = None,
    split: str = "train",
    seed: int = 0,
    instruction_mode: InstructionMode = "system",
    backend: str = "auto",
    **env_kwargs: Any,
) -> SkillEnv:
    """A SkillEnv over ``codebase``. Extra keyword arguments go to :class:`EnvSpec` when they are
    spec fields (``max_turns``, ``max_tool_output``, ...) and to :class:`SkillEnv` otherwise."""
    spec_fields = set(EnvSpec.model_fields)
    spec_kwargs = {k: v for k, v in env_kwargs.items() if k in spec_fields}
    other = {k: v for k, v in env_kwargs.items() if k not in spec_fields}
    spec = make_spec(codebase, seed=seed, instruction_mode=instruction_mode, backend=backend, **spec_kwargs)
    return SkillEnv(spec, split=split, **other)
