"""Supervised fine-tuning on TRL's ``SFTTrainer``.

    from skillgym.training import load_recipe, train_sft
    result = train_sft(load_recipe("training/tiny-cpu.yaml", ["dataset=data/ce"]))

The dataset is a folder written by ``skillgym export``: a ``DatasetDict`` with ``messages``
(OpenAI format with tool calls) and ``tools`` columns. The loss covers assistant tokens only,
through the Qwen3 training template's ``{% generation %}`` markers (TRL's
``assistant_only_loss``). The tiny student gets a tokenizer trained on this dataset and a
freshly initialized Qwen3 model; a pretrained model gets LoRA adapters through PEFT.

Output (``output_dir``): the model (full weights, or the LoRA adapter plus ``merged/`` on
request), the tokenizer with the Qwen3 inference template, ``README.md`` (model card),
``training_curve.png``, ``metrics.json``, ``recipe.yaml``; checkpoints in ``checkpoints/``.
A rerun with ``resume: true`` continues from the newest checkpoint.
"""

from __future__ import annotations

import json
import resource
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field

from skillgym.chat_template import render, student_template
from skillgym.policies.hf_batching import native_bfloat16

from .card import plot_curve, write_card
from .recipes import TINY, SFTRecipe
from .tiny import build_tiny_model
from .tokenizer import save_tokenizer, train_tokenizer

CHECKPOINTS = "checkpoints"
TOKENIZER_CACHE = "tokenizer"  # the trained tokenizer, written before training so a resume reuses it


class SFTResult(BaseModel):
    output_dir: str
    model_dir: str
    merged_dir: str | None = None
    train_examples: int
    eval_examples: int
    steps: int
    planned_steps: int = Field(
        default=0, description="Optimizer steps in the schedule (epochs or max_steps); steps == this."
    )
    epochs: float
    train_loss: float | None = None
    eval_loss: float | None = None
    wall_seconds: float
    train_tokens: int = Field(description="Tokens the model processed in training (padding excluded).")
    tokens_per_second: float
    peak_rss_mb: float
    parameters: int
    trainable_parameters: int
    vocab_size: int
    skill_hashes: list[str] = Field(default_factory=list)
    warmup: dict[str, float] | None = Field(default=None, description="What the LM warm-up on code did, if it ran.")
    resumed_from: str | None = None
    warnings: list[str] = Field(default_factory=list, description="e.g. training took longer than warn_after_minutes.")


# -- data ------------------------------------------------------------------------------------
def _load_export(path: Path) -> Any:
    """A ``skillgym export`` folder as a DatasetDict with a ``train`` split holding ``messages``."""
    from datasets import Dataset, DatasetDict, load_from_disk

    if not path.exists():
        raise FileNotFoundError(f"dataset {path} does not exist; create it with `skillgym export RUN_DIR --out {path}`")
    data = load_from_disk(str(path))
    if isinstance(data, Dataset):
        data = DatasetDict({"train": data})
    if "train" not in data:
        raise ValueError(f"dataset {path} has no 'train' split (splits: {list(data)})")
    for column in ("messages",):
        if column not in data["train"].column_names:
            raise ValueError(f"dataset {path} has no {column!r} column; it must come from `skillgym export`")
    return data


def load_sft_dataset(recipe: SFTRecipe) -> tuple[Any, Any]:
    """(train, eval) datasets from an export folder; eval is split off when the folder has none.
    ``skip_train_examples`` then ``max_train_examples`` pick a window of the seeded shuffle, so a
    continued run can take the examples after those its model was trained on. The train rows of
    ``recipe.extra_datasets`` are added after that window."""
    from datasets import concatenate_datasets

    if recipe.dataset is None:
        raise ValueError("recipe has no dataset: set `dataset:` or pass --set dataset=DIR (a `skillgym export` folder)")
    data = _load_export(Path(recipe.dataset))
    train = data["train"]
    evaluation = data.get("validation")
    if evaluation is None and recipe.val_fraction > 0 and len(train) >= 20:
        parts = train.train_test_split(test_size=recipe.val_fraction, seed=recipe.training.seed)
        train, evaluation = parts["train"], parts["test"]
    skip, budget = recipe.skip_train_examples, recipe.max_train_examples
    if skip and skip >= len(train):
        raise ValueError(f"skip_train_examples={skip} passes over all {len(train)} train examples of {recipe.dataset}")
    if skip or (budget is not None and len(train) > budget):
        end = len(train) if budget is None else min(len(train), skip + budget)
        train = train.shuffle(seed=recipe.training.seed).select(range(skip, end))
    keep = [c for c in ("messages", "tools") if c in train.column_names]
    train = train.select_columns(keep)
    extras = [_load_export(Path(path))["train"].select_columns(keep) for path in recipe.extra_datasets]
    if extras:
        train = concatenate_datasets([train, *extras]).shuffle(seed=recipe.training.seed)
    if evaluation is not None:
        evaluation = evaluation.select_columns(keep)
    return train, evaluation


def dataset_skill_hashes(dataset: str | Path) -> list[str]:
    """The content hashes of the skill texts behind a dataset folder.

    Args:
        dataset: A folder written by ``skillgym export`` (its ``stats.json`` lists them), or any
            saved ``DatasetDict`` with a ``skill_hash`` column (read when there is no stats.json).

    Returns:
        The sorted distinct hashes; empty when the folder records none.
    """
    stats = Path(dataset) / "stats.json"
    if stats.is_file():
        try:
            return list(json.loads(stats.read_text(encoding="utf-8")).get("skill_hashes") or [])
        except ValueError as exc:
            raise ValueError(
                f"{stats}: not valid JSON ({exc}); export the dataset again with `skillgym export`"
            ) from None
    from datasets import load_from_disk

    data = load_from_disk(str(dataset))
    splits = data.values() if hasattr(data, "values") else [data]
    return sorted({h for split in splits if "skill_hash" in split.column_names for h in split["skill_hash"] if h})


def conversation_text(row: dict[str, Any]) -> str:
    """A dataset row rendered with the Qwen3 training template (what the model is trained on)."""
    tools = row.get("tools")
    if isinstance(tools, str):
        tools = json.loads(tools) if tools else None
    messages = [{k: v for k, v in m.items() if v is not None} for m in row["messages"]]
    return render(messages, tools=tools, training=True)


# -- model and tokenizer -------------------------------------------------------------------------
def prepare_tokenizer(recipe: SFTRecipe, train: Any) -> Any:
    from transformers import AutoTokenizer

    cached = Path(recipe.output_dir) / TOKENIZER_CACHE
    if recipe.tokenizer.train or recipe.model == TINY:
        if recipe.resume and (cached / "tokenizer.json").is_file():
            return AutoTokenizer.from_pretrained(str(cached))
        tokenizer = train_tokenizer(
            (conversation_text(row) for row in train),
            vocab_size=recipe.tokenizer.vocab_size,
            boilerplate_min_fraction=recipe.tokenizer.boilerplate_min_fraction,
        )
        save_tokenizer(tokenizer, cached)
        return tokenizer
    tokenizer = AutoTokenizer.from_pretrained(recipe.model)
    # The Qwen3 format everywhere, in the rendering the rows are trained on (a base model's own
    # template, Qwen3's included, would render later turns differently at serving time).
    tokenizer.chat_template = student_template()
    return tokenizer


def prepare_model(recipe: SFTRecipe, tokenizer: Any) -> tuple[Any, Any]:
    """(model, peft_config or None)."""
    if recipe.model == TINY:
        return build_tiny_model(recipe.tiny, tokenizer, seed=recipe.training.seed), None
    import torch
    from transformers import AutoModelForCausalLM

    dtype = recipe.torch_dtype if recipe.torch_dtype == "auto" else getattr(torch, recipe.torch_dtype)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if recipe.attn_implementation:
        kwargs["attn_implementation"] = recipe.attn_implementation
    model = AutoModelForCausalLM.from_pretrained(recipe.model, **kwargs)
    if recipe.lora is None:
        return model, None
    from peft import LoraConfig

    lora = recipe.lora
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
    return model, config


def _sft_config(recipe: SFTRecipe, has_eval: bool) -> Any:
    from trl import SFTConfig

    t = recipe.training
    strategy = "steps" if has_eval and t.eval_steps else ("epoch" if has_eval else "no")
    return SFTConfig(
        # Always passed: TRL's SFTConfig turns checkpointing ON when the argument is absent, so every
        # recipe recomputed its activations in the backward pass (measured on SmolLM2: ~1.3x slower)
        # whatever it said. `activation_checkpointing` is transformers 5's name (the old one warns).
        activation_checkpointing=t.gradient_checkpointing,
        output_dir=str(Path(recipe.output_dir) / CHECKPOINTS),
        num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=t.warmup_ratio,  # transformers 5: a float below 1 is a ratio of the total steps
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        max_length=t.max_length,
        packing=t.packing,
        train_sampling_strategy="group_by_length" if t.group_by_length and not t.packing else "random",
        assistant_only_loss=True,
        bf16=_use_bf16(t.bf16),
        logging_steps=t.logging_steps,
        logging_first_step=True,
        eval_strategy=strategy,
        eval_steps=t.eval_steps,
        save_strategy="steps" if t.save_steps else "epoch",
        save_steps=t.save_steps or 500,
        save_total_limit=t.save_total_limit,
        seed=t.seed,
        report_to="none",
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        use_cpu=not _has_accelerator(),
    )


def _use_bf16(setting: bool | str) -> bool:
    """bf16 autocast: on a CPU with native bf16 (AVX512-BF16, AMX) it trains the tiny student
    ~3x faster than fp32; on a CPU without it, emulation would be slower, so 'auto' says no."""
    if setting != "auto":
        return bool(setting)
    import torch

    return native_bfloat16("cuda" if torch.cuda.is_available() else "cpu")


def _has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available() or (hasattr(torch.backends, "mps") and torch.backends.mps.is_available())


def latest_checkpoint(output_dir: Path) -> Path | None:
    folder = Path(output_dir) / CHECKPOINTS
    found = [p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return max(found, key=lambda p: int(p.name.split("-")[-1]), default=None)


# -- the run -------------------------------------------------------------------------------------
def train_sft(
    recipe: SFTRecipe, callbacks: list[Any] | None = None, log: Callable[[str], None] | None = None
) -> SFTResult:
    """Train, save the model, tokenizer, card and curve; return the measured numbers."""
    import torch
    from trl import SFTTrainer

    say = log or (lambda message: None)
    if recipe.training.torch_threads:
        torch.set_num_threads(recipe.training.torch_threads)
    out = Path(recipe.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    train, evaluation = load_sft_dataset(recipe)
    skill_hashes = sorted({h for path in [recipe.dataset, *recipe.extra_datasets] for h in dataset_skill_hashes(path)})
    say(f"data: {len(train)} train, {len(evaluation) if evaluation is not None else 0} validation conversations")
    tokenizer = prepare_tokenizer(recipe, train)
    model, peft_config = prepare_model(recipe, tokenizer)
    resume = latest_checkpoint(out) if recipe.resume else None
    warmup = None
    if recipe.warmup is not None and recipe.model == TINY and resume is None:
        from .warmup import lm_warmup

        say(f"warm-up: {recipe.warmup.minutes:g} min of next-token training on {recipe.warmup.corpus} code")
        warmup = lm_warmup(model, tokenizer, recipe.warmup, bf16=_use_bf16(recipe.training.bf16))
    callbacks = list(callbacks or [])
    notes: list[str] = []
    if recipe.training.warn_after_minutes:
        callbacks.append(_slow_training_warning(recipe.training.warn_after_minutes, notes, say))
    trainer_class = SFTTrainer
    if recipe.training.length_buckets:
        trainer_class = length_bucket_trainer(trainer_class, recipe.training.length_buckets)
    if recipe.training.shared_prefix:
        trainer_class = shared_prefix_trainer(trainer_class)
    trainer = trainer_class(
        model=model,
        args=_sft_config(recipe, evaluation is not None),
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    say(f"model: {sum(p.numel() for p in trainer.model.parameters()):,} parameters; training")
    train_started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    train_seconds = time.perf_counter() - train_started
    eval_loss = None
    if evaluation is not None:
        eval_loss = trainer.evaluate().get("eval_loss")

    # Counted before saving: merging a LoRA folds the adapters into the base, leaving nothing trainable.
    model_params = sum(p.numel() for p in trainer.model.parameters())
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    merged_dir = _save(trainer, tokenizer, recipe, out)
    history = trainer.state.log_history
    plot_curve(history, out / "training_curve.png", title=f"SFT {recipe.model}")
    tokens = int(trainer.state.num_input_tokens_seen or 0)
    result = SFTResult(
        output_dir=str(out),
        model_dir=str(out),
        merged_dir=str(merged_dir) if merged_dir else None,
        train_examples=len(train),
        eval_examples=len(evaluation) if evaluation is not None else 0,
        steps=trainer.state.global_step,
        planned_steps=int(trainer.state.max_steps or 0),
        epochs=round(float(trainer.state.epoch or 0), 3),
        train_loss=_last(history, "loss"),
        eval_loss=eval_loss,
        wall_seconds=round(time.perf_counter() - started, 1),
        train_tokens=tokens,
        tokens_per_second=round(tokens / train_seconds, 1) if train_seconds > 0 else 0.0,
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        parameters=model_params,
        trainable_parameters=trainable,
        vocab_size=len(tokenizer),
        skill_hashes=skill_hashes,
        resumed_from=str(resume) if resume else None,
        warmup=warmup,
        warnings=notes,
    )
    del output
    (out / "metrics.json").write_text(json.dumps(result.model_dump(), indent=2) + "\n", encoding="utf-8")
    (out / "recipe.yaml").write_text(
        yaml.safe_dump(json.loads(recipe.model_dump_json()), sort_keys=False), encoding="utf-8"
    )
    write_card(out / "README.md", recipe, result, history)
    return result


# -- shared prefix ---------------------------------------------------------------------------------
MIN_SHARED_PREFIX = 32
"""Below this many shared tokens a batch takes the ordinary path (nothing worth saving)."""


def shared_prefix_length(input_ids: Any, attention_mask: Any, labels: Any) -> int:
    """How many leading tokens every row of a batch has in common, before any loss-bearing token.

    Args:
        input_ids: ``(batch, length)`` token ids (right padding).
        attention_mask: ``(batch, length)``, 1 on real tokens.
        labels: ``(batch, length)``, -100 where no loss is taken.

    Returns:
        The prefix length; at least one real token of the shortest row is left after it.
    """
    same = (input_ids == input_ids[:1]).all(dim=0) & (attention_mask == 1).all(dim=0)
    differs = (~same).nonzero()
    length = int(differs[0]) if len(differs) else input_ids.shape[1]
    trained = (labels != -100).any(dim=0).nonzero()
    if len(trained):
        # The label at position t is predicted from position t - 1, which must lie in the suffix.
        length = min(length, int(trained[0]) - 1)
    return max(0, min(length, int(attention_mask.sum(dim=1).min()) - 1))


def shared_prefix_trainer(base: type) -> type:
    """A subclass of TRL's ``SFTTrainer`` that computes the batch's shared prefix once.

    Every codebase-explorer conversation starts with the same ~1,400-token system block (the
    skill text and six tool schemas, SmolLM2's tokenizer), and only ~300 tokens differ. The
    subclass runs that prefix for one row without gradient, repeats its key/value cache over
    the batch and runs the suffixes on top of it, so a batch of 8 costs about 8 suffixes plus
    a third of one prefix instead of 8 whole conversations. The forward pass, and therefore
    the loss, is the one the whole conversation gives; what is lost is the gradient that would
    flow into the prefix positions' activations (the prompt itself is never a training target).
    """
    import torch

    class SharedPrefixSFTTrainer(base):  # type: ignore[misc, valid-type]
        def compute_loss(
            self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
            ids, mask, labels = inputs.get("input_ids"), inputs.get("attention_mask"), inputs.get("labels")
            plain = ids is None or mask is None or labels is None or "position_ids" in inputs or ids.shape[0] < 2
            prefix = 0 if plain else shared_prefix_length(ids, mask, labels)
            if prefix < MIN_SHARED_PREFIX:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            with torch.no_grad():
                cache = model(input_ids=ids[:1, :prefix], attention_mask=mask[:1, :prefix], use_cache=True).cache
            cache.batch_repeat_interleave(ids.shape[0])
            positions = torch.arange(prefix, ids.shape[1], device=ids.device).expand(ids.shape[0], -1)
            suffix = {
                **{k: v for k, v in inputs.items() if k not in ("input_ids", "labels")},
                "input_ids": ids[:, prefix:],
                "labels": labels[:, prefix:],
                "attention_mask": mask,  # the whole row: the suffix attends to the cached prefix
                "position_ids": positions,
                "cache": cache,
            }
            return super().compute_loss(model, suffix, return_outputs, num_items_in_batch)

    return SharedPrefixSFTTrainer


def length_bucket_order(lengths: list[int], batch_size: int, buckets: int, seed: int) -> list[int]:
    """A training order: shuffled, then each run of ``buckets`` batches sorted by length.

    Args:
        lengths: Tokens per example.
        batch_size: Examples per batch.
        buckets: Batches per sorted run (1: random batches, as without bucketing).
        seed: Seeds the shuffle (a different seed per epoch gives a different order).

    Returns:
        A permutation of ``range(len(lengths))``; consecutive slices of ``batch_size`` are the batches.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    shuffled = torch.randperm(len(lengths), generator=generator).tolist()
    run = batch_size * buckets
    return [
        i
        for start in range(0, len(shuffled), run)
        for i in sorted(shuffled[start : start + run], key=lengths.__getitem__)
    ]


def length_bucket_trainer(base: type, buckets: int) -> type:
    """A subclass of TRL's ``SFTTrainer`` whose batches come from :func:`length_bucket_order`.

    On SmolLM2's codebase-explorer traces (suffixes after the shared prompt of 190 to 440
    tokens), random batches of 8 padded 40% of the suffix tokens; sorting runs of 2 batches
    cut that to 17%, of 4 batches to 12%, while each batch still holds several question types
    (TRL's ``group_by_length`` sorts runs of 50 batches: one type per batch, which made the tiny
    student's loss swing; EXPERIMENTS.md §5).
    """
    import torch

    class LengthBuckets(torch.utils.data.Sampler):
        def __init__(self, lengths: list[int], batch_size: int, seed: int) -> None:
            self.lengths, self.batch_size, self.seed, self.epoch = lengths, batch_size, seed, 0

        def __len__(self) -> int:
            return len(self.lengths)

        def __iter__(self) -> Any:
            order = length_bucket_order(self.lengths, self.batch_size, buckets, self.seed + self.epoch)
            self.epoch += 1
            return iter(order)

    class LengthBucketSFTTrainer(base):  # type: ignore[misc, valid-type]
        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            dataset = self.train_dataset if train_dataset is None else train_dataset
            if dataset is None or "input_ids" not in getattr(dataset, "column_names", ()):
                return super()._get_train_sampler(train_dataset)
            lengths = [len(ids) for ids in dataset["input_ids"]]
            return LengthBuckets(
                lengths, self.args.train_batch_size * self.args.gradient_accumulation_steps, self.args.seed
            )

    return LengthBucketSFTTrainer


def _save(trainer: Any, tokenizer: Any, recipe: SFTRecipe, out: Path) -> Path | None:
    """Final weights (or adapter) and tokenizer at ``out``; merged weights on request."""
    model = trainer.model
    model.save_pretrained(str(out))
    save_tokenizer(tokenizer, out)
    if recipe.lora is not None and recipe.lora.merge:
        merged = model.merge_and_unload()
        target = out / "merged"
        merged.save_pretrained(str(target))
        save_tokenizer(tokenizer, target)
        return target
    return None


def _slow_training_warning(minutes: float, notes: list[str], say: Callable[[str], None]) -> Any:
    """A callback that warns once when training passes ``minutes`` of wall time. It never stops
    training: where a time limit cuts the schedule depends on the machine's speed and load, and
    the same recipe must give the same model everywhere (the budget is epochs or steps)."""
    from transformers import TrainerCallback

    class SlowTrainingWarning(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.started = time.perf_counter()
            self.warned = False

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            elapsed = time.perf_counter() - self.started
            if self.warned or elapsed <= minutes * 60:
                return
            self.warned = True
            message = (
                f"training has run {elapsed / 60:.1f} min (warn_after_minutes={minutes:g}) at step "
                f"{state.global_step} of {state.max_steps}; it goes on to the end of its schedule "
                "(a slow or busy machine: expect a longer run, not a different model)"
            )
            notes.append(message)
            say(f"warning: {message}")
            warnings.warn(message, RuntimeWarning, stacklevel=2)

    return SlowTrainingWarning()


def _last(history: list[dict[str, Any]], key: str) -> float | None:
    values = [h[key] for h in history if key in h]
    return float(values[-1]) if values else None


__all__ = [
    "SFTResult",
    "conversation_text",
    "dataset_skill_hashes",
    "latest_checkpoint",
    "length_bucket_order",
    "length_bucket_trainer",
    "load_sft_dataset",
    "shared_prefix_length",
    "shared_prefix_trainer",
    "train_sft",
]
