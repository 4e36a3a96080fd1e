"""An in-process Hugging Face causal LM as a policy (CPU tests, the tiny student, evaluation).

The prompt is the tokenizer's chat template applied to the conversation with the env's tool
schemas (the project's Qwen3 template when the tokenizer has none), generation stops at
``<|im_end|>``, and the completion is decoded *with* special tokens and then cut at the
end-of-turn token: decoding with ``skip_special_tokens=True`` would delete ``<tool_call>``
markup from tokenizers that mark it special, and the env would never see the call.

One policy object serves every concurrent episode of a worker. Their turns are generated
together by :class:`~skillgym.policies.hf_batching.BatchedGenerator` (continuous batching,
a key/value cache carried across turns, outputs independent of which turns share a batch);
``batch_size=0``, ``generate_kwargs`` or an architecture it does not know fall back to one
``model.generate`` call at a time.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from skillgym.chat_template import IM_END, student_template
from skillgym.models import lora_base, resolve_model
from skillgym.policies.base import Action, Policy
from skillgym.policies.hf_batching import (
    BatchedGenerator,
    GenerationRequest,
    batching_supported,
    resolve_matmul_dtype,
)
from skillgym.types import Message

# transformers builds a model on the "meta" device through process-wide patches of torch, so
# two threads loading at once (subagents of several orchestrator episodes) break each other
# ("Cannot copy out of meta tensor"); loads take turns.
_LOADING = threading.Lock()

EPISODE_INDEX_KEY = "hf_policy_episode"  # set in info by HFPolicy.reset (see there)


class HFPolicy(Policy):
    """Generate each assistant turn of one or many concurrent episodes; greedy unless ``temperature > 0``.

    ``path_or_model`` is a local folder / hub id, a LoRA adapter folder such as a training
    checkpoint (loaded onto the base model its ``adapter_config.json`` names and merged), or an
    already-loaded model (then pass its ``tokenizer``). ``seed`` makes sampling reproducible:
    each turn samples from its own stream, derived from the seed, the episode (task id, and the env's ``seed`` when its info
    carries one) and the turn's index, so a turn's tokens do not depend on what else runs.
    ``generate_kwargs`` go to ``model.generate`` unchanged (and select the unbatched path).

    ``batch_size`` is the most turns generated together (0: one ``model.generate`` at a time,
    as before batching; the faster choice for a large model that only ever runs one episode);
    ``batch_wait_s`` how long an idle generator waits for company; ``prefix_cache`` keeps
    finished turns' keys/values, so a conversation's next turn (and another episode with the
    same system prompt) starts from them instead of re-encoding the prefix; ``matmul_dtype``
    ("bfloat16") runs the batched generator's matrix products in bfloat16 (half the bytes per
    decoded token; see :mod:`skillgym.policies.hf_batching`), "auto" only where the device
    computes bfloat16 natively (the model's dtype elsewhere, and on the unbatched path);
    ``shared_prefix_attention`` lets concurrent turns attend to their common system block in one
    call (see :meth:`shared_prefix`; on CPU a SmolLM2-135M decode step of 16 turns takes 231 ms, not 367).
    """

    def __init__(
        self,
        path_or_model: Any,
        tokenizer: Any = None,
        *,
        max_new_tokens: int = 512,
        temperature: float = 0.0,
        top_p: float = 1.0,
        device: str = "cpu",
        seed: int | None = None,
        enable_thinking: bool | None = None,
        generate_kwargs: dict[str, Any] | None = None,
        batch_size: int = 32,
        batch_wait_s: float = 0.002,
        prefix_cache: bool = True,
        matmul_dtype: str | None = None,
        shared_prefix_attention: bool = True,
    ):
        with _LOADING:  # transformers' lazy first import is not thread-safe either
            import torch
            from transformers import AutoTokenizer

            if isinstance(path_or_model, (str, Path)):
                self.model, tokenizer_source = _load_model(str(path_or_model))
                self.policy_id = f"hf:{path_or_model}"
                tokenizer = tokenizer or AutoTokenizer.from_pretrained(tokenizer_source)
            else:
                self.model = path_or_model
                self.policy_id = f"hf:{getattr(getattr(path_or_model, 'config', None), 'name_or_path', '') or 'model'}"
        if tokenizer is None:
            raise ValueError("HFPolicy got a model object but no tokenizer: pass tokenizer=")
        self.tokenizer = tokenizer
        self.model.to(device)
        self.model.eval()
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.seed = seed
        self.enable_thinking = enable_thinking
        self.generate_kwargs = dict(generate_kwargs or {})
        self.chat_template = getattr(tokenizer, "chat_template", None) or student_template()
        end_id = tokenizer.convert_tokens_to_ids(IM_END)
        if end_id is None or end_id == tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no {IM_END!r} token; it must hold the Qwen3 special tokens")
        self.end_ids = sorted({end_id, *([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])})
        self._message_end_id = end_id
        self._turn = 0
        self._torch = torch
        self._lock = threading.Lock()  # one generate at a time: the model is shared
        self.batch_size = batch_size
        self.batch_wait_s = batch_wait_s
        self.prefix_cache = prefix_cache
        self.shared_prefix_attention = shared_prefix_attention
        self.unbatched_reason = self._unbatched_reason()
        if matmul_dtype not in (None, "auto") and self.unbatched_reason is not None:
            raise ValueError(
                f"matmul_dtype={matmul_dtype!r} needs the batched generator, which this policy cannot use: "
                f"{self.unbatched_reason}"
            )
        # "auto" settles here (bfloat16 where the device has it natively); it asks for no more, so
        # on the unbatched path it simply keeps the model's dtype.
        self.matmul_dtype = None if self.unbatched_reason else resolve_matmul_dtype(matmul_dtype, device)
        self._generator: BatchedGenerator | None = None
        self._executor: ThreadPoolExecutor | None = None  # the unbatched path of submit_prompt
        self._generator_lock = threading.Lock()
        self._episodes: dict[str, int] = {}
        self._episodes_lock = threading.Lock()

    def _unbatched_reason(self) -> str | None:
        if self.batch_size < 1:
            return "batch_size=0"
        if self.generate_kwargs:
            return "generate_kwargs go to model.generate"
        return batching_supported(self.model)

    @property
    def batched(self) -> bool:
        """Whether turns go through the batched generator."""
        return self.unbatched_reason is None

    def generator(self) -> BatchedGenerator:
        """The batched generator (made on first use: its start-up probe runs the model's shapes)."""
        with self._generator_lock:
            if self._generator is None:
                self._generator = BatchedGenerator(
                    self.model,
                    batch_size=self.batch_size,
                    batch_wait_s=self.batch_wait_s,
                    prefix_cache=self.prefix_cache,
                    matmul_dtype=self.matmul_dtype,
                    shared_prefix_attention=self.shared_prefix_attention,
                )
            return self._generator

    def reset(self, observation: list[Message], info: dict[str, Any]) -> None:
        """Start an episode. For seeded sampling, number the episodes of each (task, env seed):
        the env's info carries no episode seed today, and without a number several samples of
        one task would draw the same tokens. The number goes into ``info``, which the driver
        hands back with every turn of this episode."""
        self._turn = 0
        key = self._episode_key(info)
        with self._episodes_lock:
            info[EPISODE_INDEX_KEY] = self._episodes.get(key, 0)
            self._episodes[key] = info[EPISODE_INDEX_KEY] + 1

    @staticmethod
    def _episode_key(info: dict[str, Any]) -> str:
        return f"{info.get('env_id')}|{info.get('task_id')}|{info.get('seed')}"

    def prompt_ids(self, observation: list[Message], info: dict[str, Any]) -> list[int]:
        kwargs: dict[str, Any] = {}
        if self.enable_thinking is not None:
            kwargs["enable_thinking"] = self.enable_thinking
        encoded = self.tokenizer.apply_chat_template(
            observation,
            tools=info.get("tools") or None,
            chat_template=self.chat_template,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            **kwargs,
        )
        return list(encoded["input_ids"])

    def act(self, observation: list[Message], info: dict[str, Any]) -> Action:
        if not self.batched:
            return self._act_unbatched(observation, info)
        prompt, request = self._request(observation, info)
        return self._action(prompt, self.generator().generate(request))

    async def aact(self, observation: list[Message], info: dict[str, Any]) -> Action:
        """Queue the turn with the batched generator and await it without holding a thread."""
        if not self.batched:
            return await asyncio.to_thread(self._act_unbatched, observation, info)
        prompt, request = self._request(observation, info)
        completion = await asyncio.wrap_future(self.generator().submit(request))
        return self._action(prompt, completion)

    def _request(self, observation: list[Message], info: dict[str, Any]) -> tuple[list[int], GenerationRequest]:
        prompt = self.prompt_ids(observation, info)
        seeded = self.temperature > 0 and self.seed is not None
        return prompt, self._generation_request(prompt, self._turn_seed(observation, info) if seeded else None)

    def _generation_request(self, prompt: list[int], seed: int | None) -> GenerationRequest:
        """One turn's request: greedy unless ``temperature > 0`` (then ``seed``, if any, fixes the draw)."""
        sample = self.temperature > 0
        return GenerationRequest(
            prompt=prompt,
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature if sample else 0.0,
            top_p=self.top_p,
            seed=seed if sample else None,
            stop_ids=frozenset(self.end_ids),
            shared_prefix=self.shared_prefix(prompt),
        )

    def shared_prefix(self, prompt: list[int]) -> int:
        """How many leading tokens of ``prompt`` other turns are likely to share: its first
        message (the system block, with the tool schemas), through its end-of-message token.
        The batched generator attends to it once for all the turns that share it."""
        try:
            return prompt.index(self._message_end_id) + 1
        except ValueError:
            return 0

    def _turn_seed(self, observation: list[Message], info: dict[str, Any]) -> int:
        """The sampling stream of one turn: the policy seed, the episode (env, task, env seed
        when the info has one, and the episode's number for that key, see :meth:`reset`) and
        the turn index (assistant messages so far). It does not depend on the order turns
        arrive in; with several samples of one task in flight, which sample gets which
        stream follows the order their episodes started."""
        turn = sum(1 for message in observation if message.get("role") == "assistant")
        episode = f"{self._episode_key(info)}|{info.get(EPISODE_INDEX_KEY, 0)}"
        digest = hashlib.sha256(f"{self.seed}|{episode}|{turn}".encode()).digest()
        return int.from_bytes(digest[:8], "little") & (2**63 - 1)

    def _action(self, prompt: list[int], completion: list[int]) -> Action:
        return {
            "role": "assistant",
            "content": self.decode(completion),
            "token_ids": completion,
            "usage": {"prompt_tokens": len(prompt), "completion_tokens": len(completion)},
        }

    def submit_prompt(
        self,
        prompt: list[int],
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop_ids: frozenset[int] | None = None,
    ) -> Future:
        """Generate from rendered prompt ids (what a server does with a request).

        Args:
            prompt: The prompt's token ids (see :meth:`prompt_ids`).
            max_new_tokens: Default: the policy's.
            temperature: Default: the policy's (0: greedy).
            top_p: Default: the policy's.
            seed: The sampling stream of this turn (None: the global torch RNG).
            stop_ids: Tokens that end the turn (default: the end-of-turn tokens).

        Returns:
            A future of the completion's token ids (the stop token included). Batched, it joins
            the turns of every other caller; unbatched, it runs one ``model.generate`` at a time.
        """
        request = GenerationRequest(
            prompt=list(prompt),
            max_new_tokens=max_new_tokens or self.max_new_tokens,
            temperature=self.temperature if temperature is None else temperature,
            top_p=self.top_p if top_p is None else top_p,
            seed=seed,
            stop_ids=frozenset(self.end_ids) if stop_ids is None else frozenset(stop_ids),
            shared_prefix=self.shared_prefix(prompt),
        )
        if self.batched:
            return self.generator().submit(request)
        with self._generator_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="skillgym-hf-generate")
        return self._executor.submit(self._generate_unbatched, request)

    def _act_unbatched(self, observation: list[Message], info: dict[str, Any]) -> Action:
        """One ``model.generate`` call behind the lock (the path before batching)."""
        prompt = self.prompt_ids(observation, info)
        self._turn += 1
        seed = self.seed * 100_003 + self._turn if self.seed is not None else None
        return self._action(prompt, self._generate_unbatched(self._generation_request(prompt, seed)))

    def _generate_unbatched(self, request: GenerationRequest) -> list[int]:
        torch = self._torch
        sample = request.temperature > 0
        stop = sorted(request.stop_ids) or self.end_ids
        options: dict[str, Any] = {
            "max_new_tokens": request.max_new_tokens,
            "do_sample": sample,
            "eos_token_id": stop,
            "pad_token_id": self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.end_ids[0],
        }
        if sample:
            options.update(temperature=request.temperature, top_p=request.top_p)
        else:  # silence the "temperature is set but do_sample is False" warnings of model configs
            options.update(temperature=None, top_p=None, top_k=None)
        options.update(self.generate_kwargs)
        prompt = request.prompt
        with self._lock, torch.inference_mode():
            if request.seed is not None:
                torch.manual_seed(request.seed)
            input_ids = torch.tensor([prompt], device=self.device)
            output = self.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **options)
        return output[0, len(prompt) :].tolist()

    def decode(self, token_ids: list[int]) -> str:
        """Completion text up to the end-of-turn token, keeping every markup token."""
        ids = list(token_ids)
        for index, token in enumerate(ids):
            if token in self.end_ids:
                ids = ids[:index]
                break
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def close(self) -> None:
        if self._generator is not None:
            self._generator.close()
            self._generator = None
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
        self.model = None  # type: ignore[assignment]


def _load_model(path: str) -> tuple[Any, str]:
    """The model at ``path`` and where its tokenizer is. A LoRA adapter folder (a training
    checkpoint) loads onto its base model and is merged into it, so the batched generator sees
    plain linear layers; its tokenizer is the folder's own when the trainer saved one."""
    from transformers import AutoModelForCausalLM

    base = lora_base(path)
    if base is None:
        return AutoModelForCausalLM.from_pretrained(path), path
    try:
        from peft import PeftModel
    except ImportError as error:
        raise ImportError(f"{path} is a LoRA adapter; loading it needs peft (pip install 'skillgym[train]')") from error
    base_path = resolve_model(base)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path), path).merge_and_unload()
    has_tokenizer = any((Path(path) / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json"))
    return model, path if has_tokenizer else base_path
