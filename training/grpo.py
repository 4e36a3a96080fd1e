"""GRPO on TRL with a skillgym env as the environment and its grader as the reward.

The env's tools become the environment class's methods (:func:`trl_environment`), its
tasks the dataset rows (:func:`grpo_dataset`), and ``get_reward`` is the grader's score,
so the reward a policy is optimized for is exactly the one it is evaluated with.
``grpo`` in the recipe passes straight to ``trl.GRPOConfig`` (vLLM options included, for GPU
runs: ``use_vllm: true``, ``vllm_mode: colocate``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from skillgym.chat_template import qwen3_template, student_template
from skillgym.io import read_yaml_mapping, validation_message

from .environment import check_env_prompt, grpo_dataset, match_env_prompts, trl_environment
from .recipes import LoraSpec, RecipeError, parse_overrides, set_dotted

DEFAULT_GRPO = {
    "num_generations": 4,
    "per_device_train_batch_size": 4,
    "max_completion_length": 256,
    "max_tool_calling_iterations": 6,
    "learning_rate": 1e-5,
    "beta": 0.0,
    "logging_steps": 1,
    "save_strategy": "no",
    "report_to": [],
}


class GRPORecipe(BaseModel):
    """What `skillgym train grpo` reads; unknown keys are errors (a typo must not be ignored)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="An SFT output folder (e.g. runs/sft-tiny) or a Hugging Face id.")
    env: str = Field(default="codebase-explorer-v0", description="The skillgym env that gives tools, tasks and reward.")
    env_kwargs: dict[str, Any] = Field(default_factory=dict)
    split: str = "train"
    n_tasks: int | None = Field(default=None, ge=1, description="Dataset rows (tasks) to draw prompts from.")
    learnable_from: Path | None = Field(
        default=None,
        description=(
            "A `skillgym rollout --samples K` run of the starting model (sampling, temperature > 0) on "
            "this env and split: only tasks whose samples got different rewards become prompts."
        ),
    )
    output_dir: Path = Path("runs/grpo")
    lora: LoraSpec | None = None
    grpo: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for trl.GRPOConfig.")


class GRPOResult(BaseModel):
    output_dir: str
    steps: int
    prompts: int = Field(default=0, description="Tasks GRPO drew prompts from (after the learnability filter).")
    learnable: dict[str, int] | None = Field(
        default=None, description="The filter's tally: tasks sampled, always right, always wrong, mixed (kept)."
    )
    rewards: list[float] = Field(description="Mean env reward of each logged step.")
    wall_seconds: float


def load_grpo_recipe(path: str | Path | None, overrides: list[str] | None = None) -> GRPORecipe:
    data: dict[str, Any] = read_yaml_mapping(path, RecipeError, "recipe") if path else {}
    for key, value in parse_overrides(overrides or []):
        set_dotted(data, key, value)
    try:
        return GRPORecipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(f"{path or '<recipe>'}: {validation_message(exc)}") from None


def learnable_tasks(run_dir: Path) -> tuple[list[str], dict[str, int]]:
    """The learnability filter: tasks a model solves sometimes but not always.

    A GRPO group whose completions all get the same reward has zero advantage everywhere and
    teaches nothing; on a task the model always solves or never solves, that is every group.
    ``run_dir`` is a rollout run of the starting model with several samples per task.

    Returns:
        The task ids whose samples got different rewards (in the run's order), and a tally:
        ``sampled``, ``always_right``, ``always_wrong``, ``mixed``.

    Raises:
        ValueError: the run holds no task with two or more samples.
    """
    from skillgym.rollouts.store import iter_trajectories

    rewards: dict[str, list[float]] = {}
    for trajectory in iter_trajectories(Path(run_dir)):
        rewards.setdefault(trajectory.task_id, []).append(float(trajectory.reward or 0.0))
    sampled = {task: values for task, values in rewards.items() if len(values) >= 2}
    if not sampled:
        raise ValueError(
            f"{run_dir}: no task has two or more samples; make the run with `skillgym rollout ... --samples 4` "
            "and a sampling policy (hf:MODEL?temperature=1&seed=0)"
        )
    mixed = [task for task, values in sampled.items() if min(values) != max(values)]
    always_right = sum(1 for values in sampled.values() if min(values) >= 1.0)
    tally = {
        "sampled": len(sampled),
        "always_right": always_right,
        "always_wrong": len(sampled) - len(mixed) - always_right,
        "mixed": len(mixed),
    }
    return mixed, tally


def with_tool_call_parser(tokenizer: Any) -> Any:
    """``tokenizer`` with the parser TRL reads tool calls with, when it carries the student template.

    TRL picks that parser by recognising the tokenizer's chat template, and it knows Qwen3's
    inference template, not the training one a student is saved with
    (:func:`~skillgym.chat_template.student_template`); both write the same markup, so the
    parser is the one TRL gives the inference template.
    """
    from trl.chat_template_utils import add_response_schema

    known = any(getattr(tokenizer, name, None) is not None for name in ("response_template", "response_schema"))
    if known or tokenizer.chat_template != student_template():
        return tokenizer
    tokenizer.chat_template = qwen3_template(training=False)
    try:
        add_response_schema(tokenizer)
    finally:
        tokenizer.chat_template = student_template()
    return tokenizer


def train_grpo(recipe: GRPORecipe, log: Callable[[str], None] | None = None) -> GRPOResult:
    """Run GRPO and save the policy (and tokenizer) to ``recipe.output_dir``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    say = log or (lambda message: None)
    started = time.perf_counter()
    out = Path(recipe.output_dir)
    tokenizer = with_tool_call_parser(AutoTokenizer.from_pretrained(recipe.model))
    tokenizer.padding_side = "left"  # GRPO generates from left-padded prompt batches
    model = AutoModelForCausalLM.from_pretrained(recipe.model)
    peft_config = None
    if recipe.lora is not None:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=recipe.lora.r,
            lora_alpha=recipe.lora.alpha,
            lora_dropout=recipe.lora.dropout,
            target_modules=recipe.lora.target_modules,
            task_type="CAUSAL_LM",
        )
    env_kwargs = {"split": recipe.split, **recipe.env_kwargs}
    task_ids, tally = None, None
    if recipe.learnable_from is not None:
        task_ids, tally = learnable_tasks(recipe.learnable_from)
        say(f"learnability filter: {tally['mixed']} of {tally['sampled']} sampled tasks have mixed rewards ({tally})")
        if not task_ids:
            raise ValueError(
                f"{recipe.learnable_from}: no task is sometimes right and sometimes wrong ({tally}); "
                "GRPO would get no signal: sample more tasks, more samples per task, or at a higher temperature"
            )
    dataset = grpo_dataset(recipe.env, n=recipe.n_tasks, task_ids=task_ids, **env_kwargs)
    environment = trl_environment(recipe.env, **env_kwargs)
    import torch

    # TRL defaults to bf16 on an accelerator; a CPU-only machine must say so explicitly.
    device_defaults = {} if torch.cuda.is_available() else {"bf16": False, "use_cpu": True}
    args = GRPOConfig(output_dir=str(out), **{**DEFAULT_GRPO, **device_defaults, **recipe.grpo})
    say(f"GRPO on {recipe.env}: {len(dataset)} prompts, {args.num_generations} generations each")
    trainer = GRPOTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        environment_factory=environment,
        peft_config=peft_config,
    )
    match_env_prompts(trainer, environment)
    check_env_prompt(tokenizer, dataset[0], environment)
    trainer.train()
    trainer.save_model(str(out))
    tokenizer.padding_side = "right"
    tokenizer.save_pretrained(str(out))
    rewards = [float(entry["reward"]) for entry in trainer.state.log_history if "reward" in entry]
    result = GRPOResult(
        output_dir=str(out),
        steps=trainer.state.global_step,
        prompts=len(dataset),
        learnable=tally,
        rewards=rewards,
        wall_seconds=round(time.perf_counter() - started, 1),
    )
    (out / "grpo_metrics.json").write_text(
        json.dumps({**result.model_dump(), "log_history": trainer.state.log_history}, indent=2, default=str)
    )
    return result
