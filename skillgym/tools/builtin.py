"""The built-in, Claude-Code-like tools. Each is a thin adapter: validate arguments, call the
matching sandbox op (:mod:`skillgym.sandbox.ops` does the work, inside the sandbox), and
format the result as compact text for the model."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from skillgym.sandbox.base import Sandbox
from skillgym.tools.base import Tool, ToolArgs

MAX_TIMEOUT = 120.0

# Number arguments never take a boolean (see ToolArgs); a boolean argument takes only one.
Bool = Annotated[bool, Field(strict=True)]
"""A boolean argument: JSON true or false only (not 1, "yes" or "true")."""


class BashArgs(ToolArgs):
    command: str = Field(description="The shell command to run in /workspace.")
    timeout: float | None = Field(
        default=None, gt=0, le=MAX_TIMEOUT, description="Seconds before the command is killed."
    )

    @field_validator("command")
    @classmethod
    def _no_nul(cls, command: str) -> str:
        if "\x00" in command:
            raise PydanticCustomError(
                "nul_in_command", "the command contains a NUL character (\\x00), which no shell command can hold"
            )
        return command


class Bash(Tool):
    name = "bash"
    description = "Run a bash command in the workspace and return its output and exit code."
    Args = BashArgs

    def __call__(self, sandbox: Sandbox, args: BashArgs) -> str:
        res = sandbox.call(
            "run",
            cmd=args.command,
            timeout=args.timeout or sandbox.config.default_timeout,
            max_output=sandbox.config.max_output,
        )
        parts = [p for p in (res["stdout"].rstrip("\n"), res["stderr"].rstrip("\n")) if p]
        if res["timed_out"]:
            parts.append(
                f"[command timed out after {args.timeout or sandbox.config.default_timeout:g} s and was killed]"
            )
        parts.append(f"[exit code {res['exit_code']}]")
        return "\n".join(parts)


class ReadFileArgs(ToolArgs):
    path: str = Field(description="File to read, relative to /workspace or absolute under it.")
    offset: int = Field(default=1, ge=1, description="First line to show (1-based).")
    limit: int = Field(default=200, ge=1, le=2000, description="How many lines to show.")


class ReadFile(Tool):
    name = "read_file"
    description = "Read a text file; lines come numbered. Use offset and limit to page through long files."
    Args = ReadFileArgs

    def __call__(self, sandbox: Sandbox, args: ReadFileArgs) -> str:
        res = sandbox.call("read_file", path=args.path, offset=args.offset, limit=args.limit)
        if res["total_lines"] == 0:
            return f"{res['path']} is empty."
        if res["last_line"] < res["first_line"]:
            return f"{res['path']} has only {res['total_lines']} lines; offset {args.offset} is past the end."
        text = res["content"]
        if res["first_line"] > 1 or res["last_line"] < res["total_lines"]:
            text += f"\n[lines {res['first_line']}-{res['last_line']} of {res['total_lines']}]"
        return text


class WriteFileArgs(ToolArgs):
    path: str = Field(description="File to create or overwrite.")
    content: str = Field(description="The full new content.")


class WriteFile(Tool):
    name = "write_file"
    description = "Create or overwrite a file in the workspace."
    Args = WriteFileArgs

    def __call__(self, sandbox: Sandbox, args: WriteFileArgs) -> str:
        res = sandbox.call("write_file", path=args.path, content=args.content)
        return f"Wrote {res['bytes']} bytes to {res['path']}."


class EditFileArgs(ToolArgs):
    path: str = Field(description="File to edit.")
    old_string: str = Field(description="Exact text to replace; must occur once unless replace_all.")
    new_string: str = Field(description="Replacement text.")
    replace_all: Bool = Field(default=False, description="Replace every occurrence.")


class EditFile(Tool):
    name = "edit_file"
    description = "Replace an exact, unique string in a file."
    Args = EditFileArgs

    def __call__(self, sandbox: Sandbox, args: EditFileArgs) -> str:
        res = sandbox.call(
            "edit_file",
            path=args.path,
            old_string=args.old_string,
            new_string=args.new_string,
            replace_all=args.replace_all,
        )
        return f"Edited {res['path']} ({res['replacements']} replacement{'s' if res['replacements'] != 1 else ''})."


class GlobArgs(ToolArgs):
    pattern: str = Field(description="Glob pattern, e.g. '**/*.py'.")
    path: str = Field(default=".", description="Folder to search from.")


class Glob(Tool):
    name = "glob"
    description = "List files whose path matches a glob pattern ('**' crosses folders)."
    Args = GlobArgs

    def __call__(self, sandbox: Sandbox, args: GlobArgs) -> str:
        res = sandbox.call("glob", pattern=args.pattern, path=args.path)
        if not res["matches"]:
            return f"No files match {args.pattern!r}."
        text = "\n".join(res["matches"])
        if res["truncated"]:
            text += f"\n[... {res['total'] - len(res['matches'])} more files not shown ...]"
        return text


class GrepArgs(ToolArgs):
    pattern: str = Field(description="Python regular expression to search for.")
    path: str = Field(default=".", description="File or folder to search.")
    glob: str | None = Field(default=None, description="Only search files matching this glob, e.g. '*.py'.")
    context: int = Field(default=0, ge=0, le=20, description="Lines of context around each match.")
    ignore_case: Bool = Field(default=False, description="Case-insensitive search.")


class Grep(Tool):
    name = "grep"
    description = "Search file contents with a regular expression; prints path:line:text for each match."
    Args = GrepArgs

    def __call__(self, sandbox: Sandbox, args: GrepArgs) -> str:
        res = sandbox.call(
            "grep",
            pattern=args.pattern,
            path=args.path,
            glob=args.glob,
            context=args.context,
            ignore_case=args.ignore_case,
        )
        if not res["matches"]:
            return f"No matches for {args.pattern!r}."
        text = "\n".join(res["matches"])
        if res["truncated"]:
            text += "\n[... more matches not shown; narrow the pattern or the path ...]"
        return text


class ListDirArgs(ToolArgs):
    path: str = Field(default=".", description="Folder to list.")


class ListDir(Tool):
    name = "list_dir"
    description = "List a folder's entries; folders end with '/'."
    Args = ListDirArgs

    def __call__(self, sandbox: Sandbox, args: ListDirArgs) -> str:
        res = sandbox.call("list_dir", path=args.path)
        return "\n".join(res["entries"]) if res["entries"] else f"{res['path']} is empty."


class SubmitArgs(ToolArgs):
    answer: str = Field(description="The final answer, as short as it can be while complete.")


class Submit(Tool):
    name = "submit"
    description = "Submit the final answer and end the task."
    Args = SubmitArgs
    ends_episode = True

    def __call__(self, sandbox: Sandbox, args: SubmitArgs) -> str:
        return "Answer submitted."


BUILTIN_TOOLS: dict[str, Tool] = {
    tool.name: tool for tool in (Bash(), ReadFile(), WriteFile(), EditFile(), Glob(), Grep(), ListDir(), Submit())
}
