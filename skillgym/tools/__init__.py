"""Tools a model can call inside an environment."""

from skillgym.tools.base import Tool, ToolArgs, clean_schema
from skillgym.tools.builtin import BUILTIN_TOOLS


def get_tools(names: list[str]) -> list[Tool]:
    """Built-in tools by name, in the order given; an unknown name is an error that lists the known ones."""
    unknown = [n for n in names if n not in BUILTIN_TOOLS]
    if unknown:
        raise KeyError(f"unknown tool(s) {unknown}; built-in tools are {sorted(BUILTIN_TOOLS)}")
    return [BUILTIN_TOOLS[n] for n in names]


__all__ = ["BUILTIN_TOOLS", "Tool", "ToolArgs", "clean_schema", "get_tools"]
