"""The compiler: a skill or subagent file plus tasks becomes a :class:`SkillEnv`.

What it decides, in order:

1. **Tools** — the skill's ``allowed-tools`` (or a subagent's ``tools``) mapped onto the
   built-in tools (:mod:`skillgym.tools.mapping`); ``submit`` is always there. A tool with
   no built-in equivalent is reported: a ``UserWarning`` and
   ``env_spec.metadata["unmapped_tools"]``.
2. **Files** — a skill's folder is mounted read-only at ``/workspace/.skill``
   (:data:`SKILL_MOUNT`) and the system prompt says so, so bundled scripts and references
   are at hand. A subagent is a single file: nothing is mounted.
3. **Image** — the scripts' dependencies (:mod:`skillgym.compiler.deps`) are installed in a
   derived image cached by skill hash (:mod:`skillgym.compiler.image`); none -> base image.
4. **Instructions** — ``instruction_mode``: ``system`` (skill text in the system prompt),
   ``load_skill`` (name and description only; the text on demand through a tool) or
   ``none`` (the ablation: same tasks, same tools, same image, no skill text and no mount).
"""

from __future__ import annotations

import inspect
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from skillgym.cache import cache_root
from skillgym.compiler.deps import SkillDependencies, detect_dependencies
from skillgym.env import SkillEnv
from skillgym.graders.base import Grader
from skillgym.graders.config import TaskReferenceGrader, grader_from_config
from skillgym.sandbox.base import Mount, SandboxConfig
from skillgym.spec import EnvSpec
from skillgym.tasks import TaskList, TaskSource, load_tasks_jsonl
from skillgym.tools.mapping import map_tools
from skillgym.types import SkillSpec, Task

SKILL_MOUNT = ".skill"
"""Where a skill's folder appears, relative to the workspace (read-only)."""
SKILL_DIR = f"/workspace/{SKILL_MOUNT}"
SKILLS_PATH_ENV = "SKILLGYM_SKILLS_PATH"
TASKS_DIR_ENV = "SKILLGYM_TASKS_DIR"
MODES = ("system", "load_skill", "none")

_SKILLENV_KWARGS = {n for n in inspect.signature(SkillEnv.__init__).parameters if n not in ("self", "env_spec")}
_ENVSPEC_FIELDS = set(EnvSpec.model_fields) - {"id", "skill", "tasks", "grader", "instruction_mode", "sandbox"}


class CompileError(ValueError):
    """The skill, its tasks or the options given cannot make an environment."""


def spec_from_skill(
    skill: str | Path | SkillSpec,
    tasks: TaskSource | str | Path | Sequence[Task | dict[str, Any]] | None = None,
    grader: Grader | dict[str, Any] | None = None,
    instruction_mode: str = "system",
    env_id: str | None = None,
    backend: str = "auto",
    *,
    judge: Any = None,
    build_image: bool = True,
    sandbox: SandboxConfig | dict[str, Any] | None = None,
    **spec_kwargs: Any,
) -> EnvSpec:
    """Compile a skill folder, ``SKILL.md``, agent ``.md`` file or :class:`SkillSpec` into an
    :class:`EnvSpec` (no sandbox starts; a derived image may be built, see ``build_image``).

    Args:
        skill: The skill or subagent.
        tasks: A task source, a JSONL path, or a list of tasks; None looks for the skill's
            default task file (:func:`default_task_file`).
        grader: A grader, a config dict (:func:`~skillgym.graders.grader_from_config`) or
            None, which grades each task as its ``reference`` says.
        instruction_mode: ``system``, ``load_skill`` or ``none`` (see the module docstring).
        env_id: The env's id (default: ``<skill-name>-v0``).
        backend: The sandbox backend (``auto``, ``docker``, ``local``).
        judge: The rubric judge's model spec, where a rubric is used.
        build_image: Build the skill's derived image when its scripts need packages.
        sandbox: Sandbox settings (a :class:`SandboxConfig` or its dict).
        **spec_kwargs: Other :class:`EnvSpec` fields (``max_turns``, ``tools``,
            ``system_prompt``, ...). :class:`SkillEnv` options (``split``, ...) are ignored
            here (see :func:`skillgym.make_spec`).

    Returns:
        The env's spec.
    """
    spec = _load(skill)
    if isinstance(build_image, str):  # from a command line: --env-arg build_image=false
        build_image = build_image.strip().lower() not in ("0", "false", "no", "off")
    if instruction_mode not in MODES:
        raise CompileError(f"instruction_mode {instruction_mode!r} is not one of {', '.join(MODES)}")
    source = resolve_tasks(tasks, spec)
    env_kwargs = {k: v for k, v in spec_kwargs.items() if k not in _SKILLENV_KWARGS}
    unknown = sorted(set(env_kwargs) - _ENVSPEC_FIELDS)
    if unknown:
        raise CompileError(
            f"unknown option(s) {unknown} for skill {spec.name!r}; EnvSpec takes {sorted(_ENVSPEC_FIELDS)}, "
            f"SkillEnv takes {sorted(_SKILLENV_KWARGS)}"
        )

    mapping = map_tools(spec.allowed_tools)
    if mapping.unmapped:
        warnings.warn(
            f"skill {spec.name!r}: tool(s) {mapping.unmapped} have no built-in equivalent and are not offered "
            f"(see env_spec.metadata['unmapped_tools'])",
            UserWarning,
            stacklevel=2,
        )
    tools = list(env_kwargs.pop("tools", None) or mapping.tools)
    if "submit" not in tools:
        tools.append("submit")

    config = _sandbox_config(sandbox, backend)
    deps = detect_dependencies(spec)
    image_note = _choose_image(spec, deps, config, build_image)
    folder = _skill_folder(spec)
    if folder is not None and instruction_mode != "none":
        config.mounts = [*config.mounts, Mount(source=folder, target=SKILL_MOUNT, read_only=True)]

    if isinstance(grader, dict):
        grader = grader_from_config(grader, skill=spec, judge=judge)
    elif grader is None:
        grader = TaskReferenceGrader(skill=spec, judge=judge)
        _warn_if_judge_missing(grader, source, spec)

    notes = [env_kwargs.pop("system_prompt", "")]
    if folder is not None and instruction_mode != "none":
        notes.append(skill_files_note(spec))
    metadata = {
        **env_kwargs.pop("metadata", {}),
        "skill_name": spec.name,
        "skill_kind": spec.kind,
        "skill_hash": spec.content_hash,
        "skill_source": spec.source_path,
        "instruction_mode": instruction_mode,
        "unmapped_tools": list(mapping.unmapped),
        "tool_mapping": mapping.mapped,
        "tool_restrictions": mapping.restrictions,
        "tools_defaulted": mapping.defaulted,
        "skill_mount": SKILL_DIR if folder is not None and instruction_mode != "none" else None,
        "dependencies": deps.model_dump(),
        "image": image_note,
    }
    return EnvSpec(
        id=env_id or default_env_id(spec),
        description=spec.description,
        # The ablation keeps the skill out of the spec entirely, so nothing can leak it.
        skill=None if instruction_mode == "none" else spec,
        tools=tools,
        sandbox=config,
        tasks=source,
        grader=grader,
        system_prompt="\n\n".join(n for n in notes if n),
        instruction_mode=instruction_mode,  # type: ignore[arg-type]
        metadata=metadata,
        **env_kwargs,
    )


def from_skill(skill: str | Path | SkillSpec, *args: Any, **kwargs: Any) -> SkillEnv:
    """A convenience: ``SkillEnv(spec_from_skill(skill, ...), split=..., ...)``.

    Takes the arguments of :func:`spec_from_skill`, plus :class:`SkillEnv` options
    (``split``, ``render_mode``, ``sandbox_factory``, ...).
    """
    env_args = {k: kwargs.pop(k) for k in list(kwargs) if k in _SKILLENV_KWARGS and k != "sandbox"}
    return SkillEnv(spec_from_skill(skill, *args, **kwargs), **env_args)


def spec_from_library(name: str, library_paths: Sequence[str | Path] | str | None = None, **kwargs: Any) -> EnvSpec:
    """``skillgym.make_spec("skill:<name>")``: find ``name`` in the skill library and compile it.

    Args:
        name: The skill's name, optionally qualified with part of its path
            (``wshobson-agents/sql-pro``) when several skills share it.
        library_paths: Folders to search; default ``$SKILLGYM_SKILLS_PATH`` (separated by
            ``os.pathsep``).
        **kwargs: As for :func:`spec_from_skill`.

    Returns:
        The compiled spec.
    """
    from skillgym.skills import SkillLibrary

    if isinstance(library_paths, str):
        library_paths = [p for p in library_paths.split(os.pathsep) if p]
    paths = list(library_paths or [p for p in os.environ.get(SKILLS_PATH_ENV, "").split(os.pathsep) if p])
    if not paths:
        raise CompileError(
            f"skill:{name}: no skill library to look in; set {SKILLS_PATH_ENV} to skill folders "
            f"(separated by {os.pathsep!r}) or pass library_paths=[...]"
        )
    spec = SkillLibrary(paths).get(name)
    return spec_from_skill(spec, **kwargs)


def resolve_tasks(tasks: Any, spec: SkillSpec) -> TaskSource:
    if tasks is None:
        found = find_task_file(spec)
        if found is None:
            candidates = ", ".join(str(p) for p in task_file_candidates(spec))
            raise CompileError(
                f"skill {spec.name!r} has no tasks: pass tasks= (a JSONL file, a list of Task or a task source), "
                f"or generate some with `skillgym tasks generate` into one of: {candidates}"
            )
        return load_tasks_jsonl(found)
    if isinstance(tasks, (str, Path)):
        path = Path(tasks)
        if not path.is_file():
            raise CompileError(f"task file {path} does not exist")
        return load_tasks_jsonl(path)
    if isinstance(tasks, TaskSource):
        return tasks
    if isinstance(tasks, Sequence):
        return TaskList(t if isinstance(t, Task) else Task.model_validate(t) for t in tasks)
    raise CompileError(f"tasks must be a task source, a JSONL path or a list of tasks, not {type(tasks).__name__}")


def task_file_candidates(spec: SkillSpec) -> list[Path]:
    """Where a skill's tasks are looked for when none are given, in order."""
    out = []
    folder = _skill_folder(spec)
    if folder is not None:
        out.append(folder / "tasks.jsonl")
    out.append(default_task_file(spec))
    return out


def find_task_file(spec: SkillSpec) -> Path | None:
    return next((p for p in task_file_candidates(spec) if p.is_file()), None)


def default_task_file(spec: SkillSpec | str) -> Path:
    """``$SKILLGYM_TASKS_DIR/<name>.jsonl`` (default ``~/.cache/skillgym/tasks``): where
    ``skillgym tasks generate`` writes when no ``--out`` is given."""
    name = spec.name if isinstance(spec, SkillSpec) else spec
    base = Path(os.environ[TASKS_DIR_ENV]) if os.environ.get(TASKS_DIR_ENV) else cache_root() / "tasks"
    return base / f"{slug(name)}.jsonl"


def default_env_id(spec: SkillSpec) -> str:
    return f"{slug(spec.name)}-v0"


def slug(text: str) -> str:
    out = re.sub(r"[^a-z0-9_.-]+", "-", text.lower()).strip("-.")
    return out or "skill"


def skill_files_note(spec: SkillSpec) -> str:
    listing = ", ".join(spec.files[:20]) + (f", and {len(spec.files) - 20} more" if len(spec.files) > 20 else "")
    text = (
        f"The skill's folder is available read-only at {SKILL_DIR} (relative: {SKILL_MOUNT}/). "
        f"Paths the skill mentions, such as scripts/ or references/, are relative to that folder; "
        f"run bundled scripts from there (e.g. `python3 {SKILL_MOUNT}/scripts/<name>.py`) and write outputs "
        f"elsewhere in /workspace."
    )
    if listing:
        text += f" Files: SKILL.md, {listing}."
    return text


def _warn_if_judge_missing(grader: TaskReferenceGrader, source: TaskSource, spec: SkillSpec) -> None:
    """Rubric-only tasks (what `skillgym tasks generate` writes) score 0 without a judge: say so now."""
    if grader.judge is not None:
        return
    rubric_only = [
        t.id
        for split in ("train", "validation", "test")
        for t in source.tasks(split)
        if t.reference.get("rubric") and not {"answer", "checks", "grader"} & t.reference.keys()
    ]
    if rubric_only:
        warnings.warn(
            f"skill {spec.name!r}: {len(rubric_only)} task(s) (e.g. {rubric_only[0]!r}) are graded only by a rubric, "
            "and no judge is configured: pass judge='openai:MODEL@URL' or set SKILLGYM_JUDGE",
            UserWarning,
            stacklevel=3,
        )


def _load(skill: str | Path | SkillSpec) -> SkillSpec:
    if isinstance(skill, SkillSpec):
        return skill
    from skillgym.skills import load_any

    path = Path(skill)
    if not path.exists():
        raise CompileError(f"skill path {path} does not exist (give a skill folder, a SKILL.md or an agent .md file)")
    return load_any(path)


def _skill_folder(spec: SkillSpec) -> Path | None:
    """The folder to mount: a skill's own folder; never a subagent's (its folder holds others)."""
    folder = spec.folder
    if spec.kind != "skill" or folder is None or not folder.is_dir():
        return None
    return folder.resolve()


def _sandbox_config(sandbox: SandboxConfig | dict[str, Any] | None, backend: str) -> SandboxConfig:
    if isinstance(sandbox, SandboxConfig):
        config = sandbox.model_copy(deep=True)
    else:
        config = SandboxConfig.model_validate(sandbox or {})
    if sandbox is None or backend != "auto":
        config.backend = backend  # type: ignore[assignment]
    return config


def _choose_image(spec: SkillSpec, deps: SkillDependencies, config: SandboxConfig, build: bool) -> dict[str, Any]:
    """Point ``config.image`` at the skill's derived image when its scripts need one."""
    note: dict[str, Any] = {"tag": config.image, "derived": False}
    if deps.empty or not build or config.backend == "local":
        if not deps.empty:
            note["warning"] = "dependencies not installed: the local backend uses the host's tools"
        return note
    from skillgym.sandbox import docker_available

    if not docker_available():
        if config.backend == "docker":
            raise CompileError(f"skill {spec.name!r} needs a derived image but no Docker engine answers")
        note["warning"] = "no Docker engine: dependencies not installed"
        return note
    from skillgym.compiler.image import ensure_skill_image
    from skillgym.sandbox.images import ImageBuildError

    try:
        config.image = ensure_skill_image(spec, deps)
    except ImageBuildError as exc:
        if config.backend == "docker":
            raise CompileError(f"skill {spec.name!r}: {exc}") from exc
        warnings.warn(
            f"skill {spec.name!r}: derived image failed, scripts may lack packages: {exc}", UserWarning, stacklevel=3
        )
        note["warning"] = f"derived image build failed: {str(exc)[:300]}"
        return note
    note.update(tag=config.image, derived=True)
    return note


__all__ = [
    "CompileError",
    "SKILL_DIR",
    "SKILL_MOUNT",
    "default_task_file",
    "find_task_file",
    "from_skill",
    "resolve_tasks",
    "spec_from_library",
    "spec_from_skill",
]
