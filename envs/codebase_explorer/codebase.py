"""The code an explorer works on: a folder of Python sources, indexed once per process.

The default codebase is a fixed subset of the running interpreter's standard library (pure
Python packages and modules, their test folders left out), staged as a plain folder in the
user cache so that it can be mounted read-only into any sandbox. A user's own repository
works the same way: any folder of ``.py`` files.

The index walks files exactly as the sandbox's ``grep``/``glob`` ops do (sorted, hidden
folders and ``__pycache__`` skipped), so that what the task generator counts as "one match"
is what a search inside the sandbox shows.
"""

from __future__ import annotations

import ast
import hashlib
import os
import shutil
import sys
import sysconfig
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from skillgym.cache import cache_root

# Pure-Python parts of the standard library that together give several thousand questions
# while keeping a whole-repository grep fast (~3.5 MB of source). Changing this list changes
# the default codebase's hash, which every trajectory records.
STDLIB_PACKAGES: tuple[str, ...] = (
    "asyncio",
    "collections",
    "concurrent",
    "email",
    "html",
    "http",
    "importlib",
    "json",
    "logging",
    "tomllib",
    "urllib",
    "wsgiref",
    "xmlrpc",
    "zoneinfo",
)
STDLIB_MODULES: tuple[str, ...] = (
    "argparse",
    "ast",
    "base64",
    "bdb",
    "calendar",
    "cmd",
    "configparser",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "difflib",
    "enum",
    "filecmp",
    "fileinput",
    "fnmatch",
    "fractions",
    "ftplib",
    "functools",
    "getopt",
    "gettext",
    "glob",
    "gzip",
    "heapq",
    "hmac",
    "imaplib",
    "inspect",
    "ipaddress",
    "mailbox",
    "mimetypes",
    "netrc",
    "numbers",
    "optparse",
    "pathlib",
    "pickle",
    "plistlib",
    "poplib",
    "pprint",
    "queue",
    "quopri",
    "random",
    "sched",
    "selectors",
    "shlex",
    "shutil",
    "smtplib",
    "socketserver",
    "statistics",
    "string",
    "subprocess",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "tokenize",
    "traceback",
    "typing",
    "uuid",
    "zipfile",
)
_SKIPPED_PACKAGE_DIRS = {"test", "tests", "__pycache__"}


@dataclass
class SourceFile:
    """One Python file: its path relative to the repository root, dotted module name, text."""

    rel: str
    text: str
    tree: ast.Module | None  # None when the file does not parse with this interpreter
    lines: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.lines = self.text.splitlines()

    @property
    def module(self) -> str:
        return module_name(self.rel)


@dataclass
class Codebase:
    root: Path
    files: list[SourceFile]
    content_hash: str

    @property
    def by_rel(self) -> dict[str, SourceFile]:
        return {f.rel: f for f in self.files}


def module_name(rel: str) -> str:
    """``pkg/sub/mod.py`` -> ``pkg.sub.mod``; ``pkg/__init__.py`` -> ``pkg``."""
    parts = rel[: -len(".py")].split("/") if rel.endswith(".py") else rel.split("/")
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def iter_python_files(root: Path) -> list[Path]:
    """``.py`` files in the order the sandbox's search ops visit them."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__pycache__")
        found.extend(Path(dirpath) / name for name in sorted(filenames) if name.endswith(".py"))
    return found


def _fingerprint(files: list[Path]) -> tuple:
    """Cheap change detector for the in-process cache (size and mtime, not content)."""
    return tuple((str(p), s.st_size, s.st_mtime_ns) for p in files for s in [p.stat()])


_CACHE: dict[Path, tuple[tuple, Codebase]] = {}


def load_codebase(root: str | Path) -> Codebase:
    """Read and parse every ``.py`` file under ``root`` (cached in-process until files change)."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"codebase {root} is not a folder; pass a folder of Python sources")
    paths = iter_python_files(root)
    fingerprint = _fingerprint(paths)
    cached = _CACHE.get(root)
    if cached and cached[0] == fingerprint:
        return cached[1]
    digest = hashlib.sha256()
    files = []
    for path in paths:
        data = path.read_bytes()
        rel = path.relative_to(root).as_posix()
        digest.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
        text = data.decode("utf-8", "replace")
        try:
            tree = ast.parse(text, filename=rel)
        except (SyntaxError, ValueError):
            tree = None
        files.append(SourceFile(rel=rel, text=text, tree=tree))
    if not files:
        raise ValueError(f"codebase {root} has no .py files; point it at a folder of Python sources")
    codebase = Codebase(root=root, files=files, content_hash="sha256:" + digest.hexdigest())
    _CACHE[root] = (fingerprint, codebase)
    return codebase


def _stdlib_sources() -> list[tuple[str, Path]]:
    """(relative path, source file) for the default codebase, in a stable order."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    picked: list[tuple[str, Path]] = []
    for name in STDLIB_PACKAGES:
        for dirpath, dirnames, filenames in os.walk(stdlib / name):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIPPED_PACKAGE_DIRS)
            for fn in sorted(filenames):
                if fn.endswith(".py"):
                    path = Path(dirpath) / fn
                    picked.append((path.relative_to(stdlib).as_posix(), path))
    picked.extend((f"{name}.py", stdlib / f"{name}.py") for name in STDLIB_MODULES)
    missing = [str(p) for _, p in picked if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"standard library sources missing (is this a full Python install?): {missing[:3]}")
    return sorted(picked)


def default_codebase() -> Path:
    """Stage the standard-library subset as a folder (once per Python version and content).

    A staged copy rather than the live stdlib folder: the stdlib also holds tests,
    site-packages and ~30 MB we do not want in the sandbox. The folder name carries a hash of
    the sources, so an interpreter upgrade stages a new copy instead of mixing versions.
    """
    sources = _stdlib_sources()
    digest = hashlib.sha256()
    for rel, path in sources:
        stat = path.stat()
        digest.update(f"{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    version = ".".join(map(str, sys.version_info[:3]))
    target = cache_root() / "codebases" / f"python-{version}-stdlib-{digest.hexdigest()[:12]}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    try:
        for rel, path in sources:
            dest = staging / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
            dest.chmod(0o644)
        # Sandboxes may read the mount as an unprivileged user: every folder must be traversable.
        for dirpath, _, _ in os.walk(staging):
            os.chmod(dirpath, 0o755)
        try:
            staging.rename(target)  # atomic: a reader sees no folder or a complete one
        except OSError:
            if not target.is_dir():  # anything but "another process staged it first"
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
