"""Map the tool names a skill or subagent asks for onto skillgym's built-in tools.

Skills name tools the way their host agent does: ``Read``, ``Bash(git diff:*)``,
``mcp__github__create_issue``, ``WebSearch``. Each name either maps onto a built-in tool or is
reported as unmapped: a tool the environment cannot offer is information an evaluator needs
(the skill may be untestable offline), so it is never dropped without a trace.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from skillgym.tools.builtin import BUILTIN_TOOLS

# Given no allowed-tools, a skill runs with what a coding agent normally has.
DEFAULT_TOOLS: tuple[str, ...] = ("bash", "read_file", "write_file", "edit_file", "glob", "grep", "list_dir")

# Keys are lowercase, without separators, so "MultiEdit", "multi_edit" and "multi-edit" agree.
_ALIASES: dict[str, tuple[str, ...]] = {
    "read": ("read_file",),
    "readfile": ("read_file",),
    "view": ("read_file",),
    "cat": ("read_file",),
    "notebookread": ("read_file",),
    "write": ("write_file",),
    "writefile": ("write_file",),
    "create": ("write_file",),
    "edit": ("edit_file",),
    "editfile": ("edit_file",),
    "multiedit": ("edit_file",),
    "strreplace": ("edit_file",),
    "strreplacebasededittool": ("read_file", "write_file", "edit_file"),
    "applypatch": ("edit_file",),
    "notebookedit": ("edit_file",),
    "bash": ("bash",),
    "shell": ("bash",),
    "terminal": ("bash",),
    "exec": ("bash",),
    "runcommand": ("bash",),
    "bashoutput": ("bash",),
    "killshell": ("bash",),
    "glob": ("glob",),
    "find": ("glob",),
    "grep": ("grep",),
    "search": ("grep",),
    "ls": ("list_dir",),
    "listdir": ("list_dir",),
    "list": ("list_dir",),
    "submit": ("submit",),
}
# ``Bash(git diff:*)``: a tool with a permission pattern; the pattern only narrows the tool.
_PATTERN_RE = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*\((.*)\)\s*$", re.DOTALL)


@dataclass
class ToolMapping:
    """Built-in tools an env offers for a skill, and what could not be offered."""

    tools: list[str]
    mapped: dict[str, list[str]] = field(default_factory=dict)
    unmapped: list[str] = field(default_factory=list)
    restrictions: dict[str, list[str]] = field(default_factory=dict)
    defaulted: bool = False


def canonical(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def map_tool(name: str) -> tuple[list[str], str | None]:
    """Built-in tools for one requested tool, and its permission pattern (if any)."""
    match = _PATTERN_RE.match(name)
    base, pattern = (match.group(1), match.group(2).strip()) if match else (name.strip(), None)
    if base in BUILTIN_TOOLS:
        return [base], pattern
    if base.startswith("mcp__"):
        return [], pattern  # an MCP server's tool: nothing here can stand in for it
    return list(_ALIASES.get(canonical(base), ())), pattern


def map_tools(requested: list[str] | None, *, always: tuple[str, ...] = ("submit",)) -> ToolMapping:
    """Map a skill's ``allowed-tools`` (None: no restriction) onto built-in tool names.

    The result keeps the built-ins in a stable order (the order of :data:`DEFAULT_TOOLS`,
    then ``submit``), so two skills asking for the same tools get identical schemas.
    """
    if not requested:
        tools = list(DEFAULT_TOOLS) + [t for t in always if t not in DEFAULT_TOOLS]
        return ToolMapping(tools=tools, defaulted=True)
    chosen: set[str] = set(always)
    mapping = ToolMapping(tools=[])
    for raw in requested:
        name = str(raw).strip()
        if not name:
            continue
        targets, pattern = map_tool(name)
        if not targets:
            if name not in mapping.unmapped:
                mapping.unmapped.append(name)
            continue
        mapping.mapped[name] = targets
        chosen.update(targets)
        if pattern and pattern != "*":
            for target in targets:
                mapping.restrictions.setdefault(target, []).append(pattern)
    order = list(DEFAULT_TOOLS) + [t for t in BUILTIN_TOOLS if t not in DEFAULT_TOOLS]
    mapping.tools = [t for t in order if t in chosen]
    return mapping
