"""Distilling web-research-v0 into the tiny student: its own recipe, its generation cap, and the
report's reward components (F1, citations, ...), which its success rate alone would hide.

The full run (`skillgym distill web-research-v0 --teacher expert --student tiny`) is measured in
training/EXPERIMENTS.md; these tests check the wiring without the HotpotQA data.
"""

from __future__ import annotations

import torch

from skillgym.pipeline.distill import DistillConfig, default_recipe_name, mean_components, with_env_defaults
from skillgym.training.recipes import bundled_recipe_path, load_recipe
from skillgym.training.tiny import build_tiny_model
from skillgym.types import Trajectory


class _Vocab:
    """What build_tiny_model reads from a tokenizer."""

    def __init__(self, size: int) -> None:
        self.size, self.eos_token_id, self.pad_token_id = size, 0, 1

    def __len__(self) -> int:
        return self.size


def test_the_tiny_student_gets_the_web_research_recipe_and_others_keep_theirs():
    assert default_recipe_name("tiny", "web-research-v0") == "web-research-tiny"
    assert default_recipe_name("tiny", "codebase-explorer-v0") == "tiny-cpu"
    assert default_recipe_name("tiny") == "tiny-cpu"
    assert default_recipe_name("smollm2-135m", "web-research-v0") == "smollm2-135m-lora"
    recipe = load_recipe(bundled_recipe_path("web-research-tiny"), ["dataset=d", "output_dir=o"])
    # Sequences are ~2,000 tokens (p99 ~5,300): the model and the trainer must take them whole.
    assert recipe.training.max_length >= 4096 and recipe.tiny.max_position_embeddings >= 8192


def test_the_recipe_student_copies_across_a_page_length_gap():
    """A title or span is copied from a tool result that sits hundreds to ~2,000 tokens back:
    the built-in copy circuit must still find it there, before any training."""
    recipe = load_recipe(bundled_recipe_path("web-research-tiny"), ["dataset=d", "output_dir=o"])
    model = build_tiny_model(recipe.tiny, _Vocab(2148)).eval()
    generator = torch.Generator().manual_seed(1)
    half = 1000
    first = torch.randint(2, 2148, (2, half), generator=generator)
    tokens = torch.cat([first, first], dim=1)
    with torch.no_grad():
        predicted = model(input_ids=tokens).logits[:, half:-1].argmax(-1)
    assert (predicted == tokens[:, half + 1 :]).float().mean().item() > 0.8


def test_web_research_evaluation_gives_student_turns_room_for_the_question(tmp_path):
    config = with_env_defaults(DistillConfig(env="web-research-v0", out=tmp_path))
    assert config.max_new_tokens >= 160  # the first search copies the whole question (up to ~130 tokens)
    explicit = with_env_defaults(DistillConfig(env="web-research-v0", out=tmp_path, max_new_tokens=32))
    assert explicit.max_new_tokens == 32
    assert with_env_defaults(DistillConfig(env="codebase-explorer-v0", out=tmp_path)).max_new_tokens == 96


def test_reward_components_are_averaged_over_episodes_that_ran(tmp_path):
    def episode(task: str, status: str = "ok", **components: float) -> str:
        return Trajectory(
            env_id="web-research-v0",
            env_version=0,
            task_id=task,
            status=status,
            reward=components.get("f1"),
            reward_components=components,
            error="policy crashed" if status == "failed" else None,
        ).model_dump_json()

    folder = tmp_path / "trajectories"
    folder.mkdir()
    lines = [
        episode("a", f1=1.0, citation=1.0),
        episode("b", f1=0.5, citation=0.0),
        episode("c"),  # hit the turn limit before answering: ungraded, counts 0
        episode("d", status="failed"),  # did not run: no measurement, left out
    ]
    (folder / "shard-00000.jsonl").write_text("\n".join(lines) + "\n")
    assert mean_components(tmp_path) == {"f1": 0.5, "citation": round(1 / 3, 4)}
    assert mean_components(tmp_path / "missing") == {}
