"""One way to build an env: ``skillgym.make`` / ``make_spec`` take every id form, and reading a
spec starts no sandbox (counted on the real Docker engine)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import skillgym
from skillgym import EnvSpec, SkillEnv
from skillgym.types import Task

sys.path.insert(0, str(Path(__file__).resolve().parent))  # test_rollouts_support is a sibling module

SKILL_TEXT = "---\nname: greeter\ndescription: Greets people by name.\n---\nSay hello to the person, then submit.\n"


@pytest.fixture
def library(tmp_path: Path) -> Path:
    folder = tmp_path / "library" / "greeter"
    folder.mkdir(parents=True)
    (folder / "SKILL.md").write_text(SKILL_TEXT)
    return tmp_path / "library"


def greeter_tasks() -> list[Task]:
    return [Task(id="a", prompt="greet bob", reference={"answer": "hello bob"})]


def number_spec(backend: str = "local") -> EnvSpec:
    """A ``module:function`` spec factory (the env of tests/test_env.py)."""
    from test_env import make_env

    return make_env(backend).env_spec


def test_make_accepts_every_id_form(library: Path):
    envs = {
        "registered": skillgym.make("codebase-explorer-v0", backend="local", split="test"),
        "skill": skillgym.make("skill:greeter", library_paths=[library], tasks=greeter_tasks(), backend="local"),
        "env factory": skillgym.make("test_rollouts_support:make_number_env", split="test"),
        "spec factory": skillgym.make("test_make:number_spec", split="test"),
    }
    try:
        assert all(isinstance(env, SkillEnv) for env in envs.values())
        assert envs["registered"].env_spec.id == "codebase-explorer-v0" and envs["registered"].split == "test"
        assert envs["skill"].env_spec.id == "greeter-v0" and envs["skill"].env_spec.skill.name == "greeter"
        assert envs["env factory"].env_spec.id == envs["spec factory"].env_spec.id == "number-finder-v0"
        assert envs["env factory"].split == envs["spec factory"].split == "test"
        obs, info = envs["spec factory"].reset(options={"task_id": "t4"})
        assert info["split"] == "test" and "notes/n4.txt" in obs[-1]["content"]
    finally:
        for env in envs.values():
            env.close()
    with pytest.raises(KeyError, match="known environments"):
        skillgym.make("nope-v0")
    with pytest.raises(ValueError, match="neither a registered id"):
        skillgym.make("no_such_module:factory")


def test_make_spec_matches_make_and_ignores_env_options(library: Path):
    spec = skillgym.make_spec("codebase-explorer-v0", backend="local", split="test", max_turns=7)
    env = skillgym.make("codebase-explorer-v0", backend="local", split="test", max_turns=7)
    try:
        assert spec.max_turns == env.env_spec.max_turns == 7
        assert spec.subject_dir == env.env_spec.subject_dir and spec.subject_dir and os.path.isdir(spec.subject_dir)
        assert [t.id for t in spec.tasks.tasks("test")[:5]] == [t.id for t in env.env_spec.tasks.tasks("test")[:5]]
    finally:
        env.close()
    skill = skillgym.make_spec(
        "skill:greeter",
        library_paths=[library],
        tasks=greeter_tasks(),
        backend="local",
        split="train",
        sandbox={"cpus": 1.0},
    )
    assert skill.id == "greeter-v0" and skill.sandbox.cpus == 1.0 and skill.sandbox.backend == "local"


def test_register_spec_factory_and_env_factory():
    skillgym.register("spec-made-v0", spec_entry_point=number_spec, override=True)
    skillgym.register("env-made-v0", "test_rollouts_support:make_number_env", override=True)
    assert skillgym.make_spec("spec-made-v0").id == skillgym.make_spec("env-made-v0").id == "number-finder-v0"
    with pytest.raises(ValueError, match="exactly one of"):
        skillgym.register("both-v0", number_spec, spec_entry_point=number_spec)


def test_env_ref_builds_through_make():
    from skillgym.rollouts.config import EnvRef

    env = EnvRef(env="test_make:number_spec", env_kwargs={"split": "test"}).build()
    try:
        assert isinstance(env, SkillEnv) and env.split == "test" and env.env_spec.id == "number-finder-v0"
    finally:
        env.close()


def _my_containers(client) -> set[str]:
    from skillgym.sandbox.gc import LABEL_PID

    # Label-filtered to this process: other processes on the machine start sandboxes too.
    return {c.id for c in client.containers.list(all=True, filters={"label": f"{LABEL_PID}={os.getpid()}"})}


def test_reading_a_spec_starts_no_container(docker_base_image, library: Path):
    import docker

    client = docker.from_env(timeout=30)
    before = _my_containers(client)
    specs = [
        skillgym.make_spec("codebase-explorer-v0", backend="docker"),
        skillgym.make_spec("skill:greeter", library_paths=[library], tasks=greeter_tasks(), backend="docker"),
    ]
    assert all(spec.sandbox.backend == "docker" for spec in specs)
    assert _my_containers(client) == before, "make_spec started a container"
    # The count is live: one reset of the same env starts exactly one container of ours.
    env = skillgym.make("skill:greeter", library_paths=[library], tasks=greeter_tasks(), backend="docker")
    try:
        assert _my_containers(client) == before, "make alone started a container (it must wait for reset)"
        env.reset(options={"task_id": "a"})
        assert len(_my_containers(client) - before) == 1
    finally:
        env.close()
    assert _my_containers(client) == before


def test_gymnasium_spec_and_skillgym_env_spec():
    import gymnasium

    direct = skillgym.make("test_make:number_spec")
    through_gym = gymnasium.make("skillgym/codebase-explorer-v0", backend="local")
    try:
        assert (
            direct.spec is None and direct.env_spec.id == "number-finder-v0"
        )  # Gymnasium's is set only by gymnasium.make
        assert through_gym.spec.id == "skillgym/codebase-explorer-v0"
        assert (
            through_gym.unwrapped.env_spec.id == "codebase-explorer-v0" and through_gym.unwrapped.env_spec.subject_dir
        )
    finally:
        direct.close()
        through_gym.close()
