"""skillgym.training: tokenizer, recipes, assistant-only masks, a real (tiny) TRL SFT run, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from skillgym.chat_template import CONTROL_TOKENS, MARKUP_TOKENS, qwen3_template, render, student_template
from skillgym.training import RecipeError, load_recipe, train_sft, train_tokenizer
from skillgym.training.recipes import bundled_recipe_path
from skillgym.training.sft import conversation_text, latest_checkpoint

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "bash",
            "description": "Run a command.",
            "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]},
        },
    }
]
SYSTEM = "You answer questions about code.\nUse the tools, then submit the answer alone."


def _conversation(i: int) -> list[dict]:
    name = f"func_{i}_value"
    call = {
        "id": f"c{i}",
        "type": "function",
        "function": {"name": "bash", "arguments": json.dumps({"command": f"grep -rl 'def {name}' ."})},
    }
    answer = {
        "id": f"d{i}",
        "type": "function",
        "function": {"name": "submit", "arguments": json.dumps({"answer": f"pkg/mod_{i}.py"})},
    }
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"In which file is `{name}` defined?"},
        {"role": "assistant", "content": "Search for it.", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": f"c{i}", "name": "bash", "content": f"pkg/mod_{i}.py\n[exit code 0]"},
        {"role": "assistant", "content": "Found it.", "tool_calls": [answer]},
    ]


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    from datasets import Dataset, DatasetDict

    rows = [{"messages": _conversation(i), "tools": json.dumps(TOOLS), "skill_hash": "sha256:test"} for i in range(40)]
    path = tmp_path_factory.mktemp("data") / "sft"
    DatasetDict({"train": Dataset.from_list(rows[:36]), "validation": Dataset.from_list(rows[36:])}).save_to_disk(
        str(path)
    )
    return path


@pytest.fixture(scope="module")
def tokenizer():
    texts = [render(_conversation(i), tools=TOOLS, training=True) for i in range(40)]
    return train_tokenizer(texts, vocab_size=400, boilerplate_min_fraction=0.5)


# -- tokenizer ------------------------------------------------------------------------------------
def test_templates_become_tokens_and_copied_words_stay_bpe(tokenizer):
    """The fixed wording of prompts and commands shrinks to a few tokens; the names that
    differ per conversation keep their BPE pieces (the student copies them token by token)."""
    from skillgym.training.tokenizer import boilerplate_blocks, boilerplate_lines, template_fragments

    texts = [render(_conversation(i), tools=TOOLS, training=True) for i in range(40, 80)]
    fragments = template_fragments(texts, 0.5)
    assert "In which file is `" in fragments and "Search for it." in fragments
    assert any(f.startswith('{"name": "bash", "arguments": {"command": "grep -rl \'def ') for f in fragments)
    assert not any("func_41" in f or "mod_41" in f for f in fragments)
    blocks = boilerplate_blocks(texts, boilerplate_lines(texts, 0.5), 0.5)
    assert any(SYSTEM.splitlines()[0] in b and SYSTEM.splitlines()[1] in b for b in blocks)
    text = texts[0]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert len(ids) < len(text) / 5  # several characters a token: the templates are single tokens
    question = tokenizer("In which file is `func_40_value` defined?", add_special_tokens=False)["input_ids"]
    command = tokenizer(json.dumps({"command": "grep -rl 'def func_40_value' ."}), add_special_tokens=False)[
        "input_ids"
    ]
    name = tokenizer("func_40_value", add_special_tokens=False)["input_ids"]
    as_text = lambda ids: [tokenizer.decode([i]) for i in ids]  # noqa: E731
    for seq in (question, command):
        joined = as_text(seq)
        start = next(i for i in range(len(joined)) if joined[i : i + len(name)] == as_text(name))
        assert seq[start : start + len(name)] == name


def test_format_tokens_are_single_tokens_and_markup_survives_skipping_specials(tokenizer):
    for token in CONTROL_TOKENS + MARKUP_TOKENS:
        ids = tokenizer(token, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, token
    # Mirror Qwen3: control tokens are special, tool-call markup is not.
    special = set(tokenizer.all_special_tokens)
    assert set(CONTROL_TOKENS) <= special and not (set(MARKUP_TOKENS) & special)
    text = '<tool_call>\n{"name": "bash", "arguments": {"command": "ls"}}\n</tool_call><|im_end|>'
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode(ids, skip_special_tokens=True) == text.replace("<|im_end|>", "")


def test_tokenizer_round_trips_conversations_and_copies_identifiers_consistently(tokenizer):
    text = render(_conversation(7), tools=TOOLS, training=True)
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    # The symbol is the same token sequence in the question and inside the command.
    piece = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    name = piece("func_99_value")
    assert _contains(piece("`func_99_value`"), name) and _contains(piece("'def func_99_value'"), name)
    # Boilerplate lines (here the system prompt) are single tokens.
    assert len(piece(SYSTEM.split("\n")[0] + "\n")) == 1
    assert tokenizer.chat_template == student_template()


def test_every_served_prompt_is_a_prefix_of_the_training_text(tokenizer):
    # A student must be served the text it was trained on: the prompt of each assistant turn
    # (what the policy renders with the saved template) starts the training rendering. Qwen3's
    # inference template fails this from the second turn (it drops the earlier turn's think block).
    messages = _conversation(5)
    trained = render(messages, tools=TOOLS, training=True)
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    assert len(turns) == 2
    for turn in turns:
        prompt = tokenizer.apply_chat_template(messages[:turn], tools=TOOLS, add_generation_prompt=True, tokenize=False)
        assert trained.startswith(prompt), f"turn {turn}"
    inference = render(messages[: turns[1]], tools=TOOLS, add_generation_prompt=True)
    assert not trained.startswith(inference), "the check must be able to fail"


def _contains(seq: list[int], sub: list[int]) -> bool:
    return any(seq[i : i + len(sub)] == sub for i in range(len(seq) - len(sub) + 1))


def test_assistant_mask_covers_exactly_the_assistant_turns(tokenizer):
    messages = _conversation(3)
    out = tokenizer.apply_chat_template(
        messages,
        tools=TOOLS,
        chat_template=qwen3_template(training=True),
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    ids, mask = out["input_ids"], out["assistant_masks"]
    masked = tokenizer.decode([t for t, m in zip(ids, mask) if m])
    unmasked = tokenizer.decode([t for t, m in zip(ids, mask) if not m])
    for turn in (m for m in messages if m["role"] == "assistant"):
        assert turn["content"] in masked and turn["tool_calls"][0]["function"]["arguments"] in masked
    assert masked.count("<|im_end|>") == 2  # the model learns to end each of its turns
    for other in (SYSTEM.split("\n")[0], "In which file", "[exit code 0]", "<tool_response>"):
        assert other in unmasked and other not in masked


# -- recipes --------------------------------------------------------------------------------------
def test_recipe_errors_name_the_field_and_the_fix(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: tiny\ntraining:\n  learning_rat: 0.1\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(bad)
    message = str(err.value)
    assert str(bad) in message and "training.learning_rat" in message and "did you mean 'learning_rate'" in message
    with pytest.raises(RecipeError, match=r"training\.per_device_train_batch_size: .*greater than or equal to 1"):
        load_recipe(bundled_recipe_path("tiny-cpu"), ["training.per_device_train_batch_size=0"])
    with pytest.raises(RecipeError, match="expected KEY=VALUE"):
        load_recipe(bundled_recipe_path("tiny-cpu"), ["nonsense"])
    with pytest.raises(RecipeError, match="lora is for pretrained models"):
        load_recipe(bundled_recipe_path("tiny-cpu"), ["lora.r=8"])
    with pytest.raises(RecipeError, match="shared_prefix and gradient_checkpointing cannot both be on"):
        load_recipe(
            bundled_recipe_path("smollm2-135m-lora"), ["training.gradient_checkpointing=true"], resolve_models=False
        )


def test_bundled_recipes_validate():
    tiny = load_recipe(bundled_recipe_path("tiny-cpu"))
    assert tiny.model == "tiny" and tiny.tokenizer.train and tiny.lora is None
    big = load_recipe(bundled_recipe_path("qwen3-4b-lora"))
    assert big.model == "Qwen/Qwen3-4B" and big.lora.target_modules == "all-linear" and big.training.bf16 is True
    from skillgym.training.grpo import load_grpo_recipe

    for name in ("grpo-tiny-cpu", "grpo-smollm2-135m-cpu", "grpo-qwen3-4b-vllm"):
        assert load_grpo_recipe(bundled_recipe_path(name)).env == "codebase-explorer-v0"


# -- a real SFT run --------------------------------------------------------------------------------
def _tiny_overrides(dataset_dir: Path, out: Path, steps: int) -> list[str]:
    return [
        f"dataset={dataset_dir}",
        f"output_dir={out}",
        "tokenizer.vocab_size=400",
        "tiny.hidden_size=32",
        "tiny.num_hidden_layers=2",
        "tiny.num_attention_heads=2",
        "tiny.num_key_value_heads=2",
        "tiny.intermediate_size=64",
        "tiny.max_position_embeddings=512",
        "tiny.copy_circuit=null",  # too narrow for it
        f"training.max_steps={steps}",
        "training.per_device_train_batch_size=4",
        "training.logging_steps=1",
        "training.eval_steps=1",
        "training.save_steps=2",
        "training.bf16=false",
        "training.max_length=512",
    ]


def test_sft_writes_model_tokenizer_card_curve_and_resumes(dataset_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "run"
    result = train_sft(load_recipe(bundled_recipe_path("tiny-cpu"), _tiny_overrides(dataset_dir, out, 2)))
    assert result.steps == 2 and result.eval_loss is not None and result.train_tokens > 0
    for name in (
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "README.md",
        "training_curve.png",
        "metrics.json",
    ):
        assert (out / name).is_file(), name
    card = (out / "README.md").read_text()
    assert "sha256:test" in card and "tokens / s" in card
    model = AutoModelForCausalLM.from_pretrained(str(out))
    tok = AutoTokenizer.from_pretrained(str(out))
    assert model.config.model_type == "qwen3" and tok.chat_template == student_template()
    assert latest_checkpoint(out) is not None and latest_checkpoint(out).name == "checkpoint-2"

    resumed = train_sft(load_recipe(bundled_recipe_path("tiny-cpu"), _tiny_overrides(dataset_dir, out, 3)))
    assert resumed.resumed_from and resumed.resumed_from.endswith("checkpoint-2") and resumed.steps == 3


def test_training_length_is_a_fixed_budget_and_the_time_guard_only_warns(dataset_dir, tmp_path):
    """The same recipe gives the same schedule on any machine: a run that passes its time guard
    (here after a few milliseconds, as on a slow or busy machine) still runs every planned
    optimizer step, and the cosine schedule reaches its end (learning rate ~0)."""
    overrides = [o for o in _tiny_overrides(dataset_dir, tmp_path / "run", 0) if not o.startswith("training.max_steps")]
    overrides += ["training.num_train_epochs=1", "training.save_steps=100", "training.warn_after_minutes=0.00001"]
    recipe = load_recipe(bundled_recipe_path("tiny-cpu"), overrides)
    with pytest.warns(RuntimeWarning, match="goes on to the end of its schedule"):
        result = train_sft(recipe)
    assert result.planned_steps == 9 and result.steps == 9  # 36 train rows / batch 4, one epoch
    assert len(result.warnings) == 1 and "warn_after_minutes=1e-05" in result.warnings[0]
    lrs = [
        h["learning_rate"]
        for h in json.loads((tmp_path / "run" / "checkpoints" / "checkpoint-9" / "trainer_state.json").read_text())[
            "log_history"
        ]
        if "learning_rate" in h
    ]
    assert lrs[-1] < 0.05 * max(lrs)  # the last step's rate: the cosine is at its end, not cut half-way
    # Old recipes' name for the guard still loads, and now means the same warning (never a stop).
    legacy = load_recipe(None, ["model=tiny", "training.max_train_minutes=5"])
    assert legacy.training.warn_after_minutes == 5
    bundled = load_recipe(bundled_recipe_path("tiny-cpu")).training
    assert bundled.num_train_epochs == 3.5 and bundled.max_steps == -1 and bundled.warn_after_minutes == 11


def test_conversation_text_reads_export_rows(dataset_dir):
    from datasets import load_from_disk

    row = load_from_disk(str(dataset_dir))["train"][0]
    assert conversation_text(row).startswith("<|im_start|>system\n" + SYSTEM)


def test_extra_datasets_add_every_train_row_after_the_budget(dataset_dir, tmp_path):
    """An orchestrator's calls (another export folder) join the SFT data in full, on top of
    max_train_examples; a folder that does not exist is named in the error."""
    from datasets import Dataset, DatasetDict

    from skillgym.training.recipes import SFTRecipe
    from skillgym.training.sft import load_sft_dataset

    rows = [
        {"messages": _conversation(100 + i), "tools": json.dumps(TOOLS), "skill_hash": "sha256:calls"} for i in range(5)
    ]
    calls = tmp_path / "calls"
    DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(str(calls))
    recipe = SFTRecipe(model="tiny", dataset=dataset_dir, extra_datasets=[calls], max_train_examples=10)
    train, evaluation = load_sft_dataset(recipe)
    users = [row["messages"][1]["content"] for row in train]
    assert len(train) == 15 and len(evaluation) == 4
    added = {f"func_{100 + i}_value" for i in range(5)}
    assert sum(u.split("`")[1] in added for u in users) == 5
    missing = SFTRecipe(model="tiny", dataset=dataset_dir, extra_datasets=[tmp_path / "nope"])
    with pytest.raises(FileNotFoundError, match="nope does not exist"):
        load_sft_dataset(missing)


def test_skipped_train_examples_continue_the_seeded_order(dataset_dir):
    """A run that skips the first N examples takes the ones right after them in the same shuffle
    (how a student is trained on further examples); skipping them all is an error."""
    from skillgym.training.recipes import SFTRecipe
    from skillgym.training.sft import load_sft_dataset

    def users(**window):
        train, _ = load_sft_dataset(SFTRecipe(model="tiny", dataset=dataset_dir, **window))
        return [row["messages"][1]["content"] for row in train]

    first, after, both = (
        users(max_train_examples=10),
        users(skip_train_examples=10, max_train_examples=10),
        users(max_train_examples=20),
    )
    assert len(after) == 10 and not set(first) & set(after) and first + after == both
    everything = users()
    assert len(users(skip_train_examples=len(everything) - 3)) == 3  # no budget: the rest
    with pytest.raises(ValueError, match=f"skip_train_examples={len(everything)} passes over all"):
        users(skip_train_examples=len(everything))


def test_warmup_trains_on_code_outside_the_env_codebase(tokenizer, tmp_path):
    from skillgym.training import TinyModelSpec, build_tiny_model
    from skillgym.training.warmup import WarmupSpec, corpus_files, lm_warmup

    corpus, env_code = tmp_path / "corpus", tmp_path / "env"
    corpus.mkdir()
    env_code.mkdir()
    for i in range(6):
        (corpus / f"m{i}.py").write_text(
            f"def helper_{i}(value):\n    return helper_{i}(value - 1) if value else {i}\n" * 20
        )
    (env_code / "same.py").write_text((corpus / "m0.py").read_text())  # the env's own code: must be left out
    spec = WarmupSpec(corpus=str(corpus), exclude=[str(env_code)], minutes=0.05, seq_len=32, batch_size=4)
    assert sorted(p.name for p in corpus_files(spec)) == ["m1.py", "m2.py", "m3.py", "m4.py", "m5.py"]
    model = build_tiny_model(
        TinyModelSpec(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, intermediate_size=64
        ),
        tokenizer,
    )
    before = [p.detach().clone() for p in model.parameters()]
    report = lm_warmup(model, tokenizer, spec)
    assert report["steps"] >= 1 and report["files"] == 5 and report["tokens"] == report["steps"] * 4 * 32
    assert any(not (a == b).all() for a, b in zip(before, model.parameters()))
    with pytest.raises(FileNotFoundError, match="not a folder"):
        corpus_files(WarmupSpec(corpus=str(tmp_path / "missing")))
