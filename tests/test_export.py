"""SFT dataset export: filters, task-disjoint split, chat-template round trip, and TRL's
SFTTrainer tokenizing the result with assistant-only masks on a tiny Qwen3."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from test_rollouts_support import ENTRY

from skillgym.chat_template import (
    SPECIAL_TOKENS,
    canonical,
    parse_rendered,
    parse_rendered_tools,
    qwen3_template,
    render,
)
from skillgym.rollouts import RolloutConfig, TrajectoryStore, iter_trajectories, run_rollouts
from skillgym.rollouts.export import ExportConfig, export_dataset


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """10 tasks x 2 samples of the expert, plus records every filter should catch."""
    out = tmp_path_factory.mktemp("export") / "run"
    run_rollouts(
        RolloutConfig(env=ENTRY, env_kwargs={"backend": "local"}, n_tasks=10, samples=2, concurrency=4, out=out)
    )
    good = next(t for t in iter_trajectories(out) if t.task_id == "t1" and t.sample_index == 0)
    extra = [
        good.model_copy(update={"sample_index": 100, "reward": 0.5}),
        good.model_copy(update={"sample_index": 101, "status": "failed", "error": "boom", "reward": None}),
        good.model_copy(update={"sample_index": 102, "truncated": True, "reward": 0.0}),
        good.model_copy(update={"sample_index": 103, "messages": good.messages + good.messages[2:4] * 3}),
    ]
    with TrajectoryStore(out) as store:
        for trajectory in extra:
            store.append(trajectory)
    return out


def _chat(row: dict) -> list[dict]:
    return [{k: v for k, v in m.items() if v is not None} for m in row["messages"]]


def test_export_filters_splits_and_reports(run_dir, tmp_path):
    from datasets import load_from_disk

    out = tmp_path / "ds"
    report = export_dataset(ExportConfig(run_dir=run_dir, out=out, min_reward=1.0, max_turns=4, val_fraction=0.3))
    assert report.records == 24
    assert report.rejected == {"below_min_reward": 1, "failed": 1, "truncated": 1, "too_many_turns": 1}
    data = load_from_disk(str(out))
    assert set(data) == {"train", "validation"} and report.rows == {"train": 14, "validation": 6}
    train_tasks, val_tasks = set(data["train"]["task_id"]), set(data["validation"]["task_id"])
    assert not train_tasks & val_tasks and len(val_tasks) == 3, "a task is split across train and validation"
    row = data["train"][0]
    assert row["reward"] == 1.0 and row["env_id"] == "number-finder-v0" and row["num_turns"] == 2
    assert [t["function"]["name"] for t in json.loads(row["tools"])][:2] == ["bash", "read_file"]
    call = next(m for m in row["messages"] if m["tool_calls"])["tool_calls"][0]
    assert call["type"] == "function" and isinstance(call["function"]["arguments"], str)
    assert any(m["role"] == "tool" and m["tool_call_id"] for m in row["messages"])
    stats = json.loads((out / "stats.json").read_text())
    assert stats["kept"] == 20 and stats["rejected"]["failed"] == 1 and stats["turns"]["histogram"] == {"2": 20}
    assert stats["reward"]["histogram_all_ok_records"]["counts"] == [1, 0, 0, 0, 0, 1, 0, 0, 0, 21]
    # The skill texts behind the rows travel in stats.json (the model card reads them there).
    assert stats["skill_hashes"] == sorted({t.skill_hash for t in iter_trajectories(run_dir)})
    assert stats["skill_hashes"][0].startswith("sha256:")
    from skillgym.training.sft import dataset_skill_hashes

    assert dataset_skill_hashes(out) == stats["skill_hashes"]
    assert (out / "reward_histogram.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_dataset(ExportConfig(run_dir=run_dir, out=out))


def test_dedupe_and_used_tools(run_dir, tmp_path):
    from datasets import load_from_disk

    out = tmp_path / "ds"
    report = export_dataset(ExportConfig(run_dir=run_dir, out=out, dedupe=True, tools="used", max_turns=4))
    # The expert is deterministic: both samples of a task are the same conversation.
    assert report.rejected["near_duplicate"] == 10 and report.kept == 10
    data = load_from_disk(str(out))["train"]
    assert sorted(data["task_id"]) == sorted(set(data["task_id"]))
    assert {t["function"]["name"] for t in json.loads(data[0]["tools"])} == {"read_file", "submit"}


@pytest.mark.parametrize("training", [False, True])
def test_every_exported_conversation_round_trips_through_the_chat_template(run_dir, tmp_path, training):
    from datasets import load_from_disk

    out = tmp_path / "ds"
    export_dataset(ExportConfig(run_dir=run_dir, out=out, val_fraction=0.2))
    data = load_from_disk(str(out))
    rows = [row for split in data.values() for row in split]
    assert len(rows) == 21
    for row in rows:
        messages, tools = _chat(row), json.loads(row["tools"])
        text = render(messages, tools, training=training)
        assert canonical(parse_rendered(text)) == canonical(messages)
        assert parse_rendered_tools(text) == tools


def _tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=800,
        special_tokens=["<|endoftext|>", *SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = qwen3_template(training=True)
    return tokenizer


def test_sft_trainer_tokenizes_the_export_with_assistant_only_masks(run_dir, tmp_path):
    from datasets import load_from_disk
    from transformers import Qwen3Config, Qwen3ForCausalLM
    from trl import SFTConfig, SFTTrainer

    out = tmp_path / "ds"
    export_dataset(ExportConfig(run_dir=run_dir, out=out, val_fraction=0.2))
    data = load_from_disk(str(out))
    texts = [render(_chat(r), json.loads(r["tools"]), training=True) for r in data["train"]]
    tokenizer = _tokenizer(texts)
    for token in SPECIAL_TOKENS:
        assert len(tokenizer(token, add_special_tokens=False)["input_ids"]) == 1, token
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=8192,
        pad_token_id=tokenizer.pad_token_id,
    )
    args = SFTConfig(
        output_dir=str(tmp_path / "sft"),
        assistant_only_loss=True,
        max_length=None,
        max_steps=1,
        per_device_train_batch_size=2,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
    )
    trainer = SFTTrainer(
        model=Qwen3ForCausalLM(config),
        args=args,
        train_dataset=data["train"],
        eval_dataset=data["validation"],
        processing_class=tokenizer,
    )
    tokenized = trainer.train_dataset
    assert len(tokenized) == len(texts)
    for example, text in zip(tokenized, texts):
        # TRL turns the assistant mask into labels: -100 wherever the loss must not look.
        ids, mask = example["input_ids"], [label != -100 for label in example["labels"]]
        assert [label for label in example["labels"] if label != -100] == [i for i, m in zip(ids, mask) if m]
        assert tokenizer.decode(ids) == text
        # The mask is exactly the assistant spans the training template marks for generation:
        # from the turn's first token after "<|im_start|>assistant\n" through "<|im_end|>\n".
        expected = re.findall(r"<\|im_start\|>assistant\n(.*?<\|im_end\|>\n)", text, flags=re.DOTALL)
        runs, current = [], []
        for token, on in zip(ids, mask):
            if on:
                current.append(token)
            elif current:
                runs.append(current)
                current = []
        if current:
            runs.append(current)
        assert [tokenizer.decode(r) for r in runs] == expected
        assert len(expected) >= 2


def test_export_command(run_dir, tmp_path):
    from typer.testing import CliRunner

    from skillgym.rollouts.cli import app

    out = tmp_path / "ds"
    result = CliRunner().invoke(app, ["export", str(run_dir), "--out", str(out), "--min-reward", "0.5", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["kept"] == 22 and report["rejected"] == {"failed": 1, "truncated": 1}
    result = CliRunner().invoke(app, ["export", str(run_dir), "--out", str(out)])
    assert result.exit_code == 2 and "--overwrite" in result.output
