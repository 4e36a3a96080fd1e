"""Loading and validating skills and subagents: the whole real corpus, then crafted edge cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from skillgym.benchmarks.skill_search import find_corpus
from skillgym.skills.frontmatter import has_frontmatter
from skillgym.skills.loader import (
    SkillLoadError,
    load_agent,
    load_any,
    load_collection,
    load_skill,
    split_tools,
)
from skillgym.skills.validate import ValidationIssue, has_errors, validate_file, validate_path

CORPUS = find_corpus()
needs_corpus = pytest.mark.skipif(
    CORPUS is None, reason="skills corpus not found: set SKILLGYM_CORPUS or place it at <repo>/../shared/skills-corpus"
)


def _corpus_files() -> list[tuple[str, Path]]:
    """Every skill and agent file, found independently of the loader's own walker: each
    SKILL.md, and each other .md with frontmatter that is not inside a skill folder."""
    assert CORPUS is not None
    skill_dirs = {p.parent for p in CORPUS.rglob("SKILL.md")}
    out: list[tuple[str, Path]] = [("skill", p) for p in sorted(CORPUS.rglob("SKILL.md"))]
    for p in sorted(CORPUS.rglob("*.md")):
        if p.name == "SKILL.md" or any(d in p.parents for d in skill_dirs):
            continue
        if has_frontmatter(p.read_text(encoding="utf-8", errors="replace")):
            out.append(("agent", p))
    return out


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# the real corpus


@needs_corpus
def test_every_corpus_file_loads_leniently() -> None:
    files = _corpus_files()
    assert len(files) >= 70
    for kind, path in files:
        spec = load_skill(path) if kind == "skill" else load_agent(path)
        assert spec.kind == kind
        assert spec.name and spec.description.strip(), path
        assert spec.instructions.strip(), path
        assert spec.content_hash.startswith("sha256:")
        assert spec.source_path == str(path.resolve())
        for rel in spec.files:
            assert (path.parent / rel).is_file(), (path, rel)
        assert load_any(path).content_hash == spec.content_hash


@needs_corpus
def test_collection_walk_matches_the_manifest() -> None:
    assert CORPUS is not None
    problems: list[SkillLoadError] = []
    specs = load_collection(CORPUS, problems=problems)
    assert problems == []
    by_path = {Path(s.source_path): s for s in specs}
    manifest = json.loads((CORPUS / "MANIFEST.json").read_text())
    for entry in manifest:
        spec = by_path.get((CORPUS / entry["path"]).resolve())
        assert spec is not None, f"{entry['path']} was not found by load_collection"
        assert (spec.name, spec.kind) == (entry["name"], entry["kind"])
        if entry["tools"]:
            assert spec.allowed_tools and spec.allowed_tools[0] == entry["tools"].split(",")[0].strip()
        assert (spec.model or "") == entry["model"]


@needs_corpus
def test_strict_validation_of_the_corpus_is_precise_and_never_raises() -> None:
    for _kind, path in _corpus_files():
        issues = validate_file(path)
        assert all(isinstance(i, ValidationIssue) for i in issues)
        lines = path.read_text(encoding="utf-8").splitlines()
        for issue in issues:
            assert issue.file == str(path) and issue.field and issue.message
            assert issue.line is None or 1 <= issue.line <= len(lines)
            # A finding about a top-level field points at the line where that field is written.
            if issue.line is not None and issue.field not in ("body", "frontmatter", "file", "name", "description"):
                assert lines[issue.line - 1].startswith(issue.field.split(".")[0] + ":"), issue
    # The folder-level entry point agrees and does not raise either.
    assert CORPUS is not None
    assert isinstance(validate_path(CORPUS), list)


@needs_corpus
def test_corpus_manifests_report_missing_entries_instead_of_failing() -> None:
    assert CORPUS is not None
    for manifest in sorted(CORPUS.glob("*/*.json")):
        problems: list[SkillLoadError] = []
        specs = load_collection(manifest, problems=problems)
        for problem in problems:
            assert problem.file and problem.message
        assert specs or problems, manifest


# ---------------------------------------------------------------------------------------------
# crafted files


def test_unquoted_colon_in_description_loads_and_validation_points_at_it(tmp_path: Path) -> None:
    skill = _write(
        tmp_path / "pdf-tools" / "SKILL.md",
        (
            "---\n"
            "name: pdf-tools\n"
            "description: Fill PDF forms. Use when: the user mentions PDFs, forms or fields\n"
            "license: MIT\n"
            "---\n\n# PDF tools\nDo things.\n"
        ),
    )
    spec = load_skill(skill.parent)
    assert spec.description == "Fill PDF forms. Use when: the user mentions PDFs, forms or fields"
    assert spec.license == "MIT" and spec.instructions == "# PDF tools\nDo things."
    issues = validate_path(skill)
    assert [(i.line, i.field, i.severity) for i in issues] == [(3, "description", "error")]
    assert "quotes" in issues[0].message and "YAML" in issues[0].message


def test_broken_yaml_elsewhere_keeps_the_other_fields(tmp_path: Path) -> None:
    agent = _write(
        tmp_path / "reviewer.md",
        (
            "---\n"
            "name: reviewer\n"
            "description: Reviews code: style, bugs\n"
            "tools:\n  - Read\n  - Grep\n"
            "metadata:\n  team: platform\n"
            "---\nYou review code.\n"
        ),
    )
    spec = load_agent(agent)
    assert spec.allowed_tools == ["Read", "Grep"]
    assert spec.metadata == {"team": "platform"}
    assert spec.description == "Reviews code: style, bugs"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Read, Grep, Glob", ["Read", "Grep", "Glob"]),
        ("Read Grep", ["Read", "Grep"]),
        (["Read", " Bash "], ["Read", "Bash"]),
        ("Bash(git add:*, git commit:*), Read", ["Bash(git add:*, git commit:*)", "Read"]),
        ("Bash(git status:*) Read", ["Bash(git status:*)", "Read"]),
        ("", None),
        (None, None),
    ],
)
def test_tools_as_string_or_list(value: object, expected: list[str] | None) -> None:
    assert split_tools(value) == expected


def test_agent_tools_string_and_unknown_fields_in_metadata(tmp_path: Path) -> None:
    agent = _write(
        tmp_path / "agents" / "sql-helper.md",
        (
            '---\nname: sql-helper\ndescription: "Writes SQL"\ntools: Read, Bash\nmodel: haiku\ncolor: blue\n'
            "version: 2\nreleased: 2024-05-01\n---\nYou write SQL.\n"
        ),
    )
    spec = load_any(agent)
    assert spec.kind == "agent" and spec.allowed_tools == ["Read", "Bash"] and spec.model == "haiku"
    assert spec.metadata == {"color": "blue", "version": 2, "released": "2024-05-01"}
    assert spec.files == []
    issues = validate_path(agent)
    assert [(i.field, i.severity, i.line) for i in issues] == [("version", "warning", 7), ("released", "warning", 8)]


def test_missing_name_is_derived_leniently_and_reported_strictly(tmp_path: Path) -> None:
    skill = _write(tmp_path / "csv-cleaner" / "SKILL.md", "---\ndescription: Cleans CSV files.\n---\nSteps.\n")
    assert load_skill(skill).name == "csv-cleaner"
    agent = _write(tmp_path / "Log Reader.md", "---\ndescription: Reads logs.\nmodel: sonnet\n---\nRead logs.\n")
    assert load_agent(agent).name == "log-reader"
    issues = validate_path(skill)
    assert [(i.line, i.field) for i in issues] == [(1, "name")]
    assert has_errors(issues)


def test_no_name_and_nothing_to_derive_it_from(tmp_path: Path) -> None:
    agent = _write(tmp_path / "___.md", "---\ndescription: x\n---\nbody\n")
    with pytest.raises(SkillLoadError) as info:
        load_agent(agent)
    assert info.value.field == "name" and info.value.line == 1 and "___.md" in str(info.value)


def test_missing_description_falls_back_to_the_first_paragraph(tmp_path: Path) -> None:
    skill = _write(tmp_path / "notes" / "SKILL.md", "---\nname: notes\n---\n# Notes\n\nTakes tidy notes.\n")
    assert load_skill(skill).description == "Takes tidy notes."
    assert [(i.field, i.line) for i in validate_path(skill)] == [("description", 1)]


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("# Just markdown\n", 1, "no YAML frontmatter"),
        ("---\nname: x\ndescription: y\n", 1, "never closed"),
        ("---\n- a\n- b\n---\nbody\n", 1, "key: value"),
    ],
)
def test_structural_errors_raise_with_file_line_field(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    skill = _write(tmp_path / "x" / "SKILL.md", text)
    with pytest.raises(SkillLoadError) as info:
        load_skill(skill)
    assert info.value.field == "frontmatter" and info.value.line == line and fragment in info.value.message
    assert str(skill) in str(info.value)
    issues = validate_path(skill)
    assert issues and issues[0].field == "frontmatter" and issues[0].line == line


def test_unreadable_or_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(SkillLoadError):
        load_skill(tmp_path / "nope")
    with pytest.raises(SkillLoadError) as info:
        load_any(tmp_path)
    assert "load_collection" in str(info.value)
    assert validate_path(tmp_path / "nope")[0].field == "path"


def test_strict_skill_rules(tmp_path: Path) -> None:
    skill = _write(
        tmp_path / "good-name" / "SKILL.md",
        (
            "---\n"
            "name: Bad--Name-\n"
            f'description: "{"d" * 1100}"\n'
            f'compatibility: "{"c" * 501}"\n'
            "allowed-tools: [Read, Bash]\n"
            "metadata:\n  version: 1.0\n"
            "license: MIT\n"
            "version: 3\n"
            "license: Apache-2.0\n"
            "---\nSee [the guide](references/guide.md) and [site](https://example.com).\n"
        ),
    )
    issues = validate_path(skill)
    found = {(i.line, i.field, i.severity) for i in issues}
    assert (2, "name", "error") in found  # uppercase, double hyphen, trailing hyphen, folder mismatch
    assert sum(1 for i in issues if i.field == "name" and i.line == 2) == 4
    assert (3, "description", "error") in found
    assert (4, "compatibility", "error") in found
    assert (5, "allowed-tools", "warning") in found
    assert (6, "metadata.version", "warning") in found
    assert (9, "version", "error") in found
    assert (8, "license", "error") in found  # duplicate key: the overridden occurrence
    assert (12, "body", "warning") in found  # broken relative link; the URL is not checked
    assert all(i.line is not None for i in issues)


def test_non_utf8_file_loads_but_fails_validation(tmp_path: Path) -> None:
    path = tmp_path / "latin" / "SKILL.md"
    path.parent.mkdir()
    path.write_bytes(b"---\nname: latin\ndescription: caf\xe9 helper\n---\nbody\n")
    assert load_skill(path).name == "latin"
    issues = validate_path(path)
    assert [(i.field, i.line) for i in issues] == [("file", 3)]


def test_bundled_files_are_listed_relative_to_the_skill(tmp_path: Path) -> None:
    root = tmp_path / "pdf"
    _write(root / "SKILL.md", "---\nname: pdf\ndescription: PDFs.\n---\nUse scripts/fill.py.\n")
    _write(root / "scripts" / "fill.py", "print('hi')\n")
    _write(root / "references" / "forms.md", "# Forms\n")
    _write(root / "__pycache__" / "x.pyc", "")
    spec = load_skill(root)
    assert spec.files == ["references/forms.md", "scripts/fill.py"]


def test_plugin_folder(tmp_path: Path) -> None:
    plugin = tmp_path / "my-plugin"
    _write(
        plugin / ".claude-plugin" / "plugin.json", json.dumps({"name": "my-plugin", "agents": ["./extra/special.md"]})
    )
    _write(plugin / "skills" / "alpha" / "SKILL.md", "---\nname: alpha\ndescription: A.\n---\nA body.\n")
    _write(plugin / "skills" / "alpha" / "notes.md", "---\nname: not-an-agent\ndescription: bundled\n---\nx\n")
    _write(plugin / "agents" / "beta.md", "---\nname: beta\ndescription: B.\ntools: Read\n---\nB prompt.\n")
    _write(plugin / "extra" / "special.md", "---\ndescription: listed by the manifest only\n---\nS.\n")
    _write(plugin / "README.md", "# My plugin\n")
    _write(plugin / "docs" / "page.md", "---\ntitle: A docs page\n---\ntext\n")
    specs = load_collection(plugin)
    assert sorted((s.kind, s.name) for s in specs) == [("agent", "beta"), ("agent", "special"), ("skill", "alpha")]
    # The same plugin through its manifest file gives the same set.
    again = load_collection(plugin / ".claude-plugin" / "plugin.json")
    assert {s.content_hash for s in again} == {s.content_hash for s in specs}


def test_marketplace_json(tmp_path: Path) -> None:
    market = tmp_path / "market"
    _write(
        market / "plugins" / "tools" / "skills" / "gamma" / "SKILL.md", "---\nname: gamma\ndescription: G.\n---\nG.\n"
    )
    _write(
        market / "plugins" / "tools" / "skills" / "delta" / "SKILL.md", "---\nname: delta\ndescription: D.\n---\nD.\n"
    )
    _write(
        market / "plugins" / "walked" / "agents" / "eps.md", "---\nname: eps\ndescription: E.\nmodel: opus\n---\nE.\n"
    )
    manifest = _write(
        market / ".claude-plugin" / "marketplace.json",
        json.dumps(
            {
                "name": "market",
                "metadata": {"pluginRoot": "./plugins"},
                "plugins": [
                    {"name": "tools", "source": "./tools", "skills": ["./skills/gamma", "./skills/missing"]},
                    {"name": "walked", "source": "walked"},
                    {"name": "gone", "source": "./gone"},
                    {"name": "remote", "source": {"source": "github", "repo": "someone/else"}},
                ],
            }
        ),
    )
    problems: list[SkillLoadError] = []
    specs = load_collection(manifest, problems=problems)
    assert sorted(s.name for s in specs) == ["eps", "gamma"]  # delta is not listed by its plugin
    messages = " | ".join(str(p) for p in problems)
    assert len(problems) == 3 and "skills/missing" in messages and "'./gone'" in messages and "remote" in messages
    with pytest.raises(SkillLoadError):
        load_collection(manifest, strict=True)
    issues = validate_path(manifest)
    assert sum(i.severity == "error" for i in issues) == 3


def test_crlf_bom_and_block_scalars(tmp_path: Path) -> None:
    path = tmp_path / "notes" / "SKILL.md"
    path.parent.mkdir()
    text = "\ufeff---\r\nname: notes\r\ndescription: >-\r\n  Takes notes\r\n  and files them.\r\n---\r\nBody\r\n"
    path.write_bytes(text.encode("utf-8"))
    spec = load_skill(path)
    assert (spec.name, spec.description, spec.instructions) == ("notes", "Takes notes and files them.", "Body")
    assert validate_path(path) == []


def test_broken_file_in_a_folder_does_not_hide_the_others(tmp_path: Path) -> None:
    _write(tmp_path / "ok" / "SKILL.md", "---\nname: ok\ndescription: fine\n---\nbody\n")
    _write(tmp_path / "broken" / "SKILL.md", "no frontmatter here\n")
    problems: list[SkillLoadError] = []
    specs = load_collection(tmp_path, problems=problems)
    assert [s.name for s in specs] == ["ok"]
    assert len(problems) == 1 and problems[0].field == "frontmatter"


# -- hostile YAML (issue 9, major 10): bounded, precise, fast ---------------------------------------
LAUGHS = """---
name: laughs
description: A skill.
a: &a ["x","x","x","x","x","x","x","x","x"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
allowed-tools: [*f,*f,*f,*f,*f,*f,*f,*f,*f]
---
body
"""
HOSTILE_YAML = [
    ("billion laughs", LAUGHS, 9, "f", "expand to more than 100,000 values"),
    (
        "description nested 20,000 levels",
        "---\nname: deep\ndescription: " + "[" * 20_000 + "]" * 20_000 + "\n---\nbody\n",
        3,
        "description",
        "nested more than 64 levels",
    ),
    (
        "nested mappings",
        "---\nname: deep\nmetadata:\n" + "".join(" " * i + f"k{i}:\n" for i in range(1, 200)) + "---\nbody\n",
        67,
        "metadata",
        "nested more than 64 levels",
    ),
    (
        "recursive anchor",
        "---\nname: loop\ndescription: x\nallowed-tools: &t [Read, *t]\n---\nbody\n",
        4,
        "allowed-tools",
        "recursive anchor",
    ),
    (
        "broken YAML elsewhere, deep value",
        "---\nname: deep\nbad: a: b: c\ndescription: " + "[" * 20_000 + "\n---\nbody\n",
        4,
        "description",
        "nested more than 64 levels",
    ),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case,text,line,field,fragment", HOSTILE_YAML, ids=[h[0] for h in HOSTILE_YAML])
def test_hostile_yaml_is_a_precise_error_everywhere(tmp_path: Path, case, text, line, field, fragment) -> None:
    from skillgym.compiler.build import from_skill

    folder = tmp_path / "hostile"
    folder.mkdir()
    (folder / "SKILL.md").write_text(text)
    with pytest.raises(SkillLoadError) as info:
        load_skill(folder)
    assert (info.value.line, info.value.field) == (line, field) and fragment in str(info.value)
    issues = validate_path(folder)
    assert [(i.line, i.field) for i in issues if i.severity == "error"] == [(line, field)]
    with pytest.raises(SkillLoadError, match=fragment):
        from_skill(folder)
    # A folder walk reports the file and keeps going.
    problems: list[SkillLoadError] = []
    assert load_collection(tmp_path, problems=problems) == [] and len(problems) == 1


def test_moderate_aliases_still_load(tmp_path: Path) -> None:
    (tmp_path / "SKILL.md").write_text(
        "---\nname: anchors\ndescription: x\nbase: &t [Read, Grep]\nallowed-tools: *t\n---\nbody\n"
    )
    assert load_skill(tmp_path).allowed_tools == ["Read", "Grep"]
