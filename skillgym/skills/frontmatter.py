"""Split a Markdown file into its YAML frontmatter and body, tolerating real-world YAML.

Skill and agent files in the wild are written by hand and often are not valid YAML: the
commonest fault is an unquoted description containing ``: `` ("Use when: ..."), which PyYAML
rejects as a nested mapping. The strict path (PyYAML) is always tried first; when it fails,
a line-oriented fallback recovers the top-level ``key: value`` pairs so that the file still
loads. The YAML error is kept so that strict validation can report it with its line.

Line numbers are 1-based lines of the whole file, so errors can say ``SKILL.md:3``.

YAML is loaded with bounds, because skill files come from anywhere: nesting deeper than
:data:`MAX_YAML_DEPTH`, aliases that expand to more than :data:`MAX_YAML_NODES` values (a
"billion laughs" fits in 400 bytes) and recursive aliases raise :class:`FrontmatterTooComplex`
naming the line and field, before anything walks the data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

# A top-level key starts in column 0; YAML keys in these files are identifiers with '-', '_'
# or '.' (``allowed-tools``, ``argument_hint``, ``x.y``).
_KEY_LINE = re.compile(r"^(?P<key>[A-Za-z_][\w.\-]*)\s*:(?:\s+(?P<value>.*)|\s*)$")
_FENCE = re.compile(r"^---\s*$")
_CLOSE = re.compile(r"^(?:---|\.\.\.)\s*$")

MAX_YAML_DEPTH = 64
"""Deepest nesting of lists and mappings in a frontmatter (real skills use two or three)."""
MAX_YAML_NODES = 100_000
"""Most values a frontmatter may hold once its aliases are expanded."""


@dataclass
class Frontmatter:
    """The parsed head of a Markdown file.

    ``data`` is what the lenient loader uses; ``yaml_error`` is set (with ``yaml_error_line``)
    when PyYAML rejected the block and ``data`` came from the fallback parser.
    """

    data: dict[str, Any]
    key_lines: dict[str, int]
    body: str
    start_line: int
    end_line: int
    body_start_line: int
    yaml_error: str | None = None
    yaml_error_line: int | None = None
    duplicate_keys: list[tuple[str, int]] = field(default_factory=list)  # overridden occurrences
    not_a_mapping: bool = False

    @property
    def lenient(self) -> bool:
        """True when the data had to be recovered by the fallback parser."""
        return self.yaml_error is not None


class FrontmatterError(ValueError):
    """The frontmatter cannot be used; ``line`` (1-based, in the file) and ``field`` say where."""

    def __init__(self, message: str, line: int, field: str = "frontmatter") -> None:
        super().__init__(message)
        self.line = line
        self.field = field


class FrontmatterMissing(FrontmatterError):
    """The text does not start with a ``---`` fenced block."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message, line)


class FrontmatterTooComplex(FrontmatterError):
    """The YAML nests too deep, or its aliases expand too far (or into themselves), to load safely."""


def has_frontmatter(text: str) -> bool:
    """Cheap check used when walking folders: does the first non-blank line open a block?"""
    for line in _strip_bom(text).splitlines():
        if line.strip():
            return bool(_FENCE.match(line))
    return False


def parse_frontmatter(text: str) -> Frontmatter:
    """Parse the frontmatter at the head of ``text``.

    Args:
        text: A Markdown file's text.

    Returns:
        The frontmatter (data, the line of every key, the body).

    Raises:
        FrontmatterMissing: There is no (closed) ``---`` block.
        FrontmatterTooComplex: The YAML is nested or aliased past the bounds in this module.
    """
    lines = _strip_bom(text).splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip()), None)
    if start is None or not _FENCE.match(lines[start]):
        raise FrontmatterMissing("no YAML frontmatter: the file must start with a line '---'", 1)
    end = next((i for i in range(start + 1, len(lines)) if _CLOSE.match(lines[i])), None)
    if end is None:
        raise FrontmatterMissing(
            "frontmatter opened with '---' is never closed: add a line '---' after the last field",
            start + 1,
        )
    block_lines = lines[start + 1 : end]
    block = "\n".join(block_lines)
    first = start + 2  # file line of block_lines[0]
    body_lines = lines[end + 1 :]
    # Drop blank lines between the closing fence and the text: they are layout, not content.
    skipped = 0
    while skipped < len(body_lines) and not body_lines[skipped].strip():
        skipped += 1
    body = "\n".join(body_lines[skipped:]).rstrip()
    fm = Frontmatter(
        data={},
        key_lines={},
        body=body,
        start_line=start + 1,
        end_line=end + 1,
        body_start_line=end + 2 + skipped,
    )
    if not _fill_from_yaml(fm, block, first):
        _fill_from_fallback(fm, block_lines, first)
    return fm


def _strip_bom(text: str) -> str:
    return text[1:] if text.startswith("\ufeff") else text


def _fill_from_yaml(fm: Frontmatter, block: str, first: int) -> bool:
    """Strict path. Returns False (and records the error) when PyYAML rejects the block."""
    try:
        node = _bounded_compose(block, first)
        data = yaml.safe_load(block) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        fm.yaml_error = _one_line(exc)
        fm.yaml_error_line = first + mark.line if mark is not None else first
        return False
    if data is None:
        return True  # an empty block is valid YAML; required fields are checked elsewhere
    if not isinstance(data, dict) or not isinstance(node, yaml.MappingNode):
        fm.not_a_mapping = True
        return True
    fm.data = {str(k): v for k, v in data.items()}
    for key_node, _ in node.value:
        _record_key(fm, str(key_node.value), first + key_node.start_mark.line)
    return True


def _record_key(fm: Frontmatter, key: str, line: int) -> None:
    """YAML keeps the last of duplicated keys, so ``key_lines`` points at the last occurrence
    (the value in effect) and the earlier ones are listed as duplicates."""
    if key in fm.key_lines:
        fm.duplicate_keys.append((key, fm.key_lines[key]))
    fm.key_lines[key] = line


def _fill_from_fallback(fm: Frontmatter, block_lines: list[str], first: int) -> None:
    """Recover top-level ``key: value`` pairs line by line.

    Each key owns the lines up to the next top-level key. A key's chunk is first re-tried as
    YAML on its own (so lists, maps and block scalars of the *other* keys still parse when only
    one value is broken); if that fails the raw text becomes a string value.
    """
    chunks: list[tuple[str, int, list[str]]] = []
    for offset, line in enumerate(block_lines):
        match = _KEY_LINE.match(line)
        if match:
            chunks.append((match["key"], first + offset, [line]))
        elif chunks:
            chunks[-1][2].append(line)
        # Lines before the first key (stray text, comments) carry nothing we can use.
    for key, line, chunk in chunks:
        _record_key(fm, key, line)
        fm.data[key] = _chunk_value(key, chunk, line)


def _chunk_value(key: str, chunk: list[str], line: int) -> Any:
    try:
        text = "\n".join(chunk)
        if _bounded_compose(text, line) is not None:
            parsed = yaml.safe_load(text)
            if isinstance(parsed, dict) and key in parsed:
                return parsed[key]
    except yaml.YAMLError:
        pass
    first_value = chunk[0].split(":", 1)[1].strip()
    rest = [line.strip() for line in chunk[1:] if line.strip() and not line.lstrip().startswith("#")]
    if first_value in ("|", ">", "|-", ">-", "|+", ">+"):
        joiner = "\n" if first_value.startswith("|") else " "
        return joiner.join(rest)
    if not first_value and rest and all(item.startswith("- ") for item in rest):
        return [_unquote(item[2:].strip()) for item in rest]
    return _unquote(" ".join([first_value, *rest]).strip())


def _bounded_compose(block: str, first: int) -> yaml.Node | None:
    """``yaml.compose`` that refuses what would make loading, or any walk over the result, blow
    up: raises FrontmatterTooComplex for nesting past MAX_YAML_DEPTH (checked on the event
    stream, which PyYAML produces without recursion, before the recursive composer runs),
    recursive aliases, and aliases expanding past MAX_YAML_NODES values. YAML syntax errors
    propagate as ``yaml.YAMLError``."""
    depth, key, at_key = 0, "frontmatter", False  # key: the top-level field the events are in
    for event in yaml.parse(block, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            at_key = at_key if depth > 1 else True
            if depth > MAX_YAML_DEPTH:
                raise FrontmatterTooComplex(
                    f"YAML nested more than {MAX_YAML_DEPTH} levels deep; a field holds text, a list or a "
                    "small mapping",
                    first + event.start_mark.line,
                    key,
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
            if depth == 1:
                at_key = not at_key
        elif isinstance(event, (yaml.ScalarEvent, yaml.AliasEvent)) and depth == 1:
            if at_key and isinstance(event, yaml.ScalarEvent):
                key = str(event.value)
            at_key = not at_key
    node = yaml.compose(block, Loader=yaml.SafeLoader)
    if isinstance(node, yaml.MappingNode):
        for key_node, value in node.value:
            _check_expansion(value, first, str(key_node.value))
    elif node is not None:
        _check_expansion(node, first, "frontmatter")
    return node


def _check_expansion(root: yaml.Node, first: int, field: str) -> None:
    """Count the values under ``root`` as a consumer walking the loaded data would meet them
    (an alias counts in full each time it is used), without recursion and in time linear in
    the number of distinct nodes."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        ident = id(node)
        children = (
            [c for pair in node.value for c in pair]
            if isinstance(node, yaml.MappingNode)
            else (node.value if isinstance(node, yaml.SequenceNode) else [])
        )
        if done:
            on_path.discard(ident)
            sizes[ident] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[ident] > MAX_YAML_NODES:
                raise FrontmatterTooComplex(
                    f"YAML aliases expand to more than {MAX_YAML_NODES:,} values; write the values out "
                    "instead of repeating anchors",
                    first + node.start_mark.line,
                    field,
                )
            continue
        if ident in sizes:
            continue
        if ident in on_path:
            raise FrontmatterTooComplex(
                "YAML alias refers to a value that contains it (a recursive anchor)",
                first + node.start_mark.line,
                field,
            )
        on_path.add(ident)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _one_line(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None)
    context = getattr(exc, "context", None)
    parts = [p for p in (context, problem) if p]
    return "; ".join(parts) if parts else str(exc).splitlines()[0]
