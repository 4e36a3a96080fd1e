"""Built-in environments. Each registers a spec factory by a ``"module:function"`` string, so
nothing heavy is imported until an env is read or made."""

from skillgym.registry import register

register(
    "codebase-explorer-v0",
    spec_entry_point="skillgym.envs.codebase_explorer:make_spec",
    description="Explore-style subagent: answer questions about a Python codebase with grep and read.",
)

register(
    "web-research-v0",
    spec_entry_point="skillgym.envs.web_research:make_spec",
    description="Research subagent: web_search and web_fetch over an offline corpus; a short answer with sources.",
)

register(
    "frontend-design-v0",
    spec_entry_point="skillgym.envs.frontend_design:make_spec",
    description="Designer subagent: write a page from a brief, check it in headless Chromium, submit its path.",
)

# The orchestrator needs its own env class (host-side subagent tools), so it registers an env
# factory. A string, not an import: envs depend on the core only, and this names the stage that
# implements the env without loading it until someone makes one.
register(
    "orchestrator-v0",
    entry_point="skillgym.orchestrator.env:make_env",
    description="Orchestrator: delegate to subagents with subagent(prompt, config) (Part 2).",
)
