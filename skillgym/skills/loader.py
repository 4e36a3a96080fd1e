"""Load skills (Agent Skills ``SKILL.md`` folders) and subagents (agent ``.md`` files).

The loader is lenient on purpose: it exists to ingest thousands of hand-written files, so it
accepts what tools in the wild accept (invalid-but-readable YAML, ``tools`` as a comma string
or a list, extra fields) and keeps everything it does not understand in ``metadata``.
Strict checking against the Agent Skills rules lives in :mod:`skillgym.skills.validate`.

Only a file with no frontmatter, one without a usable name, or one that cannot be read
raises :class:`SkillLoadError`, which names the file, the line and the field.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from skillgym.skills.frontmatter import Frontmatter, FrontmatterError, has_frontmatter, parse_frontmatter
from skillgym.types import SkillSpec

logger = logging.getLogger(__name__)

SKILL_FILENAMES = ("SKILL.md", "skill.md")
# Folders that never hold skills but can be huge; everything else (``.claude`` included) is walked.
SKIP_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        "node_modules",
        "__pycache__",
        ".venv",
        "venv",
        ".tox",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
    }
)
# Frontmatter keys that mark a Markdown file as a subagent definition rather than a document.
_AGENT_MARKERS = ("name", "tools", "model", "color")
_TOOL_KEYS = {
    "skill": ("allowed-tools", "allowed_tools", "tools"),
    "agent": ("tools", "allowed-tools", "allowed_tools"),
}
_SLUG_JUNK = re.compile(r"[^a-z0-9]+")

Kind = Literal["skill", "agent"]


class SkillLoadError(ValueError):
    """A skill or agent file that cannot be turned into a :class:`SkillSpec`."""

    def __init__(self, file: str | Path, message: str, *, line: int | None = None, field: str | None = None) -> None:
        self.file = str(file)
        self.line = line
        self.field = field
        self.message = message
        where = f"{self.file}:{line}" if line is not None else self.file
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}")


# ---------------------------------------------------------------------------------------------
# single files


def load_skill(path: str | Path) -> SkillSpec:
    """Load an Agent Skills folder, given the folder or its ``SKILL.md``."""
    file = _skill_file(Path(path))
    fm = _read_frontmatter(file)
    return _build_spec(file, fm, "skill")


def load_agent(path: str | Path) -> SkillSpec:
    """Load a Claude-Code-style subagent file (frontmatter + system prompt body)."""
    file = Path(path)
    if file.is_dir():
        raise SkillLoadError(
            file, "is a folder; load_agent expects one agent .md file (use load_collection for folders)"
        )
    fm = _read_frontmatter(file)
    return _build_spec(file, fm, "agent")


def load_any(path: str | Path) -> SkillSpec:
    """Load one skill or agent, deciding by shape: a ``SKILL.md`` (or its folder) is a skill,
    any other Markdown file an agent."""
    p = Path(path)
    if p.is_dir():
        if _find_skill_file(p) is None:
            raise SkillLoadError(
                p,
                "folder has no SKILL.md; use load_collection() to load every skill and agent under it",
                field="SKILL.md",
            )
        return load_skill(p)
    if p.name in SKILL_FILENAMES:
        return load_skill(p)
    if p.suffix.lower() in (".md", ".markdown"):
        return load_agent(p)
    raise SkillLoadError(p, "not a skill or agent file: expected SKILL.md, a skill folder or an agent .md file")


# ---------------------------------------------------------------------------------------------
# collections: plugin folders, marketplace.json, any folder


def load_collection(
    path: str | Path,
    *,
    strict: bool = False,
    problems: list[SkillLoadError] | None = None,
) -> list[SkillSpec]:
    """Every skill and agent under ``path``: a plugin folder, a ``marketplace.json`` (or
    ``plugin.json``), a single skill/agent, or any folder (walked recursively).

    Files that fail to load are skipped and appended to ``problems`` (and logged), so one bad
    file cannot hide a thousand good ones; ``strict=True`` raises the first one instead.
    """
    collector = _Collector(strict=strict, problems=problems)
    p = Path(path)
    if not p.exists():
        raise SkillLoadError(p, "does not exist")
    if p.is_file() and p.suffix.lower() == ".json":
        collector.load_manifest(p)
    elif p.is_file():
        collector.add_file(p)
    else:
        collector.load_folder(p)
    return collector.specs


class _Collector:
    """Accumulates specs from several sources, once per file, routing errors by policy."""

    def __init__(self, *, strict: bool, problems: list[SkillLoadError] | None) -> None:
        self.strict = strict
        self.problems = problems
        self.specs: list[SkillSpec] = []
        self._seen: set[Path] = set()

    def fail(self, error: SkillLoadError) -> None:
        if self.strict:
            raise error
        # Not a warning: callers that care pass ``problems``; the CLI shows them.
        logger.info("skipped: %s", error)
        if self.problems is not None:
            self.problems.append(error)

    def add_file(self, file: Path, kind: Kind | None = None) -> None:
        key = file.resolve()
        if key in self._seen:
            return
        self._seen.add(key)
        try:
            if kind == "skill" or (kind is None and file.name in SKILL_FILENAMES):
                self.specs.append(load_skill(file))
            else:
                self.specs.append(load_agent(file))
        except SkillLoadError as error:
            self.fail(error)

    def add_path(self, p: Path) -> None:
        """A path named by a manifest: a skill folder, a folder of components, or a file."""
        if p.is_dir():
            self.load_folder(p)
        elif p.is_file():
            self.add_file(p)
        else:
            self.fail(SkillLoadError(p, "listed in a plugin/marketplace manifest but not found; fix the path"))

    def load_folder(self, root: Path) -> None:
        for kind, file in iter_component_files(root):
            self.add_file(file, kind)
        manifest = _plugin_manifest(root)
        if manifest is not None:
            self._load_plugin_extras(manifest, root)

    def load_manifest(self, file: Path) -> None:
        data = _read_json(file)
        root = file.parent.parent if file.parent.name == ".claude-plugin" else file.parent
        if isinstance(data.get("plugins"), list):
            self._load_marketplace(file, data, root)
        else:
            # A plugin manifest: the plugin is its folder plus the component paths it lists.
            for kind, found in iter_component_files(root):
                self.add_file(found, kind)
            self._load_plugin_extras(file, root)

    def _load_plugin_extras(self, manifest: Path, root: Path) -> None:
        data = _read_json(manifest)
        for p in _component_paths(data, root):
            self.add_path(p)

    def _load_marketplace(self, file: Path, data: dict[str, Any], root: Path) -> None:
        meta = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
        base = root / str(meta.get("pluginRoot", "."))
        for index, plugin in enumerate(data["plugins"]):
            if not isinstance(plugin, dict):
                self.fail(SkillLoadError(file, "each entry of 'plugins' must be an object", field=f"plugins[{index}]"))
                continue
            label = f"plugins[{index}] ({plugin.get('name', '?')})"
            source = plugin.get("source", ".")
            if not isinstance(source, str):
                # github/url/git sources live elsewhere; fetching them is not the loader's job.
                self.fail(
                    SkillLoadError(
                        file,
                        f"remote source {json.dumps(source)} is not fetched; clone it and load the folder",
                        field=label,
                    )
                )
                continue
            plugin_root = (base / source).resolve()
            listed = _component_paths(plugin, plugin_root)
            if listed:
                for p in listed:
                    self.add_path(p)
            elif plugin_root.is_dir():
                self.load_folder(plugin_root)
            else:
                self.fail(SkillLoadError(file, f"plugin source {source!r} not found under {base}", field=label))


def iter_component_files(root: Path) -> Iterator[tuple[Kind, Path]]:
    """Walk ``root`` and yield ``(kind, file)`` for every skill and agent file, in sorted order.

    A folder with a ``SKILL.md`` is a skill and is not descended into (its other files are
    the skill's bundle). Any other Markdown file is an agent when its frontmatter has a
    ``description`` and a name or agent field; plain documents (README, references) are not.
    """
    skill_file = _find_skill_file(root)
    if skill_file is not None:
        yield "skill", skill_file
        return
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        kept = []
        for d in dirnames:
            sub_skill = _find_skill_file(here / d)
            if sub_skill is not None:
                yield "skill", sub_skill
            else:
                kept.append(d)
        dirnames[:] = kept
        for name in sorted(filenames):
            file = here / name
            if file.suffix.lower() in (".md", ".markdown") and _looks_like_agent(file):
                yield "agent", file


# ---------------------------------------------------------------------------------------------
# building a SkillSpec


def _build_spec(file: Path, fm: Frontmatter, kind: Kind) -> SkillSpec:
    data = dict(fm.data)
    folder = file.parent
    name = _as_text(data.pop("name", None))
    if not name:
        name = _slug(folder.name if kind == "skill" else file.stem)
        if not name:
            raise SkillLoadError(
                file,
                "missing, and the file/folder name gives none to derive: add `name: my-skill`",
                line=fm.start_line,
                field="name",
            )
    description = _as_text(data.pop("description", None)) or _first_paragraph(fm.body)
    allowed_tools = _pop_tools(data, kind)
    license_ = _as_text(data.pop("license", None)) or None
    model = _as_text(data.pop("model", None)) or None
    metadata: dict[str, Any] = {}
    declared = data.pop("metadata", None)
    if isinstance(declared, dict):
        metadata.update({str(k): v for k, v in declared.items()})
    elif declared is not None:
        metadata["metadata"] = declared
    metadata.update(data)  # every field we do not model: compatibility, color, version, ...
    return SkillSpec(
        name=name,
        description=description,
        instructions=fm.body,
        kind=kind,
        allowed_tools=allowed_tools,
        files=bundled_files(folder, file) if kind == "skill" else [],
        license=license_,
        model=model,
        metadata=_plain(metadata),
        source_path=str(file.resolve()),
    )


def bundled_files(folder: Path, skill_file: Path) -> list[str]:
    """Files shipped with a skill (scripts, references, assets), relative to its folder."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
        for name in filenames:
            p = Path(dirpath) / name
            if p != skill_file:
                out.append(p.relative_to(folder).as_posix())
    return sorted(out)


def split_tools(value: Any) -> list[str] | None:
    """``tools`` / ``allowed-tools`` as a list of names.

    Accepts a YAML list, a comma-separated string (Claude Code agents) or a space-separated
    string (the Agent Skills spec). Commas and spaces inside parentheses belong to the tool
    pattern (``Bash(git add:*, git commit:*)``) and do not split. Empty means no restriction.
    """
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        items = [str(v).strip() for v in value if v is not None]
    else:
        text = str(value).strip()
        separator = "," if _has_top_level_comma(text) else None
        items = _split_top_level(text, separator)
    items = [i for i in items if i]
    return items or None


def _pop_tools(data: dict[str, Any], kind: Kind) -> list[str] | None:
    for key in _TOOL_KEYS[kind]:
        if key in data:
            return split_tools(data.pop(key))
    return None


def _has_top_level_comma(text: str) -> bool:
    depth = 0
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth <= 0:
            return True
    return False


def _split_top_level(text: str, separator: str | None) -> list[str]:
    """Split on ``separator`` (None = whitespace) outside parentheses."""
    items, current, depth = [], [], 0
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        is_sep = ch.isspace() if separator is None else ch == separator
        if is_sep and depth <= 0:
            items.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    items.append("".join(current).strip())
    return items


# ---------------------------------------------------------------------------------------------
# helpers


def read_text(file: Path) -> str:
    """File text as UTF-8; undecodable bytes are replaced rather than fatal (validation flags them)."""
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise SkillLoadError(file, f"cannot read: {exc.strerror or exc}", field="file") from exc
    return raw.decode("utf-8", errors="replace")


def _read_frontmatter(file: Path) -> Frontmatter:
    text = read_text(file)
    try:
        fm = parse_frontmatter(text)
    except FrontmatterError as exc:
        raise SkillLoadError(file, str(exc), line=exc.line, field=exc.field) from exc
    if fm.not_a_mapping:
        raise SkillLoadError(
            file,
            "must be `key: value` fields (name, description, ...), not a list or a scalar",
            line=fm.start_line,
            field="frontmatter",
        )
    return fm


def _skill_file(p: Path) -> Path:
    if p.is_dir():
        found = _find_skill_file(p)
        if found is None:
            raise SkillLoadError(p, "folder has no SKILL.md; a skill folder must contain one", field="SKILL.md")
        return found
    if not p.exists():
        raise SkillLoadError(p, "does not exist", field="file")
    return p


def _find_skill_file(folder: Path) -> Path | None:
    for name in SKILL_FILENAMES:
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


def _looks_like_agent(file: Path) -> bool:
    try:
        text = read_text(file)
    except SkillLoadError:
        return False
    if not has_frontmatter(text):
        return False
    try:
        data = parse_frontmatter(text).data
    except FrontmatterError:
        return False
    return "description" in data and any(k in data for k in _AGENT_MARKERS)


def _plugin_manifest(root: Path) -> Path | None:
    for candidate in (root / ".claude-plugin" / "plugin.json", root / "plugin.json"):
        if candidate.is_file():
            return candidate
    return None


def _component_paths(manifest: dict[str, Any], root: Path) -> list[Path]:
    """Skill and agent paths a plugin/marketplace entry lists (string or list), resolved."""
    out: list[Path] = []
    for key in ("skills", "agents"):
        value = manifest.get(key)
        entries: Iterable[Any] = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        out.extend((root / str(entry)).resolve() for entry in entries if isinstance(entry, str))
    return out


def _read_json(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(read_text(file))
    except json.JSONDecodeError as exc:
        raise SkillLoadError(
            file, f"invalid JSON: {exc.msg} (column {exc.colno})", line=exc.lineno, field="json"
        ) from exc
    if not isinstance(data, dict):
        raise SkillLoadError(file, "a plugin or marketplace manifest must be a JSON object", line=1, field="json")
    return data


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(str(v) for v in value).strip()
    return str(value).strip()


def _slug(text: str) -> str:
    return _SLUG_JUNK.sub("-", text.lower()).strip("-")


def _first_paragraph(body: str, limit: int = 300) -> str:
    """A stand-in description for files that lack one: the first prose paragraph of the body."""
    for block in re.split(r"\n\s*\n", body):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        prose = [line for line in lines if not line.startswith(("#", "```", "<", "|", "---"))]
        if prose:
            text = " ".join(prose)
            return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
    return ""


def _plain(value: Any) -> Any:
    """JSON-safe copy of YAML data (dates, sets, odd keys) so specs serialize losslessly."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if isinstance(value, (_dt.date, _dt.datetime)):
        return value.isoformat()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
