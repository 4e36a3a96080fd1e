"""skillgym: agent skills and subagents as environments, data, and small models.

import skillgym
spec = skillgym.make_spec("codebase-explorer-v0")   # what the env is; starts nothing
env = skillgym.make("codebase-explorer-v0")          # SkillEnv(spec); its sandbox starts on reset
observation, info = env.reset(seed=0)
"""

from skillgym.compiler import from_skill
from skillgym.env import SkillEnv
from skillgym.episode import arun_episode, run_episode
from skillgym.registry import list_envs, make, make_spec, register
from skillgym.spec import EnvSpec
from skillgym.types import Grade, SkillSpec, Task, Trajectory

__version__ = "0.1.0"

__all__ = [
    "EnvSpec",
    "Grade",
    "SkillEnv",
    "SkillSpec",
    "Task",
    "Trajectory",
    "arun_episode",
    "from_skill",
    "list_envs",
    "make",
    "make_spec",
    "register",
    "run_episode",
    "__version__",
]

# Built-in envs register themselves with Gymnasium on first use of the registry; importing
# them here keeps `gymnasium.make("skillgym/<id>")` working right after `import skillgym`.
from skillgym.registry import _load_builtins as _load

_load()
del _load
