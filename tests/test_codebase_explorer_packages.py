"""codebase-explorer-v0 on codebases other than its standard-library subset: three real
pure-Python packages installed in this environment (``codebase=PATH``), the scripted expert
over 100 test tasks of each, through the rollout engine with several episodes in flight.

``click`` has a ``types.py`` at its top level. The expert's one-command scripts run inside the
repository folder; if Python put that folder on its import path, ``import ast`` would load
click's ``types.py`` instead of the standard library's and every "default" question would
fail (issue 9 measured 0/44 and 0.56 overall). The scripts run in isolated mode, so the
codebase's module names cannot matter.
"""

from __future__ import annotations

import importlib.util
from collections import defaultdict
from pathlib import Path

import pytest

from skillgym.rollouts import RolloutConfig, run_rollouts
from skillgym.rollouts.store import iter_trajectories

ENV = "codebase-explorer-v0"
N_TASKS = 100
# Each is installed by scripts/setup.sh: rich is a direct dependency, click comes with typer,
# jinja2 with torch. Each has at least 100 test tasks.
PACKAGES = ["click", "rich", "jinja2"]


def package_root(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.origin, f"{name} is not installed; run scripts/setup.sh"
    return Path(spec.origin).parent


def test_one_package_shadows_a_standard_library_module():
    """The case the test exists for stays covered: a top-level module named like a stdlib one."""
    assert (package_root("click") / "types.py").is_file()


def _expert_run(name: str, backend: str, out: Path, policy: str = "expert") -> dict[str, list[float]]:
    summary = run_rollouts(
        RolloutConfig(
            env=ENV,
            env_kwargs={"codebase": str(package_root(name)), "backend": backend},
            policy=policy,
            split="test",
            n_tasks=N_TASKS,
            concurrency=4,
            out=out,
        )
    )
    assert summary.records == N_TASKS and summary.failed_records == 0, summary.errors
    by_type: dict[str, list[float]] = defaultdict(list)
    for trajectory in iter_trajectories(out):
        by_type[trajectory.task_id.split("-")[0]].append(trajectory.reward or 0.0)
    return by_type


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


# Both the default (one command per question) and the explore style (grep, read, answer).
@pytest.mark.parametrize("policy", ["expert", "expert?style=explore"])
@pytest.mark.parametrize("name", PACKAGES)
def test_expert_solves_100_test_tasks_of_an_installed_package(name: str, policy: str, tmp_path: Path):
    by_type = _expert_run(name, "local", tmp_path / name, policy)
    rewards = [r for values in by_type.values() for r in values]
    assert len(rewards) == N_TASKS and "default" in by_type and "where" in by_type
    assert _mean(rewards) >= 0.95, {k: round(_mean(v), 3) for k, v in by_type.items()}
    assert _mean(by_type["default"]) >= 0.95  # the question type a shadowed module broke


@pytest.mark.docker
def test_expert_on_a_stdlib_shadowing_package_in_docker(tmp_path: Path):
    by_type = _expert_run("click", "docker", tmp_path / "click")
    rewards = [r for values in by_type.values() for r in values]
    assert _mean(rewards) >= 0.95 and _mean(by_type["default"]) >= 0.95, {
        k: round(_mean(v), 3) for k, v in by_type.items()
    }
