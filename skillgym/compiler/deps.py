"""Find what a skill's bundled scripts need to run: PyPI packages and system tools.

Sources, in order of trust: ``requirements.txt`` files (the author said so), top-level
imports of the bundled ``.py`` files that are neither standard library nor the skill's own
modules, and interpreters named in shebang lines or implied by script extensions
(``#!/usr/bin/env node`` needs Node.js). Detection is static: nothing is executed.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

from pydantic import BaseModel, Field

from skillgym.types import SkillSpec

# Import names whose PyPI distribution has another name. Anything not listed is assumed to
# be published under its import name, which holds for most packages.
IMPORT_TO_PYPI: dict[str, str] = {
    "PIL": "pillow",
    "yaml": "pyyaml",
    "cv2": "opencv-python-headless",
    "bs4": "beautifulsoup4",
    "sklearn": "scikit-learn",
    "skimage": "scikit-image",
    "docx": "python-docx",
    "pptx": "python-pptx",
    "fitz": "pymupdf",
    "dateutil": "python-dateutil",
    "dotenv": "python-dotenv",
    "magic": "python-magic",
    "jwt": "pyjwt",
    "serial": "pyserial",
    "Crypto": "pycryptodome",
    "OpenSSL": "pyopenssl",
    "google.protobuf": "protobuf",
    "attr": "attrs",
    "pypdf2": "PyPDF2",
    "lxml": "lxml",
    "markdown": "markdown",
    "mcp": "mcp",
}

# Interpreters (from shebangs or file extensions) -> Debian packages. Those already in the
# base image (python3, bash, sh) map to nothing.
INTERPRETER_TO_APT: dict[str, str | None] = {
    "python": None,
    "python3": None,
    "bash": None,
    "sh": None,
    "dash": None,
    "node": "nodejs",
    "nodejs": "nodejs",
    "deno": None,  # not in Debian: reported as unresolved
    "ruby": "ruby",
    "perl": None,  # perl-base is in every Debian image
    "Rscript": "r-base-core",
    "php": "php-cli",
    "lua": "lua5.4",
    "zsh": "zsh",
}
EXTENSION_TO_INTERPRETER = {
    ".js": "node",
    ".mjs": "node",
    ".cjs": "node",
    ".rb": "ruby",
    ".R": "Rscript",
    ".php": "php",
    ".lua": "lua",
    ".sh": "bash",
}

_REQ_NAME_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._\-]*(\[[^\]]*\])?)\s*(.*)$")
_SHEBANG_RE = re.compile(r"^#!\s*(\S+)(?:\s+(-\S+\s+)*(\S+))?")


class SkillDependencies(BaseModel):
    """What a derived sandbox image must add to the base image for a skill's scripts."""

    pip: list[str] = Field(default_factory=list, description="Requirement specifiers, sorted.")
    apt: list[str] = Field(default_factory=list, description="Debian packages, sorted.")
    unresolved: list[str] = Field(default_factory=list, description="Needs no package could be found for.")
    sources: dict[str, list[str]] = Field(default_factory=dict, description="Dependency -> files that asked for it.")

    @property
    def empty(self) -> bool:
        return not self.pip and not self.apt


def detect_dependencies(skill: SkillSpec) -> SkillDependencies:
    """Static scan of the skill's bundled files (its folder must still exist)."""
    folder = skill.folder
    deps = SkillDependencies()
    if folder is None or skill.kind != "skill" or not folder.is_dir():
        return deps
    files = [folder / rel for rel in skill.files if (folder / rel).is_file()]
    local_modules = _local_module_names(files, folder)
    pip: dict[str, str] = {}  # lowercased project name -> specifier (requirements win over imports)
    apt: set[str] = set()
    unresolved: set[str] = set()

    def note(dep: str, file: Path) -> None:
        deps.sources.setdefault(dep, []).append(file.relative_to(folder).as_posix())

    for file in files:
        if file.name.endswith(".txt") and file.name.startswith("requirements"):
            for spec in parse_requirements(file):
                pip[_project(spec)] = spec
                note(spec, file)
    for file in files:
        if file.suffix == ".py":
            for module in python_imports(file):
                if module in local_modules or _is_stdlib(module):
                    continue
                name = IMPORT_TO_PYPI.get(module, module)
                if _project(name) not in pip:
                    pip[_project(name)] = name
                note(name, file)
        interpreter = shebang_interpreter(file) or EXTENSION_TO_INTERPRETER.get(file.suffix)
        if interpreter is None:
            continue
        if interpreter in INTERPRETER_TO_APT:
            package = INTERPRETER_TO_APT[interpreter]
            if package:
                apt.add(package)
                note(package, file)
            elif interpreter == "deno":
                unresolved.add(interpreter)
        else:
            unresolved.add(interpreter)
            note(interpreter, file)
    deps.pip = sorted(pip.values(), key=str.lower)
    deps.apt = sorted(apt)
    deps.unresolved = sorted(unresolved)
    return deps


def parse_requirements(file: Path) -> list[str]:
    """Requirement lines of a requirements file; options (-r, -e, --index-url) are skipped."""
    specs = []
    for line in file.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        if _REQ_NAME_RE.match(line):
            specs.append(line)
    return specs


def python_imports(file: Path) -> set[str]:
    """Top-level module names imported anywhere in ``file`` (absolute imports only)."""
    try:
        tree = ast.parse(file.read_text(encoding="utf-8", errors="replace"), filename=str(file))
    except SyntaxError:
        return set()  # a broken script is the skill's problem; it has no detectable needs
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def shebang_interpreter(file: Path) -> str | None:
    """``node`` for ``#!/usr/bin/env node``, ``python3`` for ``#!/usr/bin/python3``."""
    try:
        with file.open("rb") as fh:
            first = fh.readline(200)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    match = _SHEBANG_RE.match(first.decode("utf-8", errors="replace").strip())
    if not match:
        return None
    program = Path(match.group(1)).name
    if program == "env":
        argument = match.group(3)
        return Path(argument).name if argument else None
    return re.sub(r"[\d.]+$", "", program) if program.startswith("python") else program


def _local_module_names(files: list[Path], folder: Path) -> set[str]:
    names = set()
    for file in files:
        if file.suffix == ".py":
            names.add(file.stem)
        if file.name == "__init__.py":
            names.add(file.parent.name)
        for parent in file.relative_to(folder).parents:
            if parent.name:
                names.add(parent.name)  # `from scripts.helpers import x` is local too
    return names


def _is_stdlib(module: str) -> bool:
    return module in sys.stdlib_module_names or module == "__future__"


def _project(spec: str) -> str:
    match = _REQ_NAME_RE.match(spec)
    name = match.group(1) if match else spec
    return re.sub(r"[-_.]+", "-", name.split("[")[0]).lower()
