"""The core's commands: ``envs``, ``play``, ``doctor``, ``sandbox``, ``skills``, ``tasks``.

The installed ``skillgym`` script is :mod:`skillgym.pipeline.cli`, which mounts these next to
the stages' commands (``rollout``, ``export``, ``eval``, ``train``, ``serve``, ``distill``);
the core itself knows no stage. Library code never prints; everything shown is shown here.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import shutil
import subprocess
from typing import Any

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

app = typer.Typer(
    help="Turn agent skills and subagents into environments, data and small models.", no_args_is_help=True
)
console = Console()


def _mount(module: str, name: str, help: str) -> None:
    """Attach a sub-app; a missing optional part must not break the rest of the CLI."""
    try:
        sub = importlib.import_module(module).app
    except ImportError as exc:  # pragma: no cover - depends on optional extras
        sub = typer.Typer(help=f"{help} (unavailable: {exc})")
    app.add_typer(sub, name=name, help=help)


@app.command()
def envs(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List registered environments."""
    import skillgym

    rows = [{"id": r.id, "description": r.description} for r in skillgym.list_envs()]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("id", "description")
    for row in rows:
        table.add_row(row["id"], row["description"])
    console.print(table)


@app.command()
def play(
    env_id: str = typer.Argument(..., help="Environment id, e.g. codebase-explorer-v0."),
    policy: str = typer.Option("expert", help="Policy spec: expert, random[:SEED]."),
    task: str | None = typer.Option(None, "--task", help="Task id (default: drawn from --split with --seed)."),
    split: str = typer.Option("test", help="Split to draw tasks from."),
    seed: int = typer.Option(0, help="Seed for the task draw."),
    episodes: int = typer.Option(1, min=1, help="Episodes to play (consecutive seeds)."),
    backend: str = typer.Option("auto", help="Sandbox backend: auto, docker, local."),
    as_json: bool = typer.Option(False, "--json", help="Print trajectories as JSON lines."),
    depth: int = typer.Option(
        1, min=0, help="Subagent calls (episode trees): levels to open; 0 shows each call as its answer."
    ),
) -> None:
    """Play episodes with a policy and print each transcript and its score."""
    import skillgym
    from skillgym.cli_options import check_policy_specs, user_errors
    from skillgym.episode import run_episode
    from skillgym.policies.spec import make_policy
    from skillgym.transcript import render_tree

    check_policy_specs([policy])
    with user_errors():
        env = skillgym.make(env_id, split=split, backend=backend)
    rewards = []
    try:
        with user_errors():  # an unknown split or task fails here, before any sandbox starts
            env.env_spec.tasks.tasks(split)
            if task is not None:
                env.env_spec.tasks.get(task)
            agent = make_policy(policy, env)
        for i in range(episodes):
            traj = run_episode(env, agent, seed=seed + i, task_id=task)
            rewards.append(traj.reward or 0.0)
            if as_json:
                print(traj.model_dump_json())
            elif traj.children:  # an orchestrator's episode: its subagent calls indented under it
                console.rule(f"[bold]{traj.env_id}[/bold] task {traj.task_id} · policy {traj.policy_id}")
                console.print(render_tree(traj, depth=depth), markup=False, highlight=False)
                console.print(f"[bold]reward {traj.reward or 0:.3f}[/bold] · {len(traj.children)} subagent calls")
            else:
                _print_transcript(traj)
    finally:
        env.close()
    if not as_json and episodes > 1:
        console.print(f"[bold]mean reward over {episodes} episodes: {sum(rewards) / len(rewards):.3f}[/bold]")


_ROLE_STYLE = {"system": "dim", "user": "cyan", "assistant": "green", "tool": "yellow"}


def _print_transcript(traj: Any) -> None:
    from rich.markup import escape

    from skillgym.transcript import format_call, image_placeholders

    console.rule(f"[bold]{traj.env_id}[/bold] task {traj.task_id} · policy {traj.policy_id}")
    for m in traj.messages:
        role = m["role"]
        body = m.get("content") or ""
        if role == "system" and len(body) > 600:
            body = body[:600] + f" [... {len(body) - 600} more characters]"
        calls = [format_call(c) for c in m.get("tool_calls") or []]
        # Escaped: rich would read "[image ...]" as a style tag and drop it.
        shown = [escape(line) for line in image_placeholders(m)]
        text = "\n".join([body, *shown] + [f"→ {c}" for c in calls]).strip() or "(empty)"
        title = role if role != "tool" else f"tool · {m.get('name') or ''}"
        console.print(Panel(text, title=title, title_align="left", border_style=_ROLE_STYLE.get(role, "white")))
    comps = ", ".join(f"{k}={v:.2f}" for k, v in traj.reward_components.items())
    status = "truncated" if traj.truncated else "answered"
    console.print(
        f"[bold]reward {traj.reward if traj.reward is not None else 0:.3f}[/bold] ({comps}) · {traj.num_turns} turns · {status}"
    )


@app.command()
def doctor(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Check the Docker engine, sandbox images, GPU and optional extras."""
    report = _doctor_report()
    if as_json:
        print(json.dumps(report, indent=2))
        return
    table = Table("check", "status", "detail")
    for name, item in report.items():
        table.add_row(name, "[green]ok[/green]" if item["ok"] else "[yellow]missing[/yellow]", item["detail"])
    console.print(table)


def _doctor_report() -> dict[str, dict[str, Any]]:
    report: dict[str, dict[str, Any]] = {}
    from skillgym.sandbox import docker_available

    engine = docker_available()
    detail = "engine answers" if engine else "no engine: the local sandbox will be used (run scripts/setup.sh as root)"
    report["docker engine"] = {"ok": engine, "detail": detail}
    if engine:
        from skillgym.sandbox.images import base_image_present

        present, tag = base_image_present()
        report["base image"] = {"ok": present, "detail": tag if present else f"{tag} not built: skillgym sandbox build"}
    bwrap = shutil.which("bwrap")
    report["bubblewrap"] = {"ok": bool(bwrap), "detail": bwrap or "not installed: local sandbox is not isolated"}
    gpu = ""
    if shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
        gpu = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""
    report["gpu"] = {"ok": bool(gpu), "detail": gpu or "none (CPU recipes only; vLLM unavailable)"}
    for extra, module in [
        ("torch", "torch"),
        ("transformers", "transformers"),
        ("trl", "trl"),
        ("peft", "peft"),
        ("ray", "ray"),
        ("datasets", "datasets"),
        ("bm25s", "bm25s"),
        ("vllm", "vllm"),
        ("sentence-transformers", "sentence_transformers"),
    ]:
        spec = importlib.util.find_spec(module)
        version = ""
        if spec is not None:
            try:
                from importlib.metadata import version as pkg_version

                version = pkg_version(extra)
            except Exception:
                version = "installed"
        report[extra] = {"ok": spec is not None, "detail": version or "not installed"}
    report["skillgym serve (CPU student server)"] = _serve_check(_STUDENT_SERVER_MODULES)
    report["transformers serve (optional backend)"] = _serve_check(_SERVE_MODULES)
    from skillgym.skills.search import available_modes

    for mode, (ok, why) in available_modes().items():
        report[f"skill search: {mode}"] = {"ok": ok, "detail": why}
    return report


# What the project's student server (the CPU default of `skillgym serve`) imports.
_STUDENT_SERVER_MODULES = ("transformers", "torch", "fastapi", "uvicorn")
# What `transformers serve` imports before it starts (its own check, `is_serve_available`, asks
# for exactly these); without them `skillgym serve --backend transformers` dies with an ImportError.
_SERVE_MODULES = ("transformers", "torch", "fastapi", "uvicorn", "openai", "pydantic")


def _serve_check(modules: tuple[str, ...]) -> dict[str, Any]:
    """Whether a serving backend that needs ``modules`` can start, and how to fix it."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        fix = "pip install 'skillgym[serve]' (or bash scripts/setup.sh)"
        return {"ok": False, "detail": f"cannot start: missing {', '.join(missing)}; {fix}"}
    return {"ok": True, "detail": f"can start ({', '.join(modules)} installed)"}


_mount("skillgym.sandbox.cli", "sandbox", "Manage sandboxes: gc, build.")
_mount("skillgym.skills.cli", "skills", "Index, search, show and validate skills.")
_mount("skillgym.taskgen.cli", "tasks", "Generate task files for skills with a teacher model.")


if __name__ == "__main__":  # pragma: no cover
    app()
