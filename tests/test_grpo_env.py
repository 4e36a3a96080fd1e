"""GRPO on a skillgym env: the learnability filter (only tasks a model solves sometimes become
prompts) and prompts identical to the env's."""

from __future__ import annotations

import pytest

from skillgym.rollouts.store import TrajectoryStore
from skillgym.training.environment import check_env_prompt, grpo_dataset, trl_environment
from skillgym.training.grpo import learnable_tasks
from skillgym.types import Trajectory


def sampled_run(tmp_path, rewards: dict[str, list[float | None]]):
    with TrajectoryStore(tmp_path) as store:
        for task_id, values in rewards.items():
            for index, reward in enumerate(values):
                store.append(
                    Trajectory(
                        env_id="codebase-explorer-v0",
                        env_version=0,
                        task_id=task_id,
                        policy_id="hf:student?temperature=1",
                        reward=reward,
                        sample_index=index,
                    )
                )
    return tmp_path


def test_keeps_only_tasks_with_mixed_rewards(tmp_path):
    run = sampled_run(
        tmp_path,
        {"right": [1.0, 1.0, 1.0], "wrong": [0.0, 0.0, 0.0], "mixed": [0.0, 1.0, 0.0], "failed": [None, 1.0]},
    )
    kept, tally = learnable_tasks(run)
    # a failed sample (reward None) counts as a wrong one: the model did not solve the task
    assert kept == ["mixed", "failed"]
    assert tally == {"sampled": 4, "always_right": 1, "always_wrong": 1, "mixed": 2}


def test_a_run_of_single_samples_is_refused(tmp_path):
    run = sampled_run(tmp_path, {"a": [1.0], "b": [0.0]})
    with pytest.raises(ValueError, match="--samples"):
        learnable_tasks(run)


def test_grpo_dataset_keeps_the_named_tasks_in_split_order():
    import skillgym

    spec = skillgym.make_spec("codebase-explorer-v0", backend="local")
    ids = [t.id for t in spec.tasks.tasks("train")[:6]]
    rows = grpo_dataset("codebase-explorer-v0", task_ids=[ids[4], ids[1]], backend="local")
    assert rows["task_id"] == [ids[1], ids[4]]
    with pytest.raises(ValueError, match="not in its 'train' split"):
        grpo_dataset("codebase-explorer-v0", task_ids=["no-such-task"], backend="local")


def test_grpo_prompts_are_the_envs_own():
    """The first GRPO prompt, rendered with the schemas match_env_prompts gives TRL, is token for
    token the env's; TRL's own rendering of the methods (transformers' get_json_schema: other key
    order, no defaults, tools sorted by name) is not, and the check says where they part."""
    from transformers.utils import get_json_schema

    from tests.test_chat_template import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    environment = trl_environment("codebase-explorer-v0", backend="local")
    row = grpo_dataset("codebase-explorer-v0", n=1, backend="local")[0]
    check_env_prompt(tokenizer, row, environment)

    methods = [
        get_json_schema(getattr(environment, name))
        for name in sorted(s["function"]["name"] for s in environment.tool_schemas)
    ]
    as_trl_renders = type("AsTRLRenders", (environment,), {"tool_schemas": methods})
    with pytest.raises(ValueError, match="differs from the env's at token"):
        check_env_prompt(tokenizer, row, as_trl_renders)
