"""The scripted expert: answers codebase questions through the env's tools only.

It reads the question's structure from ``info["task_metadata"]`` (never the gold answer),
searches with ``grep``, reads with ``read_file``, parses what the tools print, and submits a
bare answer. Its turns are Qwen3 text holding one ``<tool_call>`` and nothing else, because
they become SFT data for small models, and some OpenAI-compatible servers (``transformers
serve``) drop the text that accompanies a tool call from the history: a student trained on
text-plus-call turns would then see a different conversation when served than in training: every question type follows one fixed recipe of 2-4
turns, with the same search patterns each time.

Two trace styles. ``"oneliner"`` (the default, the SFT teacher) answers every question with
one ``bash`` command that prints exactly the fact (GNU ``grep -l``, an ``awk`` pass over the
outline, a ``sed`` rewrite, or a short ``ast`` script), then submits what it printed. A tiny
student then has two skills to learn: fill a fixed command with identifiers copied from the
question, and copy the tool output into ``submit`` (measured in training/EXPERIMENTS.md:
reading an outline or a signature and reasoning over it is what small models fail at).
``"search"`` is the step-by-step recipe (grep, read_file, parse) that mirrors SKILL.md.

``"explore"`` explores as a capable model would (grep for the symbol, read the relevant
lines, answer), and every string it writes into a tool call or an answer is a fixed template
filled with text it has already seen: identifiers from the question, and paths, line numbers
and source text from earlier tool output. A student can therefore learn every turn by
copying. It is ``"search"`` with the three steps that computed something unseen replaced:
the ``methods`` count is printed by ``grep -c`` over the class's line range (the two line
numbers come from a grep for the top-level lines), the ``constant`` answer names the module by its file path as
grep printed it (``email/utils.py: 42``, which the grader accepts), and a signature longer
than one page is read on from its last line shown (a copied number, not that number plus one).
"""

from __future__ import annotations

import ast
import re
import textwrap
from collections.abc import Callable
from typing import Any

from skillgym.policies.base import Action, Policy
from skillgym.toolcalls import render_tool_call_text
from skillgym.types import Message

from .tasks import REPO_DIR

REPO = f"/workspace/{REPO_DIR}"
OUTLINE_PATTERN = r"^(class|def|async def|    def|    async def) "
SIGNATURE_LINES = 12  # lines read from a def line; longer signatures are read on in pages
_GREP_LINE = re.compile(r"^(?P<path>.+?\.py)(?P<sep>[:-])(?P<line>\d+)(?P=sep)(?P<text>.*)$")
_READ_LINE = re.compile(r"^\s*(\d+)\t(.*)$")
_TOP_LEVEL = re.compile(r"^(?:class|def|async def) (\w+)")
_METHOD = re.compile(r"^    (?:async )?def (\w+)")
STYLES = ("oneliner", "search", "explore")
# explore: where the class ends is the next top-level def or class line, so it lists only those
# (a fraction of the full outline, which the search style reads and counts by eye); then it
# counts the method lines from the class line to that line (or "$", the end of the file).
TOP_LEVEL_PATTERN = r"^(class|def|async def) "
COUNT_METHODS_COMMAND = "sed -n '{first},{last}p' {path} | grep -cE '^    (async )?def '"

# -- one-liners: each prints exactly the answer (cwd is /workspace; the repo is ./repo) ----------
WHERE_COMMAND = "cd repo && grep -rlE --include='*.py' '(def|class) {symbol}\\b' *"
CONSTANT_COMMAND = (
    "cd repo && grep -rE --include='*.py' '^{symbol}\\s*=' * | "
    "sed -E 's#(/__init__)?\\.py:[^=]*=\\s*#: #; :a; s#^([^:]*)/#\\1.#; ta'"
)
# Counts the 4-space def lines between the class line and the next top-level statement line.
METHODS_COMMAND = (
    "cd repo && awk 'FNR==1{{f=0}} /^class {symbol}[ (:]/{{f=1;next}} f&&/^(class|def|async def) /{{f=0}} "
    "f&&/^    (async )?def /{{n++}} END{{print n}}' $(find . -name '*.py')"
)
# Tracks the enclosing top-level function or Class.method over the outline lines, and prints
# each unit with a call line indented below its def (mawk: no \b, so an explicit boundary).
CALLERS_COMMAND = (
    'cd repo && awk \'function nm(s){{sub(/^ *(async )?(def|class) /,"",s);sub(/[^A-Za-z0-9_].*/,"",s);return s}} '
    '/^class /{{c=nm($0);u="";next}} /^(async )?def /{{c="";u=nm($0);d=0;next}} '
    '/^    (async )?def /{{if(c!=""){{u=c"."nm($0);d=4}};next}} '
    '/(^|[^A-Za-z0-9_]){callee}\\(/{{match($0,/^ */);if(u!=""&&RLENGTH>d&&!(u in s)){{s[u]=1;o=o p u;p=", "}}}} '
    "END{{print o}}' {path}"
)
# The default's source text, from the syntax tree of the file that defines the owner. `-I`
# (isolated mode) keeps the working directory, the repository, off Python's import path: a
# codebase with a module named like a standard-library one (click's `types.py`) would
# otherwise replace it inside `import ast` and the script would fail on every question.
DEFAULT_COMMAND = (
    'cd repo && python3 -I -c "import ast,sys,glob\n'
    "*c,f=sys.argv[1].split('.')\n"
    "for p in glob.glob('**/*.py',recursive=True):\n"
    " s=open(p,encoding='utf8').read()\n"
    " if ('class '+c[0] if c else 'def '+f) not in s:continue\n"
    " for n in ast.parse(s).body:\n"
    "  if getattr(n,'name',0)!=(c or [f])[0]:continue\n"
    "  for g in [m for m in n.body if getattr(m,'name',0)==f] if c else [n]:\n"
    "   a=g.args;x=a.posonlyargs+a.args\n"
    "   for k,v in [*zip(x[len(x)-len(a.defaults):],a.defaults),*zip(a.kwonlyargs,a.kw_defaults)]:\n"
    '    if k.arg==sys.argv[2] and v:print(ast.get_source_segment(s,v))" {symbol} {param}'
)
ONELINERS: dict[str, tuple[str, str]] = {
    "where": ("Print the file that defines it.", WHERE_COMMAND),
    "default": ("Print the default from the signature.", DEFAULT_COMMAND),
    "callers": ("List the functions that call it.", CALLERS_COMMAND),
    "methods": ("Count the methods in the class body.", METHODS_COMMAND),
    "constant": ("Print the module and value of the assignment.", CONSTANT_COMMAND),
}


def grep_hits(text: str) -> list[tuple[str, int, str]]:
    """(path relative to the repo, line number, line text) for each match line of a grep result."""
    hits = []
    for raw in text.splitlines():
        m = _GREP_LINE.match(raw)
        if m and m.group("sep") == ":":
            path = m.group("path").removeprefix(REPO + "/")
            hits.append((path, int(m.group("line")), m.group("text")))
    return hits


def read_lines(text: str) -> list[tuple[int, str]]:
    """(line number, text) from a numbered ``read_file`` result."""
    return [(int(m.group(1)), m.group(2)) for m in map(_READ_LINE.match, text.splitlines()) if m]


def module_of(rel: str) -> str:
    parts = rel.removesuffix(".py").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def parse_header(lines: list[str]) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    """The function whose ``def`` starts ``lines``, once enough lines are there to parse it."""
    text = textwrap.dedent("\n".join(lines))
    for candidate in (text, text + "\n    pass"):
        try:
            tree = ast.parse(candidate)
        except SyntaxError:
            continue
        if tree.body and isinstance(tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef)):
            return tree.body[0]
    return None


def default_text(lines: list[str], param: str) -> str | None:
    """Source text of ``param``'s default in the signature at the top of ``lines``."""
    for n in range(1, len(lines) + 1):
        fn = parse_header(lines[:n])
        if fn is None:
            continue
        args = fn.args
        positional = args.posonlyargs + args.args
        pairs = list(zip(positional[len(positional) - len(args.defaults) :], args.defaults))
        pairs += list(zip(args.kwonlyargs, args.kw_defaults))
        source = textwrap.dedent("\n".join(lines[:n]))
        for arg, default in pairs:
            if arg.arg == param and default is not None:
                return ast.get_source_segment(source, default)
        return None
    return None


class ExpertPolicy(Policy):
    """One recipe per question type; each step is a method that returns the next turn."""

    policy_id = "expert"

    def __init__(self, style: str = "oneliner") -> None:
        """
        Args:
            style: ``"oneliner"`` (default), ``"search"`` or ``"explore"`` (see the module docstring).
        """
        if style not in STYLES:
            raise ValueError(f"unknown expert style {style!r}; use one of {', '.join(map(repr, STYLES))}")
        self.style = style
        self._meta: dict[str, Any] = {}
        self._next: Callable[[str], Action] | None = None
        self._state: dict[str, Any] = {}

    def reset(self, observation: list[Message], info: dict[str, Any]) -> None:
        self._meta = dict(info.get("task_metadata") or {})
        self._state = {}
        self._next = None

    def act(self, observation: list[Message], info: dict[str, Any]) -> Action:
        if self._next is None:
            if not self._meta and info.get("task_metadata"):
                self._meta = dict(info["task_metadata"])
            qtype = self._meta.get("qtype")
            start = getattr(self, f"_explore_{qtype}", None) if self.style == "explore" else None
            start = start or getattr(self, f"_start_{qtype}", None)
            if self.style == "oneliner" and qtype in ONELINERS:
                return self._oneliner(qtype)
            if start is None:
                return self._submit("I cannot tell what this question asks.", "unknown")
            return start()
        step, self._next = self._next, None
        return step(_last_tool_output(observation))

    # -- turn helpers ----------------------------------------------------------------------
    def _call(self, say: str, name: str, args: dict[str, Any], then: Callable[[str], Action] | None) -> str:
        """One tool call; ``say`` names the step for readers of this code and is not emitted
        (see the module docstring)."""
        self._next = then
        return render_tool_call_text(name, args)

    def _submit(self, say: str, answer: str) -> str:
        return self._call(say, "submit", {"answer": answer}, None)

    def _find_definition(self, name: str, then: Callable[[str, int], Action]) -> str:
        """The search that opens every recipe starting from a symbol; ``then(path, line)``."""

        def found(output: str) -> Action:
            hits = grep_hits(output)
            if not hits:
                return self._submit("The search found no definition.", "not found")
            return then(hits[0][0], hits[0][1])

        args = {"pattern": rf"(def|class) {name}\b", "path": REPO, "glob": "*.py"}
        return self._call(f"Find where `{name}` is defined.", "grep", args, found)

    # -- one command that prints the answer ----------------------------------------------------
    def _oneliner(self, qtype: str) -> str:
        say, template = ONELINERS[qtype]
        fields = {k: self._meta.get(k, "") for k in ("symbol", "param", "callee", "path")}
        return self._call(say, "bash", {"command": template.format(**fields)}, self._submit_printed)

    def _submit_printed(self, output: str) -> str:
        printed = "\n".join(line for line in output.splitlines() if not line.startswith("[exit code")).strip()
        if not printed:
            return self._submit("The command printed nothing.", "not found")
        return self._submit("The command printed the answer.", printed)

    # -- where is X defined ------------------------------------------------------------------
    def _start_where(self) -> str:
        return self._find_definition(self._meta["symbol"], self._where_found)

    def _where_found(self, path: str, line: int) -> str:
        return self._submit("The search shows the file.", path)

    # -- default of a parameter ---------------------------------------------------------------
    def _start_default(self) -> str:
        owner = self._meta.get("class") or self._meta["function"]
        return self._find_definition(owner, self._default_owner_found)

    def _default_owner_found(self, path: str, line: int) -> str:
        self._state.update(path=path, line=line)
        if self._meta.get("class"):
            method = self._meta["function"]
            args = {"pattern": rf"def {method}\b", "path": f"{REPO}/{path}"}
            return self._call(f"Find method `{method}` in that file.", "grep", args, self._default_method_found)
        return self._read_signature(line)

    def _default_method_found(self, output: str) -> str:
        below = [line for _, line, _ in grep_hits(output) if line > self._state["line"]]
        if not below:
            return self._submit("The class has no such method.", "not found")
        return self._read_signature(below[0])

    def _read_signature(self, line: int) -> str:
        self._state.setdefault("signature", {})
        self._state["offset"] = line
        args = {"path": f"{REPO}/{self._state['path']}", "offset": line, "limit": SIGNATURE_LINES}
        return self._call("Read the signature.", "read_file", args, self._default_read)

    def _default_read(self, output: str) -> str:
        lines = read_lines(output)
        self._state["signature"].update(lines)  # by line number: explore's pages overlap by one line
        signature = [text for _, text in sorted(self._state["signature"].items())]
        value = default_text(signature, self._meta["param"])
        if value is None and lines and parse_header(signature) is None and len(signature) < 5 * SIGNATURE_LINES:
            # The signature goes on past this page. Explore reads on from the last line shown, a
            # number the student has just seen; the search style skips it (arithmetic).
            return self._read_signature(lines[-1][0] + (self.style != "explore"))
        if value is None:
            return self._submit("The signature has no such default.", "not found")
        return self._submit("The signature shows the default.", value)

    # -- which functions call F ------------------------------------------------------------------
    def _start_callers(self) -> str:
        callee = self._meta["callee"]
        # One search shows the module's outline and every call line, in file order.
        args = {"pattern": rf"{OUTLINE_PATTERN}|\b{callee}\(", "path": f"{REPO}/{self._meta['path']}"}
        return self._call(
            f"List the functions and the `{callee}(` calls in the module.", "grep", args, self._callers_found
        )

    def _callers_found(self, output: str) -> str:
        callers: list[str] = []
        cls: str | None = None
        unit: tuple[str, int] | None = None  # (name, indent of its def line)
        for _, _, text in grep_hits(output):
            indent = len(text) - len(text.lstrip(" "))
            top, method = _TOP_LEVEL.match(text), _METHOD.match(text)
            if top:
                is_class = text.startswith("class ")
                cls = top.group(1) if is_class else None
                unit = None if is_class else (top.group(1), 0)
            elif method:
                if cls is not None:  # a def one level into a function is nested: not a unit
                    unit = (f"{cls}.{method.group(1)}", 4)
            elif unit is not None and indent > unit[1] and unit[0] not in callers:
                callers.append(unit[0])
        if not callers:
            return self._submit("No function in the module calls it.", "none")
        return self._submit("Each call sits under the function listed above it.", ", ".join(callers))

    # -- how many methods does C define -------------------------------------------------------------
    def _start_methods(self) -> str:
        return self._find_definition(self._meta["symbol"], self._methods_class_found)

    def _methods_class_found(self, path: str, line: int) -> str:
        self._state.update(path=path, line=line)
        args = {"pattern": OUTLINE_PATTERN, "path": f"{REPO}/{path}"}
        return self._call("List the classes and methods in that file.", "grep", args, self._methods_outline)

    def _methods_outline(self, output: str) -> str:
        count, inside = 0, False
        for _, line, text in grep_hits(output):
            if _TOP_LEVEL.match(text):
                if inside:
                    break  # the next top-level def or class ends the class
                inside = line == self._state["line"]
            elif inside and _METHOD.match(text):
                count += 1
        return self._submit("Counted the methods under the class line.", str(count))

    # -- which module defines constant K ------------------------------------------------------------
    def _start_constant(self) -> str:
        return self._grep_assignment(self._constant_found)

    def _grep_assignment(self, then: Callable[[str], str]) -> str:
        name = self._meta["symbol"]
        args = {"pattern": rf"^{name}\s*=", "path": REPO, "glob": "*.py"}
        return self._call(f"Find the assignment of `{name}`.", "grep", args, then)

    def _constant_found(self, output: str) -> str:
        return self._answer_constant(output, "The assignment shows module and value.", module_of)

    def _answer_constant(self, output: str, thought: str, module: Callable[[str], str]) -> str:
        """Answer ``MODULE: VALUE`` from the first assignment grep found (``module`` names the file)."""
        hits = grep_hits(output)
        if not hits:
            return self._submit("The search found no assignment.", "not found")
        path, _, text = hits[0]
        try:
            node = ast.parse(text).body[0]
            value = ast.get_source_segment(text, node.value)  # type: ignore[attr-defined]
        except (SyntaxError, IndexError, AttributeError):
            value = text.split("=", 1)[1].strip()
        return self._submit(thought, f"{module(path)}: {value}")

    # -- explore: the search recipes, with every written string copied from what was seen ---------
    def _explore_methods(self) -> str:
        return self._find_definition(self._meta["symbol"], self._methods_class_found_explore)

    def _methods_class_found_explore(self, path: str, line: int) -> str:
        self._state.update(path=path, line=line)
        args = {"pattern": TOP_LEVEL_PATTERN, "path": f"{REPO}/{path}"}
        return self._call("List the top-level classes and functions.", "grep", args, self._methods_range)

    def _methods_range(self, output: str) -> str:
        """Count the method lines from the class line to the next top-level outline line."""
        first = self._state["line"]
        after = [line for _, line, text in grep_hits(output) if line > first and _TOP_LEVEL.match(text)]
        fields = {"first": first, "last": after[0] if after else "$", "path": f"{REPO}/{self._state['path']}"}
        command = COUNT_METHODS_COMMAND.format(**fields)
        return self._call("Count the method lines of the class.", "bash", {"command": command}, self._submit_printed)

    def _explore_constant(self) -> str:
        return self._grep_assignment(self._constant_found_explore)

    def _constant_found_explore(self, output: str) -> str:
        # The path as grep printed it: a dotted module name would be a string the trace never showed.
        return self._answer_constant(output, "The file path names the module.", lambda path: path)


def _last_tool_output(observation: list[Message]) -> str:
    """Text of the tool results that follow the last assistant turn."""
    outputs = []
    for message in reversed(observation):
        if message.get("role") != "tool":
            break
        outputs.append(message.get("content") or "")
    return "\n".join(reversed(outputs))
