"""GRPO on orchestrator-v0 (issue 13, item 4): a tiny orchestrator model trained with TRL on CPU
for a few steps, its rollouts calling real subagents through the TRL adapter's tools."""

from __future__ import annotations

import json

import pytest

import skillgym
from skillgym.types import Task

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def roster() -> dict:
    return {
        "subagents": [
            {
                "name": "echo",
                "description": "Echoes what it is told.",
                "env": "test_orchestrator:echo_spec",
                "policy": "expert",
                "limits": {"timeout_s": 20},
            }
        ]
    }


TASKS = [
    Task(
        id=f"t{i}",
        prompt=f"Ask echo to repeat word{i} and answer with what it says.",
        reference={"answer": f"echo: word{i}"},
    )
    for i in range(8)
]


@pytest.fixture(scope="module")
def tiny_orchestrator(tmp_path_factory) -> str:
    from skillgym.chat_template import render
    from skillgym.training import build_tiny_model, train_tokenizer
    from skillgym.training.tiny import TinyModelSpec
    from skillgym.training.tokenizer import save_tokenizer

    env = skillgym.make("orchestrator-v0", roster=roster(), tasks=TASKS, backend="local")
    try:
        texts = [
            render(t.messages, tools=t.tools, training=True)
            for t in (skillgym.run_episode(env, env.env_spec.expert(), task=task) for task in TASKS)
        ]
    finally:
        env.close()
    tokenizer = train_tokenizer(texts, vocab_size=400, boilerplate_min_fraction=0.5)
    path = tmp_path_factory.mktemp("tiny-orchestrator")
    spec = TinyModelSpec(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, intermediate_size=128
    )
    build_tiny_model(spec, tokenizer, seed=0).save_pretrained(str(path))
    save_tokenizer(tokenizer, path)
    return str(path)


def test_grpo_trains_a_tiny_orchestrator_on_cpu(tiny_orchestrator, tmp_path):
    from skillgym.training.grpo import GRPORecipe, train_grpo

    recipe = GRPORecipe(
        model=tiny_orchestrator,
        env="orchestrator-v0",
        env_kwargs={"roster": roster(), "tasks": TASKS, "backend": "local"},
        n_tasks=4,
        output_dir=tmp_path / "grpo",
        grpo={
            "max_steps": 2,
            "num_generations": 2,
            "per_device_train_batch_size": 2,
            "max_completion_length": 24,
            "max_tool_calling_iterations": 2,
            "gradient_checkpointing": False,
        },
    )
    result = train_grpo(recipe)
    assert result.steps == 2 and len(result.rewards) == 2 and all(0.0 <= r <= 1.0 for r in result.rewards)
    assert (tmp_path / "grpo" / "model.safetensors").exists()
    history = json.loads((tmp_path / "grpo" / "grpo_metrics.json").read_text())["log_history"]
    assert any("rewards/OrchestratorV0TRLEnv/mean" in entry for entry in history)
