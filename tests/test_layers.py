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
FOLDERS = {"rollouts": "skillgym.rollouts", "training": "skillgym.training", "benchmarks": "skillgym.benchmarks",
           "orchestrator": "skillgym.orchestrator", "pipeline": "skillgym.pipeline", "envs": "skillgym.envs"}


def module_name(path: Path) -> str:
    """The dotted import name of a source file of this repository."""
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] in FOLDERS:
        parts = FOLDERS[parts[0]].split(".") + parts[1:]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, at any depth."""
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
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module":
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
