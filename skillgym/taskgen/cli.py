"""``skillgym tasks``: generate task files for skills with a teacher model."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

app = typer.Typer(help="Generate task files (JSONL of Task) for skills.", no_args_is_help=True)
console = Console(stderr=True)


@app.callback()
def main() -> None:
    """Generate task files (JSONL of Task) for skills."""


@app.command()
def generate(
    skill: str = typer.Argument(..., help="Skill folder, SKILL.md, agent .md, or a name in --library."),
    teacher: str = typer.Option(
        ..., "--teacher", help="Teacher model: openai:MODEL[@http://host:port/v1][?temperature=0.8]."
    ),
    n: int = typer.Option(100, "--n", min=1, help="Tasks to generate."),
    out: Path | None = typer.Option(None, "--out", help="Output JSONL (default: the skill's default task file)."),
    learnability_k: int = typer.Option(
        0,
        "--learnability-k",
        min=0,
        help="Run the teacher K times per task and keep tasks it solves sometimes (0: off).",
    ),
    learnability_threshold: float = typer.Option(0.0, help="Keep tasks with 4p(1-p) above this."),
    judge: str | None = typer.Option(
        None, "--judge", help="Rubric judge for the learnability runs (default: the teacher)."
    ),
    library: list[Path] = typer.Option(
        [], "--library", help="Skill folders to look SKILL up in (default $SKILLGYM_SKILLS_PATH)."
    ),
    cache: Path | None = typer.Option(
        None, "--cache", help="LLM cache folder (default OUT.cache): re-running resumes from it."
    ),
    breadth: int = typer.Option(6, help="Top-level topics."),
    fanout: int = typer.Option(3, help="Subtopics per topic."),
    batch_size: int = typer.Option(5, help="Tasks per teacher call."),
    negative_fraction: float = typer.Option(0.15, help="Share of batches that are negative cases."),
    seed: int = typer.Option(0, help="Seed of the generation plan."),
    backend: str = typer.Option("auto", help="Sandbox backend for --learnability-k: auto, docker, local."),
    as_json: bool = typer.Option(False, "--json", help="Print a machine-readable summary."),
) -> None:
    """Generate N tasks for SKILL with a teacher model and write them as JSONL."""
    from skillgym.compiler import default_task_file
    from skillgym.io import atomic_write_text
    from skillgym.taskgen import ChatClient, GenerationConfig, generate_tasks
    from skillgym.tasks import save_tasks_jsonl

    spec = _load_skill(skill, library)
    out = out or default_task_file(spec)
    out.parent.mkdir(parents=True, exist_ok=True)
    cache = cache or out.with_name(out.name + ".cache")
    config = GenerationConfig(
        n=n, breadth=breadth, fanout=fanout, batch_size=batch_size, negative_fraction=negative_fraction, seed=seed
    )
    with ChatClient.from_spec(teacher, cache_dir=cache) as client, _progress() as bar:
        job = bar.add_task(f"generating tasks for {spec.name}", total=n)
        result = generate_tasks(spec, client, config, progress=lambda done, total: bar.update(job, completed=done))
    tasks = result.tasks
    learn_summary = None
    if learnability_k:
        tasks, learn_summary = _filter(
            spec, tasks, teacher, judge or teacher, learnability_k, learnability_threshold, backend
        )
    save_tasks_jsonl(tasks, out)
    atomic_write_text(out.with_name(out.name + ".topics.json"), result.topics.model_dump_json(indent=2) + "\n")
    summary = {
        "skill": spec.name,
        "out": str(out),
        "tasks": len(tasks),
        "generated": len(result.tasks),
        "duplicates_removed": result.duplicates,
        "batch_calls": result.calls,
        "http_calls": result.http_calls,
        "cache_hits": result.cache_hits,
        "failed_batches": result.failed_calls,
        "cache": str(cache),
        "splits": {s: sum(t.split == s for t in tasks) for s in ("train", "validation", "test")},
        "negative": sum(bool(t.metadata.get("negative")) for t in tasks),
        "learnability": learn_summary,
    }
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    console.print(
        f"[bold green]{len(tasks)} tasks[/] -> {out}  ({result.duplicates} near duplicates removed, "
        f"{result.http_calls} HTTP calls, {result.cache_hits} from cache)"
    )
    for problem in result.failed_calls:
        console.print(f"[yellow]skipped {problem}[/]")
    if len(result.tasks) < n:
        console.print(
            f"[yellow]only {len(result.tasks)} of {n} tasks: raise --breadth/--fanout or run again with another --seed[/]"
        )


def _load_skill(skill: str, library: list[Path]):
    from skillgym.skills import SkillLibrary, load_any

    path = Path(skill)
    if path.exists():
        return load_any(path)
    import os

    paths = library or [Path(p) for p in os.environ.get("SKILLGYM_SKILLS_PATH", "").split(os.pathsep) if p]
    if not paths:
        raise typer.BadParameter(f"{skill!r} is not a path, and no --library or SKILLGYM_SKILLS_PATH to look it up in")
    return SkillLibrary(paths).get(skill)


def _filter(spec, tasks, teacher: str, judge: str, k: int, threshold: float, backend: str):
    from skillgym.compiler import from_skill
    from skillgym.policies.spec import make_policy
    from skillgym.taskgen import filter_learnable

    env = from_skill(spec, tasks=tasks, judge=judge, backend=backend)
    policy = make_policy(teacher if teacher.startswith("openai:") else f"openai:{teacher}", env)
    try:
        with _progress() as bar:
            job = bar.add_task(f"learnability (k={k})", total=len(tasks))
            kept, results = filter_learnable(
                tasks, env, policy, k=k, threshold=threshold, progress=lambda step: bar.advance(job, step)
            )
    finally:
        policy.close()
        env.close()
    return kept, {"k": k, "threshold": threshold, "kept": len(kept), "scored": len(results)}


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
