"""Built-in environments. Each sub-package registers its ids here (entry points are strings,
so nothing heavy is imported until an env is made)."""

from skillgym.registry import register

register(
    "codebase-explorer-v0",
    "skillgym.envs.codebase_explorer:make_env",
    description="Explore-style subagent: answer questions about a Python codebase with grep and read.",
)
