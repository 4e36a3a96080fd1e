"""``skillgym orchestrate``: play orchestrator episodes, show episode trees, check a roster.

skillgym orchestrate play --roster roster.yaml --episodes 3 --depth 1
skillgym orchestrate play --swap codebase-explorer=hf:runs/distill/student --episodes 20 --quiet
skillgym orchestrate show trajectories.jsonl --depth 0
skillgym orchestrate roster roster.yaml
skillgym orchestrate children trees.jsonl --name codebase-explorer --out runs/children
skillgym orchestrate serve roster.yaml --out served.yaml     # hf: subagents behind HTTP
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="Orchestrator episodes with subagent calls (Part 2).", no_args_is_help=True)


def _fail(message: str) -> None:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(1)


def _roster(path: Path | None, swaps: list[str], backend: str):
    from .env import default_roster
    from .roster import RosterError, load_roster

    try:
        roster = load_roster(path) if path is not None else default_roster(backend)
        for swap in swaps:
            name, sep, policy = swap.partition("=")
            if not sep:
                _fail(f"--swap {swap!r}: write NAME=POLICY_SPEC, e.g. codebase-explorer=hf:runs/distill/student")
            roster = roster.with_policy(name.strip(), policy.strip())
    except (RosterError, KeyError, ValueError) as exc:
        _fail(str(exc.args[0]) if isinstance(exc, KeyError) else str(exc))
    return roster


@app.command()
def play(
    roster_path: Path | None = typer.Option(None, "--roster", help="Roster YAML (default: codebase-explorer, expert)."),
    swap: list[str] = typer.Option([], "--swap", help="NAME=POLICY: play roster entry NAME with another policy."),
    policy: str = typer.Option("expert", help="The orchestrator's policy: expert (the scripted router) or openai:..."),
    tasks: str = typer.Option("codebase-explorer-v0", help="Source env id whose tasks are posed, or a .jsonl file."),
    split: str = typer.Option("test", help="Split to draw tasks from."),
    task: str | None = typer.Option(None, "--task", help="One task id."),
    episodes: int = typer.Option(1, min=1, help="Episodes (the first N tasks of the split)."),
    router: str = typer.Option("route", help="What 'expert' plays: route (delegate) or none (answer alone)."),
    depth: int = typer.Option(1, min=0, help="Levels of subagent calls to open in the transcript (0: answers only)."),
    backend: str = typer.Option("auto", help="Sandbox backend: auto, docker, local."),
    as_json: bool = typer.Option(False, "--json", help="Print trajectories (with children) as JSON lines."),
    quiet: bool = typer.Option(False, help="No transcripts: the summary only."),
) -> None:
    """Play orchestrator episodes and print each episode tree, its roll-up and a summary."""
    import skillgym
    from skillgym.policies.spec import make_policy

    from .tree import render_tree, routing_accuracy

    roster = _roster(roster_path, swap, backend)
    try:
        env = skillgym.make(
            "orchestrator-v0",
            roster=roster,
            tasks=tasks,
            router=router,
            split=split,
            backend=backend,
            task_limit=None if task else episodes,
        )
        chosen = [env.env_spec.tasks.get(task)] if task else env.env_spec.tasks.tasks(split)[:episodes]
        agent = make_policy(policy, env)
    except (KeyError, ValueError, TypeError) as exc:
        _fail(str(exc.args[0]) if isinstance(exc, KeyError) else str(exc))
    trajectories = []
    try:
        for item in chosen:
            traj = skillgym.run_episode(env, agent, task=item)
            trajectories.append(traj)
            if as_json:
                typer.echo(traj.model_dump_json())
            elif not quiet:
                typer.echo(f"=== task {traj.task_id}: reward {traj.reward}")
                typer.echo(render_tree(traj, depth=depth))
                typer.echo(json.dumps(traj.metadata["rollup"], indent=1))
    finally:
        env.close()
    if not as_json:
        n = len(trajectories)
        mean = sum(t.reward or 0.0 for t in trajectories) / max(n, 1)
        cost = sum(t.metadata["rollup"]["cost_usd"] for t in trajectories)
        calls = sum(t.metadata["rollup"]["subagent_calls"] for t in trajectories)
        routing = routing_accuracy(trajectories)
        typer.echo(
            f"{n} episodes · mean reward {mean:.3f} · {calls} subagent calls · ${cost:.6f} · "
            f"routing accuracy {routing['accuracy']}"
        )


@app.command()
def show(
    path: Path = typer.Argument(..., help="Trajectories: a run directory (skillgym rollout) or a JSONL file."),
    depth: int = typer.Option(1, min=0, help="Levels of subagent calls to open (0: answers only)."),
) -> None:
    """Print stored orchestrator trajectories as indented trees."""
    from .children import read_trajectories
    from .tree import render_tree

    try:
        trajectories = read_trajectories(path)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    for traj in trajectories:
        typer.echo(f"=== task {traj.task_id}: reward {traj.reward}")
        typer.echo(render_tree(traj, depth=depth))


@app.command()
def children(
    source: Path = typer.Argument(..., help="Orchestrator trajectories: a run directory or a JSONL file."),
    name: str = typer.Option(..., "--name", help="The roster entry whose calls to keep."),
    out: Path = typer.Option(..., "--out", help="Run directory to write (then: skillgym export OUT --out DATASET)."),
    ungraded: str = typer.Option(
        "parent", help="Calls with no grade of their own: parent (take the orchestrator episode's reward) or drop."
    ),
) -> None:
    """Turn the subagent calls orchestrators made into a run that `skillgym export` makes SFT data of."""
    from .children import child_records, read_trajectories, write_child_run

    if ungraded not in ("parent", "drop"):
        _fail(f"--ungraded {ungraded!r}: use parent or drop")
    try:
        records = child_records(read_trajectories(source), name, ungraded=ungraded)  # type: ignore[arg-type]
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    if not records:
        _fail(f"no finished calls to {name!r} in {source}")
    written = write_child_run(records, out)
    typer.echo(
        f"{written} calls to {name} written to {out} "
        f"({sum(r.metadata['reward_source'] == 'own' for r in records)} graded by the subagent's env); "
        f"next: skillgym export {out} --out DATASET"
    )


@app.command()
def serve(
    path: Path = typer.Argument(..., help="Roster YAML whose hf: subagents to serve."),
    out: Path = typer.Option(..., "--out", help="Where to write the served roster (openai: specs)."),
    backend: str = typer.Option("auto", help="skillgym (CPU), vllm (GPU), transformers, or auto."),
    timeout: float = typer.Option(300.0, help="Seconds to wait for each server."),
) -> None:
    """Serve a roster's in-process models over HTTP and write the roster that uses the servers.
    Ctrl-C or SIGTERM stops them."""
    import time

    from skillgym.training.serving import ServerError, interrupt_on_sigterm

    from .serving import serve_roster

    roster = _roster(path, [], "auto")
    with interrupt_on_sigterm():  # SIGTERM runs the clean-up below (stopping every server), as Ctrl-C does
        try:
            served, handles = serve_roster(roster, backend=backend, timeout=timeout)
        except ServerError as exc:
            _fail(str(exc))
        out.write_text(served.to_yaml(), encoding="utf-8")
        if not handles:
            typer.echo(f"no hf: subagents to serve; {out} is the roster as it was")
            return
        for handle in handles:
            typer.echo(
                f"serving {handle.model_name} with {handle.backend} at {handle.base_url} (log: {handle.log_path})"
            )
        typer.echo(f"served roster: {out}; stop with Ctrl-C")
        try:
            while all(h.process.poll() is None for h in handles):
                time.sleep(1.0)
            typer.echo("a server exited", err=True)
            raise typer.Exit(1)
        except KeyboardInterrupt:
            pass
        finally:
            for handle in handles:
                handle.stop()


@app.command("roster")
def roster_command(path: Path = typer.Argument(..., help="Roster YAML file.")) -> None:
    """Check a roster file and list its subagents."""
    roster = _roster(path, [], "auto")
    for entry in roster.subagents:
        typer.echo(
            f"{entry.name}: {entry.env} played by {entry.policy} "
            f"(timeout {entry.limits.timeout_s:g} s, ${entry.prices.input_per_million:g}/"
            f"${entry.prices.output_per_million:g} per M tokens)"
        )
