"""Batched in-process generation (issue 18): the same tokens whatever shares the batch.

Real tiny Qwen3 models built from a config (nothing downloaded), real envs on the local
sandbox. Greedy outputs are compared token for token: one turn at a time against many
turns generated together, with and without the key/value cache carried across turns.
"""

from __future__ import annotations

import asyncio
import random
import threading

import pytest

torch = pytest.importorskip("torch")

from skillgym.episode import arun_episode, run_episode  # noqa: E402
from skillgym.policies.hf_batching import BatchedGenerator, GenerationRequest, batching_supported  # noqa: E402
from skillgym.policies.hf_policy import HFPolicy  # noqa: E402
from tests.test_chat_template import tiny_tokenizer  # noqa: E402
from tests.test_env import make_env  # noqa: E402

VOCAB = 400


def qwen3(vocab_size: int = VOCAB, seed: int = 0, **overrides):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    fields = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        rope_theta=10_000.0,
    )
    fields.update(overrides)
    torch.manual_seed(seed)
    return Qwen3ForCausalLM(Qwen3Config(**fields)).eval()


@pytest.fixture(scope="module")
def model():
    return qwen3()


def prompts(count: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(VOCAB) for _ in range(rng.randrange(3, 40))] for _ in range(count)]


def request(prompt, max_new_tokens=24, stop=frozenset(), **kwargs) -> GenerationRequest:
    return GenerationRequest(prompt=list(prompt), max_new_tokens=max_new_tokens, stop_ids=frozenset(stop), **kwargs)


def one_at_a_time(model, requests, **kwargs) -> list[list[int]]:
    generator = BatchedGenerator(model, batch_size=1, prefix_cache=False, **kwargs)
    try:
        return [generator.generate(r) for r in requests]
    finally:
        generator.close()


def a_common_token(outputs: list[list[int]]) -> int:
    """A token the model emits mid-sequence in several outputs: as a stop token it ends
    sequences at different steps."""
    counts: dict[int, int] = {}
    for output in outputs:
        for token in set(output[2:-2]):
            counts[token] = counts.get(token, 0) + 1
    return max(counts, key=counts.get)


def staggered(generator, requests) -> list[list[int]]:
    """Each request from its own thread after a random delay of up to 50 ms: turns join a
    running batch at arbitrary steps."""
    results: dict[int, list[int]] = {}

    def submit(index: int) -> None:
        threading.Event().wait(random.Random(index).random() * 0.05)
        results[index] = generator.generate(requests[index])

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [results[i] for i in range(len(requests))]


def test_batched_greedy_equals_one_at_a_time(model):
    texts = prompts(12)
    free = one_at_a_time(model, [request(p) for p in texts])
    assert len({tuple(o) for o in free}) > 6  # distinct outputs: the comparison below means something
    stop = a_common_token(free)
    # Per-sequence stop token and length: sequences leave the batch at different steps.
    requests = [request(p, max_new_tokens=6 + i % 4 * 5, stop={stop}) for i, p in enumerate(texts)]
    alone = one_at_a_time(model, requests)
    assert any(o[-1] == stop and len(o) < r.max_new_tokens for o, r in zip(alone, requests))

    generator = BatchedGenerator(model, batch_size=6, prefix_cache=False)
    try:
        together = [f.result() for f in [generator.submit(r) for r in requests]]
        assert together == alone
        assert generator.stats["steps"] < sum(len(o) for o in alone)  # turns really shared steps

        # Staggered arrivals: turns join a running batch at arbitrary steps.
        assert staggered(generator, requests) == alone
    finally:
        generator.close()
    assert generator.min_rows >= 1


def test_every_row_count_gives_the_same_tokens(model):
    """Without the row padding a one-row product rounds differently; the probe's count (or any
    larger one) gives the same tokens as a generous fixed padding."""
    requests = [request(p) for p in prompts(6, seed=1)]
    probed = one_at_a_time(model, requests)
    assert probed == one_at_a_time(model, requests, min_rows=64)


def test_small_steps_on_one_thread_give_the_same_tokens(model):
    """Steps with few real rows run on one torch thread (faster: issue 18's regression at one
    episode); the tokens are those of the same steps on every thread, alone or batched."""
    if torch.get_num_threads() < 2:
        pytest.skip("one torch thread: there is no other thread count to compare with")
    requests = [request(p, max_new_tokens=12) for p in prompts(8, seed=5)]
    every_thread = one_at_a_time(model, requests, one_thread_small_steps=False)
    # True: one thread whenever the bits allow (the default, None, also times it: not asserted).
    generator = BatchedGenerator(model, batch_size=1, prefix_cache=False, one_thread_small_steps=True)
    try:
        assert [generator.generate(r) for r in requests] == every_thread
        assert generator.one_thread_small_steps and generator.stats["one_thread_steps"] > 0
    finally:
        generator.close()
    batched = BatchedGenerator(model, batch_size=8, prefix_cache=False)
    try:
        assert [f.result() for f in [batched.submit(r) for r in requests]] == every_thread
    finally:
        batched.close()


def packed_logits(generator, texts):
    """The generator's packed forward over whole prompts: each prompt's last-row logits."""
    from concurrent.futures import Future

    sequences = [generator._admit(request(p), Future(), []) for p in texts]
    ids, positions, spans = [], [], []
    for p in texts:
        spans.append((len(ids), len(ids) + len(p)))
        ids += p
        positions += range(len(p))
    with torch.inference_mode():
        return generator._forward(
            torch.tensor(ids), torch.tensor(positions), sequences, spans, [e - 1 for _, e in spans]
        )


def test_logits_match_the_model_forward(model):
    """The packed forward is the model's own computation (to float rounding)."""
    generator = BatchedGenerator(model, batch_size=4, prefix_cache=False, min_rows=16)
    texts = prompts(3, seed=2)
    logits = packed_logits(generator, texts)
    with torch.inference_mode():
        for row, p in zip(logits, texts):
            expected = model(torch.tensor([p])).logits[0, -1]
            assert torch.allclose(row, expected, atol=1e-5, rtol=1e-4)
    generator.close()


def test_bfloat16_products_batch_invariant_and_close_to_the_model(model):
    """matmul_dtype="bfloat16": the products read bfloat16 copies of the weights; the logits stay
    close to the float32 model's, and greedy tokens are still the same alone or batched."""
    generator = BatchedGenerator(model, batch_size=4, prefix_cache=False, min_rows=16, matmul_dtype="bfloat16")
    texts = prompts(3, seed=2)
    logits = packed_logits(generator, texts)
    with torch.inference_mode():
        expected = torch.stack([model(torch.tensor([p])).logits[0, -1] for p in texts])
    assert logits.dtype == torch.float32
    assert not torch.equal(logits, expected)  # the bfloat16 products really ran
    assert torch.allclose(logits, expected, atol=0.05, rtol=0.05)
    generator.close()

    requests = [request(p, max_new_tokens=12) for p in prompts(8, seed=6)]
    alone = one_at_a_time(model, requests, matmul_dtype="bfloat16")
    batched = BatchedGenerator(model, batch_size=8, prefix_cache=False, matmul_dtype="bfloat16")
    try:
        assert [f.result() for f in [batched.submit(r) for r in requests]] == alone
    finally:
        batched.close()
    with pytest.raises(ValueError, match="matmul_dtype"):
        BatchedGenerator(model, matmul_dtype="float16")


def test_carried_cache_gives_the_same_tokens(model):
    """A conversation continued turn after turn: with the previous turn's keys/values reused,
    and the shared start of other conversations copied, the tokens are those of a fresh prefill."""
    rng = random.Random(3)
    conversations = [list(p) for p in prompts(5, seed=3)]
    system = [rng.randrange(VOCAB) for _ in range(40)]
    conversations = [system + c for c in conversations]  # a shared system prompt
    cached = BatchedGenerator(model, batch_size=4, prefix_cache=True, chunk_tokens=16)
    fresh = BatchedGenerator(model, batch_size=4, prefix_cache=False, chunk_tokens=16)
    try:
        for _turn in range(3):
            requests = [request(c, max_new_tokens=10) for c in conversations]
            got = [f.result() for f in [cached.submit(r) for r in requests]]
            want = [f.result() for f in [fresh.submit(r) for r in requests]]
            assert got == want
            # The next prompt: the turn as generated (minus its last token, as a template
            # re-rendering may change it), then a "tool response".
            conversations = [c + g[:-1] + [rng.randrange(VOCAB) for _ in range(6)] for c, g in zip(conversations, got)]
        assert cached.stats["reused_tokens"] > 0.6 * cached.stats["prefill_tokens"]
        assert fresh.stats["reused_tokens"] == 0
    finally:
        cached.close()
        fresh.close()


def shared_prefix_requests(seed: int) -> list[GenerationRequest]:
    """Turns of two "envs" (two system blocks of 70 and 45 tokens: 64 and 32 shared in whole
    chunks of 16) and one turn that declares none, each with its own question."""
    rng = random.Random(seed)
    systems = [[rng.randrange(VOCAB) for _ in range(n)] for n in (70, 45)]
    turns = []
    for index, question in enumerate(prompts(10, seed=seed)):
        system = systems[index % 2]
        shared = 0 if index == 9 else len(system)
        turns.append(request(system + question, max_new_tokens=12 + index % 3 * 4, shared_prefix=shared))
    return turns


def test_shared_prefix_attention_gives_the_same_tokens_in_any_company(model):
    """Decode rows attend to a declared shared prefix in one call per prefix: the tokens are the
    same alone, batched with turns of the same prefix, of another one, or of none, and staggered."""
    requests = shared_prefix_requests(seed=7)
    alone = one_at_a_time(model, requests, chunk_tokens=16)
    generator = BatchedGenerator(model, batch_size=10, prefix_cache=True, chunk_tokens=16)
    try:
        together = [f.result() for f in [generator.submit(r) for r in requests]]
        assert together == alone
        assert generator.shared_rows_multiple is not None
        # Arriving together, each group's later turns waited a step and copied the prefix the
        # first one encoded (64 tokens for the five of the first group, 32 for the others).
        assert generator.stats["reused_tokens"] >= 4 * 64 + 3 * 32
        assert generator.stats["shared_rows"] >= sum(len(o) - 1 for o in alone[:9])
        assert staggered(generator, requests) == alone
    finally:
        generator.close()
    # Without the shared calls the arithmetic differs in the last bits only: on this model the
    # greedy tokens agree (a near-tie could break either way on another).
    assert one_at_a_time(model, requests, chunk_tokens=16, shared_prefix_attention=False) == alone


def test_shared_prefix_attention_is_softmax_over_the_whole_cache(model):
    """The two parts merged by log-sum-exp are attention over the union of their keys, and a
    row's bits do not depend on the rows that share its call."""
    from concurrent.futures import Future

    from skillgym.policies.hf_batching import _Sequence

    generator = BatchedGenerator(model, chunk_tokens=16)
    generator.shared_rows_multiple = generator._probe_shared_rows()
    assert generator.shared_rows_multiple in (4, 8, 16, 32, 64)
    kv, heads, dim = generator.num_kv_heads, generator.num_heads, generator.head_dim
    torch.manual_seed(0)
    prefix = [torch.randn(kv, 48, dim) for _ in range(2)]
    split, lengths = [], [50, 61, 90, 49, 77]
    for row, length in enumerate(lengths):
        keys = torch.cat([prefix[0], torch.randn(kv, length - 48, dim)], dim=1)
        values = torch.cat([prefix[1], torch.randn(kv, length - 48, dim)], dim=1)
        sequence = _Sequence(request([1]), Future(), [keys], [values], shared=48, shared_key=(48, b"same"))
        split.append((row, sequence, length))
    queries = torch.randn(len(lengths), heads, dim)
    with torch.inference_mode():
        got = generator._shared_prefix_attention(queries, split, 0, dim**-0.5)
        for row, (_, sequence, length) in enumerate(split):
            want = torch.nn.functional.scaled_dot_product_attention(
                queries[row].view(1, heads, 1, dim),
                sequence.keys[0][None, :, :length],
                sequence.values[0][None, :, :length],
                enable_gqa=True,
            )
            assert torch.allclose(got[row], want.view(heads, dim), atol=1e-6)
            # Bit for bit the same alone as in company (the padding of the shared call).
            alone = generator._shared_prefix_attention(queries[row : row + 1], [(0, sequence, length)], 0, dim**-0.5)
            assert torch.equal(alone[0], got[row])
    generator.close()


def test_sampling_is_reproducible_per_turn_seed(model):
    requests = [request(p, temperature=1.0, top_p=0.9, seed=100 + i) for i, p in enumerate(prompts(6, seed=4))]
    alone = one_at_a_time(model, requests)
    generator = BatchedGenerator(model, batch_size=6)
    try:
        together = [f.result() for f in [generator.submit(r) for r in requests]]
        other_seeds = generator.generate(request(requests[0].prompt, temperature=1.0, seed=7))
    finally:
        generator.close()
    assert together == alone
    assert other_seeds != alone[0]


def test_failures_reach_the_caller_and_the_generator_goes_on(model):
    generator = BatchedGenerator(model, batch_size=2)
    try:
        with pytest.raises(ValueError, match="empty prompt"):
            generator.submit(request([]))
        with pytest.raises(ValueError, match="max_new_tokens"):
            generator.submit(request([1, 2], max_new_tokens=0))
        too_long = request([1] * 10, max_new_tokens=5)
        too_long.prompt = [VOCAB + 5] * 10  # out of the embedding's range: the step raises
        with pytest.raises(IndexError):
            generator.generate(too_long)
        assert len(generator.generate(request([1, 2, 3], max_new_tokens=3))) == 3
    finally:
        generator.close()
    with pytest.raises(RuntimeError, match="closed"):
        generator.submit(request([1, 2, 3]))


def test_unsupported_models_fall_back_to_generate():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=1, n_head=2, n_positions=256))
    assert "gpt2" in batching_supported(gpt2)
    assert batching_supported(qwen3()) is None
    tokenizer = tiny_tokenizer()
    policy = HFPolicy(qwen3(vocab_size=len(tokenizer)), tokenizer, generate_kwargs={"num_beams": 1})
    assert not policy.batched and "generate_kwargs" in policy.unbatched_reason
    assert HFPolicy(qwen3(vocab_size=len(tokenizer)), tokenizer).batched
    with pytest.raises(ValueError, match="matmul_dtype.*generate_kwargs"):
        HFPolicy(qwen3(vocab_size=len(tokenizer)), tokenizer, generate_kwargs={"num_beams": 1}, matmul_dtype="bfloat16")
    # "auto" asks for bfloat16 only where it pays, so the unbatched path simply keeps float32.
    auto = HFPolicy(qwen3(vocab_size=len(tokenizer)), tokenizer, generate_kwargs={"num_beams": 1}, matmul_dtype="auto")
    assert auto.matmul_dtype is None


def test_the_policy_declares_its_system_block_as_the_shared_prefix():
    tokenizer = tiny_tokenizer()
    policy = HFPolicy(qwen3(vocab_size=len(tokenizer)), tokenizer)
    chat = [{"role": "system", "content": "You explore code."}, {"role": "user", "content": "Where is f?"}]
    prompt = policy.prompt_ids(chat, {})
    shared = policy._generation_request(prompt, None).shared_prefix
    assert 0 < shared < len(prompt)
    assert tokenizer.decode(prompt[:shared]).endswith("You explore code.<|im_end|>")
    assert policy.shared_prefix([100, 101, 102]) == 0  # no end of message: nothing declared


def test_auto_matmul_dtype_is_bfloat16_only_where_the_hardware_has_it(monkeypatch):
    import torch

    from skillgym.policies import hf_batching

    for native, expected in ((True, "bfloat16"), (False, None)):
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda native=native: native)
        assert hf_batching.native_bfloat16("cpu") is native
        assert hf_batching.resolve_matmul_dtype("auto", "cpu") == expected
        assert hf_batching.resolve_matmul_dtype("bfloat16", "cpu") == "bfloat16"  # asked for: always
        tokenizer = tiny_tokenizer()
        policy = HFPolicy(qwen3(vocab_size=len(tokenizer)), tokenizer, matmul_dtype="auto")
        assert policy.matmul_dtype == expected
    assert hf_batching.resolve_matmul_dtype(None) is None
    with pytest.raises(ValueError, match="matmul_dtype"):
        hf_batching.resolve_matmul_dtype("float16")


# -- episodes through the policy ---------------------------------------------------------------


@pytest.fixture(scope="module")
def student():
    tokenizer = tiny_tokenizer()
    return qwen3(vocab_size=len(tokenizer), seed=1), tokenizer


class CallingPolicy(HFPolicy):
    """Wraps every turn in ``<tool_call>`` markup: a random model's text then reaches the env
    as a malformed call, which the env answers, so episodes run for several turns."""

    def _action(self, prompt, completion):
        action = super()._action(prompt, completion)
        action["content"] = "<tool_call>" + action["content"] + "</tool_call>"
        return action


def _token_ids(trajectories) -> list[list[list[int]]]:
    return [t.token_ids for t in trajectories]


def test_concurrent_episodes_equal_sequential_ones(student):
    """Episodes awaited together on one loop (turns batched) give the trajectories of the same
    episodes run one after another through the sync ``act``, token for token."""
    model, tokenizer = student
    task_ids = [f"t{i}" for i in range(5)]
    envs = [make_env("local", tools=["read_file", "list_dir", "submit"], max_identical_turns=None) for _ in task_ids]
    try:
        alone = CallingPolicy(model, tokenizer, max_new_tokens=8, batch_size=1)
        sequential = [run_episode(envs[0], alone, task_id=t, seed=5, max_steps=4) for t in task_ids]
        together = CallingPolicy(model, tokenizer, max_new_tokens=8, batch_size=8)

        async def all_at_once():
            return await asyncio.gather(
                *(arun_episode(e, together, task_id=t, seed=5, max_steps=4) for e, t in zip(envs, task_ids))
            )

        concurrent = asyncio.run(all_at_once())
        assert _token_ids(concurrent) == _token_ids(sequential)
        assert [t.messages for t in concurrent] == [t.messages for t in sequential]
        assert all(len(t.token_ids) == 4 for t in sequential)  # multi-turn: the cache is carried
        assert together.generator().stats["reused_tokens"] > 0
        alone.close()
        together.close()
    finally:
        for env in envs:
            env.close()


def test_seeded_sampling_does_not_depend_on_concurrency(student):
    model, tokenizer = student
    task_ids = ["t1", "t2", "t3"]
    envs = [make_env("local", tools=["read_file", "submit"]) for _ in task_ids]
    try:
        options = dict(max_new_tokens=10, temperature=1.0, seed=11)
        sequential = [
            run_episode(envs[0], HFPolicy(model, tokenizer, batch_size=1, **options), task_id=t) for t in task_ids
        ]
        shared = HFPolicy(model, tokenizer, batch_size=4, **options)

        async def all_at_once():
            return await asyncio.gather(*(arun_episode(e, shared, task_id=t) for e, t in zip(envs, task_ids)))

        assert _token_ids(asyncio.run(all_at_once())) == _token_ids(sequential)
        reseeded = run_episode(envs[0], HFPolicy(model, tokenizer, **{**options, "seed": 12}), task_id="t1")
        assert reseeded.token_ids != sequential[0].token_ids
        # Two samples of one task draw different tokens (the policy numbers the task's episodes).
        again = [run_episode(envs[0], shared, task_id="t1") for _ in range(2)]
        assert again[0].token_ids != again[1].token_ids
        shared.close()
    finally:
        for env in envs:
            env.close()
