"""Built-in environments. Each registers a spec factory by a ``"module:function"`` string, so
nothing heavy is imported until an env is read or made."""

from skillgym.registry import register

register(
    "codebase-explorer-v0",
    spec_entry_point="skillgym.envs.codebase_explorer:make_spec",
    description="Explore-style subagent: answer questions about a Python codebase with grep and read.",
)
