"""Strict validation of skill and subagent files, with file/line/field for every finding.

Skills are checked against the Agent Skills specification (agentskills.io): required
``name`` and ``description``, the name format and its match with the folder, length limits,
the closed set of top-level fields, and valid YAML. Subagent files follow Claude Code's
conventions, which are looser and still evolving, so unknown fields there are warnings.

Validation never raises on bad input: every problem, including an unreadable file or broken
YAML, comes back as a :class:`ValidationIssue`. (The lenient loader, by contrast, loads what
it can; see :mod:`skillgym.skills.loader`.)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from skillgym.skills.frontmatter import Frontmatter, FrontmatterError, parse_frontmatter
from skillgym.skills.loader import SKILL_FILENAMES, SkillLoadError, iter_component_files, load_collection

Severity = Literal["error", "warning"]

SKILL_FIELDS = ("name", "description", "license", "allowed-tools", "metadata", "compatibility")
AGENT_FIELDS = (
    "name",
    "description",
    "tools",
    "disallowedTools",
    "model",
    "permissionMode",
    "maxTurns",
    "skills",
    "mcpServers",
    "hooks",
    "memory",
    "background",
    "effort",
    "isolation",
    "color",
    "initialPrompt",
)
AGENT_MODELS = ("sonnet", "opus", "haiku", "inherit")
AGENT_COLORS = ("red", "blue", "green", "yellow", "purple", "orange", "pink", "cyan")
NAME_MAX = 64
DESCRIPTION_MAX = 1024
COMPATIBILITY_MAX = 500
BODY_LINES_RECOMMENDED = 500

_NAME_CHARS = re.compile(r"[a-z0-9-]+")
_LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


class ValidationIssue(BaseModel):
    """One finding. ``line`` is the file line of the offending frontmatter field (1-based)."""

    file: str
    line: int | None = None
    field: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.field}: {self.message}"


def has_errors(issues: list[ValidationIssue]) -> bool:
    return any(issue.severity == "error" for issue in issues)


def validate_path(path: str | Path) -> list[ValidationIssue]:
    """Validate whatever ``path`` is: a skill folder or ``SKILL.md``, an agent file, a plugin
    or marketplace manifest, or any folder (every skill and agent under it)."""
    p = Path(path)
    if not p.exists():
        return [ValidationIssue(file=str(p), field="path", message="does not exist")]
    if p.is_file() and p.suffix.lower() == ".json":
        return _validate_manifest(p)
    if p.is_file():
        return validate_file(p)
    found = list(iter_component_files(p))
    if not found:
        return [
            ValidationIssue(
                file=str(p),
                field="path",
                message="no SKILL.md and no agent .md file (frontmatter with name/description) found under this folder",
            )
        ]
    issues: list[ValidationIssue] = []
    for kind, file in found:
        issues += validate_skill(file) if kind == "skill" else validate_agent(file)
    return issues


def validate_file(path: str | Path) -> list[ValidationIssue]:
    """A ``SKILL.md`` (or skill folder) is checked as a skill, any other file as an agent."""
    p = Path(path)
    if p.is_dir() or p.name in SKILL_FILENAMES:
        return validate_skill(p)
    return validate_agent(p)


def validate_skill(path: str | Path) -> list[ValidationIssue]:
    """Check one skill against the Agent Skills rules."""
    p = Path(path)
    file = p / "SKILL.md" if p.is_dir() else p
    if p.is_dir() and not file.is_file() and (p / "skill.md").is_file():
        file = p / "skill.md"
    report = _Report(file)
    if file.name != "SKILL.md":
        report.error(None, "file", f"a skill's instructions file must be named SKILL.md (found {file.name!r})")
    fm = _load(file, report)
    if fm is None:
        return report.issues
    data = fm.data
    for key in data:
        if key not in SKILL_FIELDS:
            report.error(
                fm.key_lines.get(key),
                key,
                (
                    f"unknown top-level field; the Agent Skills spec allows only {', '.join(SKILL_FIELDS)}. "
                    "Move it under `metadata:`"
                ),
            )
    name = _check_name(fm, report, required=True)
    if name and name != file.parent.name:
        report.error(
            fm.key_lines.get("name"),
            "name",
            f"{name!r} must match the skill's folder name {file.parent.name!r}; rename one of them",
        )
    _check_description(fm, report)
    _check_text(fm, report, "compatibility", COMPATIBILITY_MAX)
    _check_text(fm, report, "license", None)
    if "metadata" in data:
        meta = data["metadata"]
        line = fm.key_lines.get("metadata")
        if not isinstance(meta, dict):
            report.error(line, "metadata", "must be a mapping of string keys to string values")
        else:
            for key, value in meta.items():
                if not isinstance(value, str):
                    report.warning(line, f"metadata.{key}", "the spec expects string values; quote it")
    if "allowed-tools" in data:
        tools = data["allowed-tools"]
        line = fm.key_lines.get("allowed-tools")
        if isinstance(tools, list) and all(isinstance(t, str) for t in tools):
            report.warning(line, "allowed-tools", "the spec expects one space-separated string, not a list")
        elif not isinstance(tools, str):
            report.error(line, "allowed-tools", "must be a space-separated string of tool names")
    _check_body(fm, report, file, kind="skill")
    return report.issues


def validate_agent(path: str | Path) -> list[ValidationIssue]:
    """Check one Claude-Code-style subagent file."""
    file = Path(path)
    report = _Report(file)
    fm = _load(file, report)
    if fm is None:
        return report.issues
    for key in fm.data:
        if key not in AGENT_FIELDS:
            report.warning(
                fm.key_lines.get(key),
                key,
                f"not a known subagent field (known: {', '.join(AGENT_FIELDS)}); it is kept as metadata",
            )
    _check_name(fm, report, required=True)
    _check_description(fm, report)
    if "tools" in fm.data:
        _check_agent_tools(fm, report)
    if "model" in fm.data:
        model, line = fm.data["model"], fm.key_lines.get("model")
        if not isinstance(model, str) or not model.strip():
            report.error(line, "model", f"must be a model alias ({', '.join(AGENT_MODELS)}) or a model id")
        elif model not in AGENT_MODELS and not model.startswith("claude-"):
            report.warning(
                line, "model", f"{model!r} is neither an alias ({', '.join(AGENT_MODELS)}) nor a claude-* id"
            )
    if "color" in fm.data and fm.data["color"] not in AGENT_COLORS:
        report.warning(fm.key_lines.get("color"), "color", f"expected one of {', '.join(AGENT_COLORS)}")
    _check_body(fm, report, file, kind="agent")
    return report.issues


# ---------------------------------------------------------------------------------------------


class _Report:
    def __init__(self, file: Path) -> None:
        self.file = str(file)
        self.issues: list[ValidationIssue] = []

    def error(self, line: int | None, field: str, message: str) -> None:
        self.issues.append(ValidationIssue(file=self.file, line=line, field=field, message=message))

    def warning(self, line: int | None, field: str, message: str) -> None:
        self.issues.append(ValidationIssue(file=self.file, line=line, field=field, message=message, severity="warning"))


def _load(file: Path, report: _Report) -> Frontmatter | None:
    """Read and parse; structural problems are reported, and None means nothing more to check."""
    try:
        raw = file.read_bytes()
    except OSError as exc:
        report.error(None, "file", f"cannot read: {exc.strerror or exc}")
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        report.error(line, "file", f"not valid UTF-8 (byte {exc.start}); re-save the file as UTF-8")
        text = raw.decode("utf-8", errors="replace")
    try:
        fm = parse_frontmatter(text)
    except FrontmatterError as exc:
        report.error(exc.line, exc.field, str(exc))
        return None
    if fm.start_line != 1:
        report.error(fm.start_line, "frontmatter", "the opening '---' must be the first line of the file")
    if fm.yaml_error:
        field = _field_at(fm, fm.yaml_error_line)
        hint = ""
        value = fm.data.get(field)
        if isinstance(value, str) and ": " in value:
            hint = "; the value contains ': ', so wrap it in quotes"
        report.error(fm.yaml_error_line, field, f"invalid YAML: {fm.yaml_error}{hint}")
    if fm.not_a_mapping:
        report.error(fm.start_line, "frontmatter", "must be `key: value` fields, not a list or a scalar")
        return None
    for key, line in fm.duplicate_keys:
        report.error(line, key, f"duplicate field: ignored, the one at line {fm.key_lines.get(key)} wins; keep one")
    return fm


def _field_at(fm: Frontmatter, line: int | None) -> str:
    """The top-level field whose lines contain ``line`` (fields own the lines up to the next)."""
    owner = "frontmatter"
    for key, key_line in sorted(fm.key_lines.items(), key=lambda kv: kv[1]):
        if line is not None and key_line <= line:
            owner = key
    return owner


def _check_name(fm: Frontmatter, report: _Report, *, required: bool) -> str | None:
    line = fm.key_lines.get("name")
    if "name" not in fm.data:
        if required:
            report.error(fm.start_line, "name", "required field is missing; add `name: my-name` (lowercase, hyphens)")
        return None
    name = fm.data["name"]
    if not isinstance(name, str):
        report.error(line, "name", f"must be a string, got {type(name).__name__}")
        return None
    if not name:
        report.error(line, "name", "must not be empty")
        return None
    if len(name) > NAME_MAX:
        report.error(line, "name", f"is {len(name)} characters; the limit is {NAME_MAX}")
    bad = sorted(set(re.sub(_NAME_CHARS, "", name)))
    if bad:
        report.error(
            line,
            "name",
            (
                f"may contain only lowercase letters, digits and hyphens; found {''.join(bad)!r}"
                + (f" (try {_suggest(name)!r})" if _suggest(name) else "")
            ),
        )
    if name.startswith("-") or name.endswith("-"):
        report.error(line, "name", "must not start or end with a hyphen")
    if "--" in name:
        report.error(line, "name", "must not contain consecutive hyphens ('--')")
    return name


def _suggest(name: str) -> str:
    return re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9]+", "-", name.lower())).strip("-")


def _check_description(fm: Frontmatter, report: _Report) -> None:
    if "description" not in fm.data:
        report.error(fm.start_line, "description", "required field is missing; say what it does and when to use it")
        return
    _check_text(fm, report, "description", DESCRIPTION_MAX)


def _check_text(fm: Frontmatter, report: _Report, field: str, limit: int | None) -> None:
    if field not in fm.data:
        return
    value, line = fm.data[field], fm.key_lines.get(field)
    if not isinstance(value, str):
        report.error(line, field, f"must be a string, got {type(value).__name__}")
    elif not value.strip():
        report.error(line, field, "must not be empty")
    elif limit is not None and len(value) > limit:
        report.error(line, field, f"is {len(value)} characters; the limit is {limit}")


def _check_agent_tools(fm: Frontmatter, report: _Report) -> None:
    tools, line = fm.data["tools"], fm.key_lines.get("tools")
    if isinstance(tools, str):
        items = [t.strip() for t in tools.split(",")]
    elif isinstance(tools, list) and all(isinstance(t, str) for t in tools):
        items = [t.strip() for t in tools]
    else:
        report.error(line, "tools", "must be a comma-separated string or a list of tool names")
        return
    if not any(items):
        report.warning(line, "tools", "is empty; omit the field to inherit all tools")
    elif not all(items):
        report.warning(line, "tools", "has an empty entry (a stray comma?)")


def _check_body(fm: Frontmatter, report: _Report, file: Path, *, kind: str) -> None:
    what = "skill instructions" if kind == "skill" else "system prompt"
    if not fm.body.strip():
        report.warning(fm.end_line, "body", f"no {what} after the frontmatter")
        return
    n_lines = fm.body.count("\n") + 1
    if kind == "skill" and n_lines > BODY_LINES_RECOMMENDED:
        report.warning(
            fm.body_start_line,
            "body",
            (
                f"{n_lines} lines; the spec recommends under {BODY_LINES_RECOMMENDED}: "
                "move detail into references/ files"
            ),
        )
    in_code = False
    for offset, text in enumerate(fm.body.splitlines()):
        if text.lstrip().startswith(("```", "~~~")):
            in_code = not in_code
            continue
        if in_code:
            continue
        for target in _LINK.findall(text):
            if _is_local(target) and not (file.parent / target.split("#", 1)[0]).exists():
                report.warning(fm.body_start_line + offset, "body", f"links to {target!r}, which does not exist")


def _is_local(target: str) -> bool:
    return not (re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith(("#", "/", "{")))


def _validate_manifest(file: Path) -> list[ValidationIssue]:
    problems: list[SkillLoadError] = []
    try:
        specs = load_collection(file, problems=problems)
    except SkillLoadError as exc:
        return [_from_load_error(exc)]
    issues = [_from_load_error(problem) for problem in problems]
    for spec in specs:
        source = Path(str(spec.source_path))
        issues += validate_skill(source) if spec.kind == "skill" else validate_agent(source)
    return issues


def _from_load_error(error: SkillLoadError) -> ValidationIssue:
    return ValidationIssue(file=error.file, line=error.line, field=error.field or "path", message=error.message)
