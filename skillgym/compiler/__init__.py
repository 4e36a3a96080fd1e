"""The compiler: any skill or subagent becomes an environment.

env = skillgym.from_skill("path/to/skill", tasks="tasks.jsonl")
env = skillgym.make("skill:frontend-design", tasks="tasks.jsonl", instruction_mode="none")
"""

from skillgym.compiler.build import (
    MODES,
    SKILL_DIR,
    SKILL_MOUNT,
    CompileError,
    default_env_id,
    default_task_file,
    find_task_file,
    from_skill,
    resolve_tasks,
    spec_from_library,
    spec_from_skill,
)
from skillgym.compiler.deps import SkillDependencies, detect_dependencies

__all__ = [
    "MODES",
    "SKILL_DIR",
    "SKILL_MOUNT",
    "CompileError",
    "SkillDependencies",
    "default_env_id",
    "default_task_file",
    "detect_dependencies",
    "find_task_file",
    "from_skill",
    "resolve_tasks",
    "spec_from_library",
    "spec_from_skill",
]
