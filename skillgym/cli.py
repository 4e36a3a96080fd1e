"""The ``skillgym`` command line. Library code never prints; everything shown is shown here."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import sys
import shutil
import subprocess
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

app = typer.Typer(help="Turn agent skills and subagents into environments, data and small models.", no_args_is_help=True)
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
) -> None:
    """Play episodes with a policy and print each transcript and its score."""
    import skillgym
    from skillgym.episode import run_episode
    from skillgym.policies.spec import make_policy

    env = skillgym.make(env_id, split=split, backend=backend)
    rewards = []
    try:
        agent = make_policy(policy, env)
        for i in range(episodes):
            traj = run_episode(env, agent, seed=seed + i, task_id=task)
            rewards.append(traj.reward or 0.0)
            if as_json:
                print(traj.model_dump_json())
            else:
                _print_transcript(traj)
    finally:
        env.close()
    if not as_json and episodes > 1:
        console.print(f"[bold]mean reward over {episodes} episodes: {sum(rewards) / len(rewards):.3f}[/bold]")


_ROLE_STYLE = {"system": "dim", "user": "cyan", "assistant": "green", "tool": "yellow"}


def _print_transcript(traj: Any) -> None:
    from skillgym.transcript import format_call

    console.rule(f"[bold]{traj.env_id}[/bold] task {traj.task_id} · policy {traj.policy_id}")
    for m in traj.messages:
        role = m["role"]
        body = m.get("content") or ""
        if role == "system" and len(body) > 600:
            body = body[:600] + f" [... {len(body) - 600} more characters]"
        calls = [format_call(c) for c in m.get("tool_calls") or []]
        text = "\n".join([body] + [f"→ {c}" for c in calls]).strip() or "(empty)"
        title = role if role != "tool" else f"tool · {m.get('name') or ''}"
        console.print(Panel(text, title=title, title_align="left", border_style=_ROLE_STYLE.get(role, "white")))
    comps = ", ".join(f"{k}={v:.2f}" for k, v in traj.reward_components.items())
    status = "truncated" if traj.truncated else "answered"
    console.print(f"[bold]reward {traj.reward if traj.reward is not None else 0:.3f}[/bold] ({comps}) · {traj.num_turns} turns · {status}")


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
        ("torch", "torch"), ("transformers", "transformers"), ("trl", "trl"), ("peft", "peft"),
        ("ray", "ray"), ("datasets", "datasets"), ("bm25s", "bm25s"), ("vllm", "vllm"),
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
    report["transformers serve"] = _serve_check()
    return report


# What `transformers serve` imports before it starts (its own check, `is_serve_available`, asks
# for exactly these); without them `skillgym serve` dies with transformers' ImportError.
_SERVE_MODULES = ("transformers", "torch", "fastapi", "uvicorn", "openai", "pydantic")


def _serve_check() -> dict[str, Any]:
    """Whether `transformers serve` (the CPU serving backend) can start, and how to fix it."""
    missing = [m for m in _SERVE_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        fix = "pip install 'skillgym[serve]' (or bash scripts/setup.sh)"
        return {"ok": False, "detail": f"cannot start: missing {', '.join(missing)}; {fix}"}
    return {"ok": True, "detail": "can start (fastapi, uvicorn, openai installed)"}


@app.command("eval")
def eval_command(
    env_id: str = typer.Argument(..., help="Env id, skill:<name>, or module:function."),
    policy: list[str] = typer.Option(..., "--policy", help="Policy spec (repeat to compare several)."),
    split: str = typer.Option("test", help="Held-out split."),
    tasks: int | None = typer.Option(200, "--tasks", min=1, help="The first N tasks of the split."),
    samples: int = typer.Option(1, "--samples", min=1, help="Episodes per task (k > 1 gives pass^k)."),
    concurrency: int = typer.Option(8, "--concurrency", min=1),
    backend: str = typer.Option("local", "--backend", help="Rollout backend: local or ray."),
    out: Path = typer.Option(..., "--out", help="Output folder (resumable)."),
    seed: int = typer.Option(0, "--seed"),
    env_arg: list[str] = typer.Option([], "--env-arg", help="key=value for the env (repeatable)."),
    variant: list[str] = typer.Option(
        [], "--variant", help="NAME:key=value[,key=value] env variant, e.g. no-skill:instruction_mode=none (repeatable)."
    ),
    threshold: float = typer.Option(0.5, "--threshold", help="Reward at or above which an episode counts as a success."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Evaluate policies side by side on the same held-out tasks: success (95% CI), pass^k,
    reward, turns, tokens, answer vs trace length, latency; writes eval.json and eval.png."""
    from skillgym.evaluate import EvalConfig, run_eval
    from skillgym.rollouts.cli import _env_args

    variants = {"default": {}}
    if variant:
        variants = {}
        for item in variant:
            name, sep, pairs = item.partition(":")
            if not name:
                raise typer.BadParameter(f"{item!r}: expected NAME:key=value[,key=value]", param_hint="--variant")
            variants[name] = _env_args([p for p in pairs.split(",") if p]) if sep else {}
    config = EvalConfig(
        env=env_id, env_kwargs=_env_args(env_arg), policies=policy, variants=variants, split=split, n_tasks=tasks,
        samples=samples, concurrency=concurrency, backend=backend, out=out, seed=seed, success_threshold=threshold,
    )
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=Console(stderr=True), disable=as_json)
    bars: dict[str, Any] = {}

    def on_cell(label: str, p: Any) -> None:
        if label not in bars:
            bars[label] = progress.add_task(label, total=p.total)
        progress.update(bars[label], completed=p.already_done + p.finished)

    with progress:
        report = run_eval(config, on_cell)
    if as_json:
        print(report.model_dump_json(indent=2))
        return
    table = Table("policy", "success (95% CI)", "pass^k", "reward", "turns", "tokens/ep", "answer/trace", "latency p50",
                  title=f"{report.env} · {report.split} · {report.cells[0].metrics.tasks} tasks × {report.samples}")
    for cell in report.cells:
        m = cell.metrics
        passk = " ".join(f"{k}:{v:.2f}" for k, v in m.pass_k.items())
        table.add_row(cell.label, f"{m.success_rate:.3f} [{m.success_ci95[0]:.2f}, {m.success_ci95[1]:.2f}]", passk,
                      f"{m.mean_reward:.3f}", f"{m.mean_turns:.2f}", f"{m.tokens_per_episode:.0f}",
                      f"{m.answer_chars:.0f}/{m.trace_chars:.0f}", f"{m.latency_p50_s:.2f}s")
    console.print(table)
    console.print(f"report: {out / 'eval.json'} · chart: {out / 'eval.png'}")


@app.command()
def serve(
    model: str = typer.Argument(..., help="Model folder (full weights or a LoRA adapter) or hub id."),
    backend: str = typer.Option("auto", help="vllm (GPU), transformers, or auto (vllm when installed with a GPU)."),
    host: str = typer.Option("127.0.0.1", help="Listen address."),
    port: int | None = typer.Option(None, help="Port (default: a free one)."),
    timeout: float = typer.Option(600.0, help="Seconds to wait until the server answers."),
) -> None:
    """Serve a model behind an OpenAI-compatible endpoint and print the policy spec to use."""
    import time

    from skillgym.serving import ServerError, start_server

    try:
        handle = start_server(model, backend=backend, host=host, port=port, timeout=timeout)  # type: ignore[arg-type]
    except ServerError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    console.print(f"[green]serving[/green] {model} with {handle.backend} at {handle.base_url} (log: {handle.log_path})")
    console.print(f"policy spec: [bold]{handle.policy_spec}[/bold]")
    try:
        while handle.process.poll() is None:
            time.sleep(1.0)
        console.print(f"[red]server exited with code {handle.process.returncode}[/red]\n{handle.log_tail()}")
        raise typer.Exit(1)
    except KeyboardInterrupt:
        pass
    finally:
        handle.stop()


@app.command()
def distill(
    env_id: str = typer.Argument(..., help="Env id, skill:<name>, or module:function."),
    teacher: str = typer.Option("expert", help="Teacher policy spec (expert, openai:MODEL@URL, ...)."),
    student: str = typer.Option("tiny", help="'tiny' (embedded default, CPU) or a HF model id / folder (LoRA recipe)."),
    out: Path = typer.Option(Path("runs/distill"), "--out", help="Run folder; re-run the same command to resume."),
    recipe: Path | None = typer.Option(None, help="SFT recipe YAML (default: tiny-cpu.yaml or qwen3-4b-lora.yaml)."),
    set_: list[str] = typer.Option([], "--set", help="Recipe override key=value (repeatable), e.g. training.num_train_epochs=3."),
    train_tasks: int | None = typer.Option(None, "--train-tasks", min=1, help="Teacher episodes on the train split."),
    test_tasks: int = typer.Option(200, "--test-tasks", min=1, help="Held-out test tasks for the evaluation."),
    min_reward: float = typer.Option(1.0, "--min-reward", help="Keep teacher episodes scoring at least this."),
    concurrency: int = typer.Option(4, min=1),
    backend: str = typer.Option("local", help="Rollout backend: local or ray."),
    env_arg: list[str] = typer.Option([], "--env-arg", help="key=value for the env (repeatable)."),
    stages: str | None = typer.Option(None, help="Comma-separated stages to run again: rollout,export,sft,eval,report."),
    seed: int = typer.Option(0),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Teacher rollouts → filter → export → SFT → eval of teacher, untrained and trained student → report."""
    import time

    from skillgym.distill import DistillConfig, run_distill
    from skillgym.rollouts.cli import _env_args

    config = DistillConfig(
        env=env_id, env_kwargs=_env_args(env_arg), teacher=teacher, student=student, recipe=recipe, recipe_overrides=set_,
        out=out, train_tasks=train_tasks, test_tasks=test_tasks, min_reward=min_reward, concurrency=concurrency,
        backend=backend, seed=seed, stages=[s for s in (stages or "").split(",") if s] or None,
    )
    started = time.perf_counter()
    err = Console(stderr=True)
    with err.status("distilling") as status, contextlib.redirect_stdout(sys.stderr):
        # Trainers print progress to stdout; keep stdout for the result (and --json) alone.
        def log(message: str) -> None:
            status.update(message)
            err.log(message)

        report = run_distill(config, log)
    if as_json:
        print(json.dumps(report, indent=2))
        return
    table = Table("policy", "success", "95% CI", "mean reward", "turns", title=f"distill {env_id}: {report['test_tasks']} test tasks")
    for role, m in report["metrics"].items():
        table.add_row(role, f"{m['success_rate']:.3f}", f"[{m['success_ci95'][0]:.2f}, {m['success_ci95'][1]:.2f}]", f"{m['mean_reward']:.3f}", f"{m['mean_turns']:.2f}")
    console.print(table)
    ratio = report["trained_vs_teacher"]
    console.print(f"trained student / teacher success: [bold]{ratio:.1%}[/bold]" if ratio is not None else "teacher solved nothing")
    console.print(" · ".join(f"{k} {v:.0f}s" for k, v in report["stage_seconds"].items()) + f" · this run {time.perf_counter() - started:.0f}s")
    console.print(f"report: {out / 'report.md'}")


def _mount_command(module: str, name: str) -> None:
    try:
        app.command(name)(getattr(importlib.import_module(module), name))
    except ImportError:  # pragma: no cover - depends on optional extras
        pass


_mount_command("skillgym.rollouts.cli", "rollout")
_mount_command("skillgym.rollouts.cli", "export")
_mount("skillgym.sandbox.cli", "sandbox", "Manage sandboxes: gc, build.")
_mount("skillgym.skills.cli", "skills", "Index, search, show and validate skills.")
_mount("skillgym.training.cli", "train", "Train students: SFT and GRPO on TRL.")
_mount("skillgym.taskgen.cli", "tasks", "Generate task files for skills with a teacher model.")


if __name__ == "__main__":  # pragma: no cover
    app()
