"""Side-by-side evaluation: several policies (and env variants) on the same held-out tasks.

Each (variant, policy) cell is an ordinary rollout run under ``OUT/runs/``, so an
evaluation is resumable and its trajectories can be inspected or exported like any other.
A *variant* is a set of env keyword arguments (for example ``instruction_mode=none``, the
skill ablation); every cell draws the same first N tasks of the split. A policy may carry a
*role* (:data:`Role`: teacher, untrained or trained student) that its cells record, so a
caller finds a cell by what it stands for, never by its label.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from skillgym.io import atomic_write_text
from skillgym.rollouts.config import EnvSelection, RolloutConfig, RunOptions
from skillgym.rollouts.engine import run_rollouts
from skillgym.rollouts.metrics import PolicyMetrics, policy_metrics
from skillgym.rollouts.store import iter_trajectories

Role = Literal["teacher", "untrained", "trained"]
"""What a policy stands for in a distillation: the teacher, the student before and after training."""


class EvalConfig(RunOptions, EnvSelection):
    """Policies (and env variants) side by side on the same first ``n_tasks`` tasks of ``split``."""

    policies: list[str] = Field(min_length=1)
    roles: dict[str, Role] = Field(
        default_factory=dict, description="Policy spec -> the role its cells record (optional)."
    )
    variants: dict[str, dict[str, Any]] = Field(default_factory=lambda: {"default": {}})
    split: str = "test"
    n_tasks: int | None = 200
    policy_tasks: dict[str, int] = Field(
        default_factory=dict, description="Fewer tasks for some policies: the first N of the same task list."
    )
    samples: int = Field(default=1, ge=1)
    success_threshold: float = Field(default=0.5, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _roles_name_policies(self) -> EvalConfig:
        unknown = sorted(set(self.roles) - set(self.policies))
        if unknown:
            raise ValueError(f"roles name policies that are not evaluated: {unknown}; policies are {self.policies}")
        return self


class EvalCell(BaseModel):
    """One (variant, policy) pair: its rollout run and its metrics."""

    variant: str
    policy: str = Field(description="The policy spec.")
    label: str = Field(description="What tables and charts show: the policy, with the variant when there are several.")
    role: Role | None = None
    run_dir: str
    metrics: PolicyMetrics
    errors: list[str] = Field(
        default_factory=list,
        description="Why episodes failed to run (a server down, a policy that cannot load), first lines, at most 5. "
        "Not empty: the cell's success is no measurement of the model (the CLI exits non-zero).",
    )

    @property
    def errored(self) -> bool:
        """Some episodes of this cell failed to run (they score 0 but say nothing of the model)."""
        return bool(self.errors)


class EvalReport(BaseModel):
    env: str
    split: str
    n_tasks: int | None
    samples: int
    cells: list[EvalCell]

    def by_role(self) -> dict[Role, EvalCell]:
        """The cells that carry a role (with one variant, one cell per role)."""
        return {cell.role: cell for cell in self.cells if cell.role is not None}


def slug(text: str) -> str:
    """A folder name for ``text`` (a policy spec, a variant)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80] or "policy"


def cell_label(policy: str, variant: str, n_variants: int) -> str:
    """The label of a cell: the policy spec, tagged with the variant when there are several."""
    return policy if n_variants == 1 else f"{policy} [{variant}]"


def run_eval(
    config: EvalConfig, on_cell: Callable[[str, Any], None] | None = None, *, force: bool = False
) -> EvalReport:
    """Run (or resume) every cell, then write ``eval.json`` and ``eval.png`` under ``out``.

    Args:
        config: What to evaluate.
        on_cell: Receives ``(label, progress)`` with each cell's rollout progress (for a progress bar).
        force: Resume into cells' run directories made with another config (e.g. more ``--tasks``:
            the stored episodes are kept and only the new tasks run); see
            :func:`skillgym.rollouts.manifest.reconcile`.

    Returns:
        The report also written to ``out/eval.json``. A cell whose episodes failed to run (a
        server down, a model that does not load) lists why in ``errors``: its success rate is
        no measurement of the policy, and callers should treat it as an error.
    """
    cells = []
    for variant, overrides in config.variants.items():
        for policy in config.policies:
            label = cell_label(policy, variant, len(config.variants))
            run_dir = config.out / "runs" / slug(f"{variant}-{policy}" if len(config.variants) > 1 else policy)
            rollout = RolloutConfig(
                env=config.env,
                env_kwargs={**config.env_kwargs, **overrides},
                policy=policy,
                split=config.split,
                n_tasks=config.policy_tasks.get(policy, config.n_tasks),
                samples=config.samples,
                concurrency=config.concurrency,
                backend=config.backend,
                out=run_dir,
                seed=config.seed,
                ray_address=config.ray_address,
            )
            callback = (lambda p, _label=label: on_cell(_label, p)) if on_cell else None
            run_rollouts(rollout, callback, force=force)
            trajectories = list(iter_trajectories(run_dir))
            metrics = policy_metrics(label, trajectories, config.success_threshold)
            errors = list(
                dict.fromkeys(
                    (t.error or "unknown error").splitlines()[0][:300] for t in trajectories if t.status == "failed"
                )
            )[:5]
            cells.append(
                EvalCell(
                    variant=variant,
                    policy=policy,
                    label=label,
                    role=config.roles.get(policy),
                    run_dir=str(run_dir),
                    metrics=metrics,
                    errors=errors,
                )
            )
    report = EvalReport(env=config.env, split=config.split, n_tasks=config.n_tasks, samples=config.samples, cells=cells)
    config.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(config.out / "eval.json", report.model_dump_json(indent=2) + "\n")
    plot_report(report, config.out / "eval.png")
    return report


def plot_report(report: EvalReport, path: Path) -> Path:
    """Success rate (with its 95% interval) and mean reward per cell, as a bar chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [c.label for c in report.cells]
    success = [c.metrics.success_rate for c in report.cells]
    low = [s - c.metrics.success_ci95[0] for s, c in zip(success, report.cells)]
    high = [c.metrics.success_ci95[1] - s for s, c in zip(success, report.cells)]
    reward = [c.metrics.mean_reward for c in report.cells]
    xs = range(len(labels))
    fig, ax = plt.subplots(figsize=(max(5, 1.8 * len(labels)), 4))
    ax.bar([x - 0.2 for x in xs], success, 0.4, yerr=[low, high], capsize=4, label="success (95% CI)")
    ax.bar([x + 0.2 for x in xs], reward, 0.4, label="mean reward")
    ax.set_xticks(list(xs), labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_title(f"{report.env} · {report.split} · {report.cells[0].metrics.tasks if report.cells else 0} tasks")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
