"""The orchestrator's own tools: ``subagent`` and ``list_subagents``.

They run on the host, not in the orchestrator's sandbox: each holds the
:class:`~skillgym.orchestrator.env.OrchestratorEnv` that offers it and asks it to start,
wait for and record the call (the env runs several calls of one turn concurrently; see
``OrchestratorEnv.step``). Called on their own (``tool(sandbox, args)``, as the core env does
for a call it did not start ahead), they run the call there and then.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from skillgym.sandbox.base import Sandbox
from skillgym.tools.base import Tool, ToolArgs

if TYPE_CHECKING:
    from .env import OrchestratorEnv

__all__ = ["ListSubagents", "SubagentTool"]


class SubagentArgs(ToolArgs):
    prompt: str = Field(
        min_length=1, description="The task for the subagent, complete in itself: it sees nothing else."
    )
    config: str | dict[str, Any] = Field(
        description="The subagent's name from list_subagents (or, where the roster allows it, an inline "
        'definition {"env": ..., "policy": ...}).'
    )


class SubagentTool(Tool):
    name = "subagent"
    description = (
        "Delegate a task to a subagent and get back its answer, the paths of files it wrote into the shared "
        "workspace, and a one-line status (ok, truncated, timeout, error: ...). The subagent sees your workspace "
        "at /workspace/shared. Several subagent calls in one turn run at the same time."
    )
    Args = SubagentArgs

    def __init__(self, env: OrchestratorEnv) -> None:
        self.env = env

    def __call__(self, sandbox: Sandbox, args: SubagentArgs) -> str:
        return self.env.run_subagent_now(args, sandbox)


class ListSubagentsArgs(ToolArgs):
    pass


class ListSubagents(Tool):
    name = "list_subagents"
    description = "List the subagents you can call with `subagent`: one line each, 'name: description'."
    Args = ListSubagentsArgs

    def __init__(self, env: OrchestratorEnv) -> None:
        self.env = env

    def __call__(self, sandbox: Sandbox, args: ListSubagentsArgs) -> str:
        roster = self.env.roster
        if not roster.subagents:
            return "No subagents are available: answer the task yourself."
        return "\n".join(f"{s.name}: {' '.join(s.description.split())}" for s in roster.subagents)
