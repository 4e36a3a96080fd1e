"""Questions about a codebase, generated from its syntax trees, with gold answers.

Five question types (``qtype``):

* ``where``    - in which file is top-level function or class ``X`` defined?
* ``default``  - what is the default of parameter ``P`` of function ``F`` (or ``C.m``)?
* ``callers``  - which functions in module ``M`` call ``F``?
* ``methods``  - how many methods does class ``C`` define in its own body?
* ``constant`` - which module defines constant ``K``, and what is its value?

Only unambiguous questions are kept: the symbol is defined exactly once in the whole
codebase, and the plain-text search a reader would run (``(def|class) X\\b``, ``^K\\s*=``,
``\\bF\\(``) agrees with the syntax tree. That drops questions whose answer hinges on text in
docstrings or comments, or on unusual layout, so the gold answer is defensible to anyone who
greps for it. Questions whose search output would not fit one tool result are dropped too.

Splits come from a stable hash of the task's symbols (never from the seed), so train and test
share no symbol whatever seed is used; a task whose symbols hash to different splits is
dropped. The seed only orders the tasks.
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

from skillgym.tasks import TaskList
from skillgym.types import Task

from .codebase import Codebase, SourceFile, load_codebase

QTYPES: tuple[str, ...] = ("where", "default", "callers", "methods", "constant")
TEST_PERCENT = 20  # share of symbols (by hash) that belong to the test split
REPO_DIR = "repo"  # the codebase's folder inside the workspace
SPLITS = ("train", "test")
MAX_VALUE_CHARS = 60
MAX_CALLERS = 6
# A module outline (def/class lines) must fit one tool result with room to spare.
MAX_OUTLINE_LINES = 120
MAX_OUTLINE_CHARS = 6_500

_DEF_RE = re.compile(r"(?:def|class) (\w+)")
_ASSIGN_RE = re.compile(r"^(\w+)\s*=")
_CALL_TEXT_RE = re.compile(r"\b(\w+)\(")  # same hits as "\bNAME\(" for every NAME at once
_CONSTANT_NAME_RE = re.compile(r"^_*[A-Z][A-Z0-9_]*$")
# Lines that show a module's structure: top-level defs and classes, and methods one level in.
OUTLINE_RE = re.compile(r"^(?:class|def|async def|    def|    async def) ")
_METHOD_LINE_RE = re.compile(r"^    (?:async )?def ")
_LITERAL_NODES = (
    ast.Constant,
    ast.Tuple,
    ast.List,
    ast.Set,
    ast.Dict,
    ast.UnaryOp,
    ast.BinOp,
    ast.operator,
    ast.unaryop,
    ast.expr_context,
)
_BUILTIN_NAMES = frozenset(dir(builtins))
_FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef)

PROMPTS = {
    "where": "In which file is `{symbol}` defined? Answer with the file path relative to the "
    "repository root (for example `pkg/module.py`), nothing else.",
    "default": "What is the default value of parameter `{param}` of `{symbol}`? Answer with the "
    "default exactly as written in the source (for example `None` or `'utf-8'`), nothing else.",
    "callers": "Which functions in module `{module}` (file `{path}`) call `{callee}`, as `{callee}(...)` "
    "or `obj.{callee}(...)`? Count a call anywhere inside a top-level function or a method of a "
    "top-level class. Answer with their names, comma-separated, writing methods as "
    "`Class.method`, nothing else.",
    "methods": "How many methods does class `{symbol}` define in its own body (inherited methods "
    "do not count)? Answer with the number only.",
    "constant": "Which module defines the constant `{symbol}`, and what is its value? Answer as "
    "`module: value`, with the module as a dotted name (for example `email.utils`) and the "
    "value exactly as written in the source, nothing else.",
}


def split_of(symbol: str) -> str:
    """The split a symbol belongs to: a stable hash, the same on every machine and seed."""
    bucket = int(hashlib.sha256(f"codebase-explorer:{symbol}".encode()).hexdigest(), 16) % 100
    return "test" if bucket < TEST_PERCENT else "train"


class _Index:
    """Facts gathered in one pass over every file, shared by all question builders."""

    def __init__(self, codebase: Codebase):
        self.codebase = codebase
        self.def_count: Counter[str] = Counter()  # def/class statements per name, any depth
        self.def_text_hits: Counter[str] = Counter()  # lines matching "(def|class) NAME"
        self.assign_count: Counter[str] = Counter()  # Name assignment targets, any depth
        self.assign_text_hits: Counter[str] = Counter()  # lines matching "^NAME\s*="
        self.function_names: set[str] = set()
        for f in codebase.files:
            for line in f.lines:
                for name in {m.group(1) for m in _DEF_RE.finditer(line)}:
                    self.def_text_hits[name] += 1
                m = _ASSIGN_RE.match(line)
                if m:
                    self.assign_text_hits[m.group(1)] += 1
            if f.tree is None:
                continue
            for node in ast.walk(f.tree):
                if isinstance(node, (*_FUNCS, ast.ClassDef)):
                    self.def_count[node.name] += 1
                    if isinstance(node, _FUNCS):
                        self.function_names.add(node.name)
                elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    for target in targets:
                        for sub in ast.walk(target):
                            if isinstance(sub, ast.Name):
                                self.assign_count[sub.id] += 1

    def unique_symbol(self, name: str) -> bool:
        """Defined once (as def or class) anywhere, found once by a definition search, and
        never assigned, so "where is it" has a single answer."""
        return (
            self.def_count[name] == 1
            and self.def_text_hits[name] == 1
            and self.assign_count[name] == 0
            and not (name.startswith("__") and name.endswith("__"))
        )


def _outline(f: SourceFile) -> set[int]:
    """Line numbers a grep for the module outline shows."""
    return {i for i, line in enumerate(f.lines, 1) if OUTLINE_RE.match(line)}


def _fits(f: SourceFile, shown: set[int]) -> bool:
    """Whether grep output showing lines ``shown`` of ``f`` stays well within one tool result."""
    prefix = len(f"/workspace/{REPO_DIR}/{f.rel}:") + 6
    return len(shown) <= MAX_OUTLINE_LINES and sum(prefix + len(f.lines[i - 1]) for i in shown) <= MAX_OUTLINE_CHARS


def _source(f: SourceFile, node: ast.AST) -> str | None:
    """Single-line source text of ``node``, or None when it spans lines or is too long."""
    if node.lineno != node.end_lineno:
        return None
    text = f.lines[node.lineno - 1][node.col_offset : node.end_col_offset]
    return text if 0 < len(text) <= MAX_VALUE_CHARS else None


def _defaults(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[tuple[str, ast.expr]]:
    args = fn.args
    positional = args.posonlyargs + args.args
    pairs = list(zip(positional[len(positional) - len(args.defaults) :], args.defaults))
    pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
    return [(a.arg, d) for a, d in pairs]


def _top_classes(f: SourceFile) -> Iterator[ast.ClassDef]:
    return (n for n in f.tree.body if isinstance(n, ast.ClassDef)) if f.tree else iter(())


def _task(qtype: str, key: str, symbols: list[str], gold: str, fields: dict) -> Task | None:
    """Build one task, or None when its symbols straddle the splits."""
    splits = {split_of(s) for s in symbols}
    if len(splits) != 1:
        return None
    task_id = f"{qtype}-" + hashlib.sha256(key.encode()).hexdigest()[:12]
    metadata = {"qtype": qtype, **fields}
    return Task(
        id=task_id,
        prompt=PROMPTS[qtype].format(**fields),
        reference={"qtype": qtype, "answer": gold},
        metadata=metadata,
        split=splits.pop(),  # type: ignore[arg-type]
    )


# -- question builders ---------------------------------------------------------------------
def _where(index: _Index) -> Iterator[Task | None]:
    for f in index.codebase.files:
        for node in f.tree.body if f.tree else ():
            if isinstance(node, (*_FUNCS, ast.ClassDef)) and index.unique_symbol(node.name):
                yield _task("where", f"where:{node.name}", [node.name], f.rel, {"symbol": node.name})


def _default(index: _Index) -> Iterator[Task | None]:
    for f in index.codebase.files:
        if f.tree is None:
            continue
        for node in f.tree.body:
            if isinstance(node, _FUNCS) and index.unique_symbol(node.name):
                targets = [(node.name, node, None)]
            elif isinstance(node, ast.ClassDef) and index.unique_symbol(node.name):
                targets = [(f"{node.name}.{m.name}", m, node) for m in _findable_methods(f, node)]
            else:
                continue
            for symbol, fn, cls in targets:
                for param, default in _defaults(fn):
                    value = _source(f, default)
                    if value is None:
                        continue
                    fields = {"symbol": symbol, "param": param, "function": fn.name}
                    if cls is not None:
                        fields["class"] = cls.name
                    owner = cls.name if cls is not None else fn.name
                    yield _task("default", f"default:{symbol}:{param}", [owner], value, fields)


def _findable_methods(f: SourceFile, cls: ast.ClassDef) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    """Methods of ``cls`` that a search for ``def NAME`` below the class line finds first."""
    found = []
    methods = [n for n in cls.body if isinstance(n, _FUNCS)]
    names = Counter(m.name for m in methods)
    for m in methods:
        if names[m.name] != 1:
            continue  # property setters, conditional variants: "the" method is ambiguous
        pattern = re.compile(rf"def {re.escape(m.name)}\b")
        first = next((i for i in range(cls.lineno, len(f.lines) + 1) if pattern.search(f.lines[i - 1])), None)
        if first == m.lineno:
            found.append(m)
    return found


def _units(f: SourceFile) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Top-level functions and methods of top-level classes, with their answer names."""
    for node in f.tree.body if f.tree else ():
        if isinstance(node, _FUNCS):
            yield node.name, node
        elif isinstance(node, ast.ClassDef):
            for sub in node.body:
                if isinstance(sub, _FUNCS):
                    yield f"{node.name}.{sub.name}", sub


def _call_sites(tree: ast.AST) -> Iterator[tuple[str, int]]:
    """(callee name, line of the name) for ``f(...)`` and ``obj.f(...)`` calls under ``tree``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name):
                yield node.func.id, node.func.lineno
            elif isinstance(node.func, ast.Attribute):
                yield node.func.attr, node.func.end_lineno


def _callers(index: _Index) -> Iterator[Task | None]:
    for f in index.codebase.files:
        if f.tree is None:
            continue
        all_lines: dict[str, set[int]] = defaultdict(set)
        for name, line in _call_sites(f.tree):
            all_lines[name].add(line)
        in_units: dict[str, set[int]] = defaultdict(set)
        callers: dict[str, set[str]] = defaultdict(set)
        for unit, fn in _units(f):
            for stmt in fn.body:  # the body only: decorators and defaults sit on the def line
                for name, line in _call_sites(stmt):
                    in_units[name].add(line)
                    callers[name].add(unit)
        # Where a search for "\bNAME\(" hits, outline lines aside (one pass for every NAME).
        text_lines: dict[str, set[int]] = defaultdict(set)
        for i, line in enumerate(f.lines, 1):
            if not OUTLINE_RE.match(line):
                for m in _CALL_TEXT_RE.finditer(line):
                    text_lines[m.group(1)].add(i)
        outline = _outline(f)
        for callee in sorted(callers):
            names = callers[callee]
            if (
                callee not in index.function_names
                or callee in _BUILTIN_NAMES
                or callee.startswith("__")
                or len(names) > MAX_CALLERS
                or all_lines[callee] != in_units[callee]  # a call outside any function
                or text_lines[callee] != in_units[callee]  # the search shows mentions that are not calls
                or not _fits(f, outline | in_units[callee])
            ):
                continue
            gold = ", ".join(sorted(names))
            fields = {"module": f.module, "path": f.rel, "callee": callee}
            symbols = [callee] + sorted({n.split(".")[0] for n in names})
            yield _task("callers", f"callers:{f.rel}:{callee}", symbols, gold, fields)


def _methods(index: _Index) -> Iterator[Task | None]:
    for f in index.codebase.files:
        classes = [c for c in _top_classes(f) if index.unique_symbol(c.name)]
        if not classes or not _fits(f, _outline(f)):
            continue
        for cls in classes:
            methods = [n for n in cls.body if isinstance(n, _FUNCS)]
            if not methods or len({m.name for m in methods}) != len(methods):
                continue  # none, or a name defined twice (property setters): count is ambiguous
            # The class runs until the next top-level def/class line; the method lines a reader
            # sees in that range must be exactly the class's own methods.
            end = next(
                (
                    i
                    for i in range(cls.lineno + 1, len(f.lines) + 1)
                    if OUTLINE_RE.match(f.lines[i - 1]) and not f.lines[i - 1].startswith(" ")
                ),
                len(f.lines) + 1,
            )
            seen = [i for i in range(cls.lineno + 1, end) if _METHOD_LINE_RE.match(f.lines[i - 1])]
            if seen != [m.lineno for m in methods]:
                continue
            yield _task("methods", f"methods:{cls.name}", [cls.name], str(len(methods)), {"symbol": cls.name})


def _constants(index: _Index) -> Iterator[Task | None]:
    for f in index.codebase.files:
        for node in f.tree.body if f.tree else ():
            if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
                continue
            name = node.targets[0].id
            if not (
                _CONSTANT_NAME_RE.match(name)
                and index.assign_count[name] == 1
                and index.assign_text_hits[name] == 1
                and index.def_count[name] == 0
                and node.value.lineno == node.lineno
                and all(isinstance(n, _LITERAL_NODES) for n in ast.walk(node.value))
            ):
                continue
            value = _source(f, node.value)
            if value is None:
                continue
            gold = f"{f.module}: {value}"
            yield _task("constant", f"constant:{name}", [name], gold, {"symbol": name})


_BUILDERS = {"where": _where, "default": _default, "callers": _callers, "methods": _methods, "constant": _constants}
_GENERATED: dict[str, list[Task]] = {}


def generate_tasks(codebase: Codebase) -> list[Task]:
    """Every question the codebase supports, sorted by id (cached per codebase content)."""
    if codebase.content_hash not in _GENERATED:
        index = _Index(codebase)
        tasks = [t for build in _BUILDERS.values() for t in build(index) if t is not None]
        # Ids are hashes of the question; keep the first of any (unlikely) collision.
        unique = {t.id: t for t in reversed(tasks)}
        _GENERATED[codebase.content_hash] = sorted(unique.values(), key=lambda t: t.id)
    return _GENERATED[codebase.content_hash]


class CodebaseTasks(TaskList):
    """Task source for codebase-explorer: procedurally generated, seeded, split by symbol.

    ``tasks(split)`` interleaves the question types (each shuffled by the seed), so any prefix
    of the list is a balanced mix: the first 100 test tasks hold ~20 of each type.
    """

    def __init__(self, codebase: str | Path | Codebase, seed: int = 0, qtypes: tuple[str, ...] = QTYPES):
        unknown = set(qtypes) - set(QTYPES)
        if unknown:
            raise ValueError(f"unknown question types {sorted(unknown)}; choose from {list(QTYPES)}")
        self.codebase = codebase if isinstance(codebase, Codebase) else load_codebase(codebase)
        self.seed = seed
        self.qtypes = tuple(qtypes)
        tasks = [t for t in generate_tasks(self.codebase) if t.metadata["qtype"] in self.qtypes]
        ordered = [t for split in SPLITS for t in self._order([t for t in tasks if t.split == split])]
        super().__init__(ordered, name="codebase-explorer", splits=SPLITS)

    def _order(self, tasks: list[Task]) -> list[Task]:
        rng = random.Random(self.seed)
        groups = []
        for qtype in self.qtypes:
            group = [t for t in tasks if t.metadata["qtype"] == qtype]
            rng.shuffle(group)
            groups.append(group)
        ordered = []
        for i in range(max((len(g) for g in groups), default=0)):
            ordered.extend(g[i] for g in groups if i < len(g))
        return ordered

    def counts(self) -> dict[str, dict[str, int]]:
        """Tasks per split and question type."""
        return {split: dict(Counter(t.metadata["qtype"] for t in self.tasks(split))) for split in SPLITS}
