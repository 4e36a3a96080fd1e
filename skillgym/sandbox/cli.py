"""`skillgym sandbox ...`: reap orphaned containers, build the base image."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Manage sandbox containers and images.", no_args_is_help=True)
console = Console()


def _client():
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(timeout=30)
        client.ping()
        return client
    except DockerException as exc:
        console.print(f"[red]No Docker engine answers ({exc}).[/red] Start one, e.g. scripts/setup_docker.sh.")
        raise typer.Exit(1) from None


@app.command()
def gc(
    all_: bool = typer.Option(False, "--all", help="Remove every skillgym sandbox, not only orphans."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Remove sandboxes whose owner process is gone: containers and local folders (or all with --all)."""
    from . import docker_available
    from .gc import collect, collect_local

    reaped = collect_local(all_folders=all_)
    if docker_available():
        reaped = collect(_client(), all_containers=all_) + reaped
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in reaped], indent=2))
    elif not reaped:
        console.print("No orphaned skillgym sandboxes.")
    else:
        table = Table("sandbox", "name", "owner", "pid", "created", "reason", "result")
        for r in reaped:
            table.add_row(
                r.id, r.name, r.owner, r.pid, r.created, r.reason, "removed" if r.removed else f"[red]{r.error}[/red]"
            )
        console.print(table)
    if any(not r.removed for r in reaped):
        raise typer.Exit(1)


@app.command()
def build(force: bool = typer.Option(False, "--force", help="Rebuild even if the image exists.")) -> None:
    """Build (or reuse) the sandbox base image."""
    from .images import ImageBuildError, ensure_base_image

    client = _client()
    with console.status("Building the sandbox base image (first time: about a minute)..."):
        try:
            tag = ensure_base_image(client, force=force)
        except ImageBuildError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
    console.print(f"Base image ready: [bold]{tag}[/bold]")
