"""Dependencies point one way: pipeline -> stages -> core, envs -> core; the core imports no stage.

The check reads every module's source with ``ast`` (no import runs), so an import hidden
inside a function, a method or an ``if TYPE_CHECKING`` block counts as much as one at the top.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("skillgym.rollouts", "skillgym.training", "skillgym.benchmarks", "skillgym.orchestrator", "skillgym.pipeline")
# Top-level folders mapped into the namespace (setup.py MAPPED): core modules must not import them.
FOLDERS = {
    "rollouts": "skillgym.rollouts",
    "training": "skillgym.training",
    "benchmarks": "skillgym.benchmarks",
    "orchestrator": "skillgym.orchestrator",
    "pipeline": "skillgym.pipeline",
    "envs": "skillgym.envs",
}


def module_name(path: Path) -> str:
    """The dotted import name of a source file of this repository."""
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] in FOLDERS:
        parts = FOLDERS[parts[0]].split(".") + parts[1:]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: Path, dynamic: bool = True) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, at any depth; with ``dynamic``,
    also ``importlib.import_module("...")`` calls with a literal name."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # `from skillgym import rollouts` names the stage in the alias, not the module.
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
        elif (
            dynamic
            and isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
        ):
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return found


def violations(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    out = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for line, name in imported_modules(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                out.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return out


def test_the_core_imports_no_stage():
    assert violations("skillgym", STAGES) == []


def test_envs_import_only_the_core():
    assert violations("envs", STAGES) == []


def test_stages_do_not_import_the_pipeline():
    for stage in ("rollouts", "training"):
        assert violations(stage, ("skillgym.pipeline", "skillgym.orchestrator", "skillgym.benchmarks")) == []


def import_graph(folders: tuple[str, ...]) -> tuple[dict[str, set[str]], dict[str, set[tuple[int, str]]]]:
    """(module-level edges, function-level edges with their line) between the modules of ``folders``."""
    paths = {module_name(p): p for folder in folders for p in (ROOT / folder).rglob("*.py")}

    def known(name: str) -> str | None:  # `from a.b import c` names module a.b.c or attribute c of a.b
        while name and name not in paths:
            name = name.rpartition(".")[0]
        return name or None

    top: dict[str, set[str]] = {}
    inner: dict[str, set[tuple[int, str]]] = {}
    for module, path in paths.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        late = {
            n.lineno
            for f in ast.walk(tree)
            if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
            for n in ast.walk(f)
            if isinstance(n, (ast.Import, ast.ImportFrom, ast.Call))
        }
        # Loading a plugin by name (the registry importing the built-in envs on first use) is
        # discovery, not a hidden static dependency: only import statements count here.
        for line, name in imported_modules(path, dynamic=False):
            target = known(name)
            if target is None or target == module:
                continue
            if line in late:
                inner.setdefault(module, set()).add((line, target))
            else:
                top.setdefault(module, set()).add(target)
    return top, inner


def reaches(top: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        module = todo.pop()
        if module == goal:
            return True
        if module not in seen:
            seen.add(module)
            todo += top.get(module, ())
    return False


def test_no_function_level_import_hides_a_cycle():
    """An import inside a function may save start-up time, never hide a cycle: moving any of them
    to the top of its module must not close a loop of module-level imports."""
    top, inner = import_graph(("skillgym", "envs", "rollouts", "training", "pipeline"))
    hiding = [
        f"{module}:{line} imports {target} late, and {target} imports {module} back"
        for module, edges in sorted(inner.items())
        for line, target in sorted(edges)
        if reaches(top, target, module)
    ]
    assert hiding == []


@pytest.mark.parametrize(
    "source, expected",
    [
        ("import skillgym.rollouts.store", "skillgym.rollouts.store"),
        ("def f():\n    from skillgym.training import train_sft", "skillgym.training"),
        ("from skillgym import pipeline", "skillgym.pipeline"),
        ("import importlib\nimportlib.import_module('skillgym.benchmarks.rollout')", "skillgym.benchmarks.rollout"),
    ],
)
def test_the_checker_sees_every_form_of_import(tmp_path, monkeypatch, source, expected):
    """The check itself can fail: each way of importing a stage is caught."""
    folder = tmp_path / "skillgym"
    folder.mkdir()
    (folder / "bad.py").write_text(source + "\n", encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert any(expected in v for v in violations("skillgym", STAGES))


def test_the_cycle_check_can_fail(tmp_path, monkeypatch):
    pkg = tmp_path / "skillgym"
    pkg.mkdir()
    (pkg / "a.py").write_text("from skillgym import b\n", encoding="utf-8")
    (pkg / "b.py").write_text("def f():\n    from skillgym import a\n", encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    top, inner = import_graph(("skillgym",))
    assert inner == {"skillgym.b": {(2, "skillgym.a")}} and reaches(top, "skillgym.a", "skillgym.b")
