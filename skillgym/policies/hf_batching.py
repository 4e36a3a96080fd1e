"""Batched, batch-invariant generation for the in-process ``hf:`` policy.

One worker thread owns the model. Episodes hand it their turns (:meth:`BatchedGenerator.submit`)
and wait on a future; the thread packs the tokens of every sequence in flight into one matrix
per forward pass (no padding: the rows of a step are the new prompt tokens of sequences that
just arrived and the last token of each running one), so a new turn joins at the next step
and a finished one leaves at once (continuous batching). Each sequence keeps its own key/value
cache; attention runs per sequence over that cache.

Why batch invariance takes care. On CPU a BLAS matrix product can give a row different bits
depending on how many rows the call has (MKL: calls with fewer than 4 to 12 rows, depending on
the thread count, round differently from its blocked kernel; measured up to 2e-5 on a logit),
and the CPU attention kernel gives a query row different bits depending on how many keys and
query rows the call has. A greedy token would then depend on which other episodes shared the
step, or on whether the prompt's keys came from a cache. So:

- every matrix product runs with at least :attr:`BatchedGenerator.min_rows` rows (ghost rows
  of zeros are added), a count probed at start-up on the model's own shapes, from which every
  row comes out the same whatever the other rows are;
- attention runs per sequence, and a prompt's queries attend in calls over whole chunks of
  ``chunk_tokens`` positions aligned on multiples of it (chunk *k* attends to the keys of
  positions ``< (k+1)*chunk_tokens``), the last chunk possibly partial; each decoded token in
  a one-row call over its prefix;
- only keys/values made by whole-chunk calls are kept for reuse, and reuse is in whole chunks,
  so a reused chunk holds exactly what a fresh prefill of the prompt computes;
- a decoded token whose request declares a shared prefix (below) attends to it in a call shared
  with every sequence that has the same prefix, padded to a probed multiple of rows, and to the
  rest of its own cache in a call of its own; the two parts merge by their log-sum-exp.

A turn's tokens are then a function of its prompt alone: identical for any batch composition,
arrival time, or state of the cache.

Small steps can run on one thread. A step with no more real rows than ``min_rows`` (one
episode decoding, or a few) is padded to ``min_rows`` rows. For a small model a multi-threaded
BLAS call that small costs more in thread hand-offs than it computes (at one episode the padded,
two-thread step was slower than ``model.generate``'s one-row products: 168 vs 290 tokens/s for
the tiny student on 2 cores); for a larger one, whose decoding is bound by reading its weights
and caches from memory, the second thread pays (SmolLM2-135M, 16 rows: 75 vs 108 ms for the
products of a step). So by default the start-up probe times a small step's work on one thread
and on all, and small steps take one thread only when that is faster and gives every row the
same bits as the configured count (it does for MKL's and OpenBLAS's blocked kernels, which
split the rows and columns between threads, never the sum).

Shared-prefix attention. Episodes of one env start with the same system block (a skill and its
tool schemas: ~1,400 of SmolLM2's ~1,700 tokens at a codebase-explorer decode step), and a decode
step is bound by memory traffic: attention one sequence at a time reads every sequence's copy of
that block. A request may declare ``shared_prefix`` (the ``hf:`` policy declares its first
message); its whole chunks ``[0, S)`` hold the same keys/values, bit for bit, in every sequence
whose prompt starts with the same tokens (they come from whole-chunk calls). A decode row then
attends to ``[0, S)`` in one call for all those sequences (query heads laid out as rows over
their key/value head, no copies) and to ``[S, position]`` in a call of its own; the CPU flash
kernel returns each part's log-sum-exp, and the parts merge as softmax over the union would (to
~1e-7). A row's bits must not depend on how many rows share the call: the kernel rounds a query
block of fewer than 4 rows differently, so the shared call is padded to a multiple of rows
probed at start-up (like ``min_rows``), and ``S`` depends on the request alone, so a sequence
splits at the same place alone or in company. The same declaration lets turns that arrive
together with a prefix another running turn is still encoding wait one step and copy it (an
eval's first wave encodes the system block once, not once per episode). SmolLM2-135M on 2 AVX2
cores, a decode step of 16 sequences at 1,682 keys (1,344 shared): 367 -> 231 ms; of 32: 668 ->
436 ms. CPU only (elsewhere every sequence attends alone).

Matrix products can run in bfloat16 (``matmul_dtype``; "auto" only where the hardware has
native bfloat16, since an emulated product is several times slower): a copy of every linear
layer's weights in bfloat16 is kept, the products read it, and everything else (norms, rotary embeddings,
attention over a float32 cache, the residual stream, the logits) stays in the model's dtype, as
under the bfloat16 autocast that the CPU recipes train with. Decoding reads half the bytes per
token: on a 2-core CPU with native bf16 the products of a SmolLM2-135M step take half the time
(16 rows: 37 vs 75 ms), a prefill 2.5x less. Attention stays in float32 because the CPU
attention kernel is 4x slower in bfloat16 there. Greedy tokens then follow the bfloat16
products, not the float32 ones; batch invariance holds as before (the probe runs on the
bfloat16 products). They can differ in the last bits from ``model.generate``
(one-row decode products, one attention call over the whole prompt), so a near-tie between
two tokens can rarely break the other way.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import sys
import threading
import time
from array import array
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

SUPPORTED_MODEL_TYPES = frozenset({"qwen3", "qwen2", "llama"})
_ROW_CANDIDATES = (1, 2, 4, 8, 16, 32, 64)  # powers of two: MKL runs 12 rows slower than 16
_PROBE_ROWS = 300
_PROBED: dict[tuple, int] = {}  # probe results by (dtype, device, threads, shapes): models share them
_PROBED_ONE_THREAD: dict[tuple, bool] = {}  # same key plus the row count: one thread gives the same bits
_SHARED_ROW_CANDIDATES = (4, 8, 16, 32, 64)  # query rows a shared-prefix call is padded to a multiple of
_PROBED_SHARED: dict[tuple, int | None] = {}  # shared-prefix row multiples by (dtype, threads, shapes)


def batching_supported(model: Any) -> str | None:
    """None when :class:`BatchedGenerator` can run ``model``; otherwise why not."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        return f"model type {model_type!r} is not one of {sorted(SUPPORTED_MODEL_TYPES)}"
    if getattr(config, "use_sliding_window", False) or any(
        kind != "full_attention" for kind in (getattr(config, "layer_types", None) or [])
    ):
        return "sliding-window attention is not supported"
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "layers") or not hasattr(model, "lm_head"):
        return "the model has no .model.layers / .lm_head"
    return None


@dataclass
class GenerationRequest:
    """One assistant turn to generate."""

    prompt: list[int]
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None  # sampling stream of this turn (None: the global torch RNG)
    stop_ids: frozenset[int] = frozenset()
    shared_prefix: int = 0  # leading prompt tokens other requests are expected to share (0: none)


@dataclass
class _Sequence:
    request: GenerationRequest
    future: Future
    keys: list[Any]  # per layer: [kv_heads, capacity, head_dim]
    values: list[Any]
    length: int = 0  # tokens whose keys/values are in the cache
    exact: int = 0  # leading tokens whose keys/values came from whole-chunk calls: the reusable part
    pending: list[int] = field(default_factory=list)  # tokens to feed at the next step
    generated: list[int] = field(default_factory=list)
    generator: Any = None
    shared: int = 0  # decode rows attend to [0, shared) in a call shared with the same prefix (0: never)
    shared_key: tuple[int, bytes] | None = None  # (shared, digest of those tokens): the sharing group


MATMUL_DTYPES = ("bfloat16", "auto")


def native_bfloat16(device: Any = "cpu") -> bool:
    """Whether ``device`` computes bfloat16 products natively (a CUDA GPU that supports them, a
    CPU with AVX512-BF16 or AMX). Elsewhere bfloat16 is emulated: on an AVX2-only CPU a
    SmolLM2 layer stack's products at 16 rows took ~4x as long as in float32."""
    import torch

    if torch.device(device).type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)())


def resolve_matmul_dtype(matmul_dtype: str | None, device: Any = "cpu") -> str | None:
    """``matmul_dtype`` with "auto" settled for ``device``: "bfloat16" where it is native
    (:func:`native_bfloat16`), None (the model's own dtype) elsewhere."""
    if matmul_dtype is not None and matmul_dtype not in MATMUL_DTYPES:
        raise ValueError(f"matmul_dtype must be one of {MATMUL_DTYPES} or None, got {matmul_dtype!r}")
    if matmul_dtype == "auto":
        return "bfloat16" if native_bfloat16(device) else None
    return matmul_dtype


class BatchedGenerator:
    """Generate many sequences together with one model, on a worker thread.

    Args:
        model: A Qwen3/Qwen2/Llama-architecture ``*ForCausalLM`` (see :func:`batching_supported`).
        batch_size: Most sequences in one forward pass.
        batch_wait_s: When idle, how long the first arrival waits for company before the
            first step (later arrivals join running batches at the next step anyway).
        prefix_cache: Keep each finished sequence's keys/values (LRU, ``cache_entries``) and
            start a new prompt from the longest cached prefix instead of re-encoding it.
        cache_entries: Finished sequences kept for reuse (default: twice ``batch_size``).
        cache_bytes: Most memory the kept keys/values may hold.
        chunk_tokens: Prompt tokens attend in calls of this many queries, aligned on multiples
            of it; reuse happens in whole chunks (see the module docstring).
        min_rows: Rows every matrix product gets (None: probed, see the module docstring).
        one_thread_small_steps: Run steps of at most ``min_rows`` real rows on one torch thread
            when the probe finds the bits unchanged: True always, False never, None (default)
            only when the probe also times it faster (see the module docstring).
        matmul_dtype: The dtype of the matrix products ("bfloat16"; "auto": bfloat16 where the
            device computes it natively, see :func:`resolve_matmul_dtype`; None for the model's
            own; see the module docstring).
        shared_prefix_attention: Let decode rows of requests with a ``shared_prefix`` attend to
            it in one call per prefix (see the module docstring; CPU only). False: every
            sequence attends alone, as before.
    """

    def __init__(
        self,
        model: Any,
        *,
        batch_size: int = 32,
        batch_wait_s: float = 0.002,
        prefix_cache: bool = True,
        cache_entries: int | None = None,
        cache_bytes: int = 1 << 30,
        chunk_tokens: int = 64,
        min_rows: int | None = None,
        one_thread_small_steps: bool | None = None,
        matmul_dtype: str | None = None,
        shared_prefix_attention: bool = True,
    ) -> None:
        import torch

        reason = batching_supported(model)
        if reason is not None:
            raise ValueError(f"batched generation cannot run this model: {reason}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if chunk_tokens < 1:
            raise ValueError(f"chunk_tokens must be at least 1, got {chunk_tokens}")
        self.chunk_tokens = chunk_tokens
        self._torch = torch
        self.model = model
        self.inner = model.model
        config = model.config
        self.layers = list(self.inner.layers)
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = getattr(config, "num_key_value_heads", None) or self.num_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.num_heads
        self.param = next(model.parameters())
        self._low_weights = self._low_precision_weights(matmul_dtype)
        self.batch_size = batch_size
        self.batch_wait_s = batch_wait_s
        self.prefix_cache = prefix_cache
        self.cache_entries = cache_entries if cache_entries is not None else 2 * batch_size
        self.cache_bytes = cache_bytes
        self._cached_bytes = 0
        self._rope = sys.modules[type(self.layers[0].self_attn).__module__].apply_rotary_pos_emb
        self.min_rows = min_rows  # probed by the worker thread when None
        self.one_thread_small_steps = one_thread_small_steps  # settled (True or False) by the worker's probe
        self._flash = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
        self.shared_prefix_attention = (
            shared_prefix_attention and self.param.device.type == "cpu" and self._flash is not None
        )
        self.shared_rows_multiple: int | None = None  # probed by the worker thread (see _probe_shared_rows)
        self._queue: queue.Queue[tuple[GenerationRequest, Future] | None] = queue.Queue()
        self._cache: OrderedDict[int, tuple[tuple[int, ...], list[Any], list[Any], int]] = OrderedDict()
        self._cache_key = 0
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        self.stats = {
            "steps": 0,
            "rows": 0,
            "one_thread_steps": 0,
            "prefill_tokens": 0,
            "reused_tokens": 0,
            "generated_tokens": 0,
            "shared_rows": 0,  # decode rows that attended to a shared prefix in a shared call
        }

    # -- public -------------------------------------------------------------------------------

    def submit(self, request: GenerationRequest) -> Future:
        """Queue one turn; the future resolves to its generated token ids (stop token included)."""
        if self._closed:
            raise RuntimeError("the batched generator is closed")
        if not request.prompt:
            raise ValueError("an empty prompt cannot be generated from")
        if request.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {request.max_new_tokens}")
        future: Future = Future()
        self._ensure_thread()
        self._queue.put((request, future))
        return future

    def generate(self, request: GenerationRequest) -> list[int]:
        """Blocking :meth:`submit`."""
        return self.submit(request).result()

    def close(self) -> None:
        """Stop the worker thread (turns in flight fail) and free the caches."""
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=60)
        self._cache.clear()
        self._cached_bytes = 0

    # -- matrix products -------------------------------------------------------------------------

    def _low_precision_weights(self, matmul_dtype: str | None) -> dict[Any, tuple[Any, Any]] | None:
        """The bfloat16 copies of every linear layer's weight and bias, by module (None: the
        products use the model's own weights)."""
        torch = self._torch
        matmul_dtype = resolve_matmul_dtype(matmul_dtype, self.param.device)
        if matmul_dtype is None or getattr(torch, str(matmul_dtype), None) == self.param.dtype:
            return None
        modules = [self.model.lm_head]
        for layer in self.layers:
            attn, mlp = layer.self_attn, layer.mlp
            modules += [attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj]
        low = torch.bfloat16
        with torch.no_grad():
            return {
                m: (m.weight.detach().to(low), None if m.bias is None else m.bias.detach().to(low)) for m in modules
            }

    def _weights(self, module: Any) -> tuple[Any, Any]:
        """The weight and bias a product with ``module`` reads."""
        if self._low_weights is None:
            return module.weight, module.bias
        return self._low_weights[module]

    def _matmul_dtype(self) -> Any:
        return self.param.dtype if self._low_weights is None else self._torch.bfloat16

    def _project(self, x: Any, module: Any) -> Any:
        """``module(x)`` with the product in the matmul dtype (``x`` already in it); the result
        stays in that dtype."""
        weight, bias = self._weights(module)
        return self._torch.nn.functional.linear(x, weight, bias)

    # -- the probe ------------------------------------------------------------------------------

    def _linears(self) -> tuple[tuple, list[tuple[Any, Any]]]:
        torch = self._torch
        dtype, device = self._matmul_dtype(), self.param.device
        attn, mlp = self.layers[0].self_attn, self.layers[0].mlp
        modules = [attn.q_proj, attn.k_proj, attn.o_proj, mlp.gate_proj, mlp.down_proj, self.model.lm_head]
        linears = [self._weights(m) for m in modules]
        key = (str(dtype), str(device), torch.get_num_threads(), *(tuple(w.shape) for w, _ in linears))
        return key, linears

    def _probe_min_rows(self) -> int:
        """Smallest row count from which every matrix product of this model gives each row the
        same bits whatever the other rows are. Run in the worker thread: the BLAS path can
        depend on the thread count."""
        key, linears = self._linears()
        if key in _PROBED:
            return _PROBED[key]
        _PROBED[key] = rows = self._probe(linears)
        return rows

    def _probe_one_thread(self, rows: int) -> bool:
        """Whether products of ``rows`` or more rows give the same bits on one thread as on the
        configured thread count (then small steps may run on one thread)."""
        torch = self._torch
        threads = torch.get_num_threads()
        if threads <= 1 or self.param.device.type != "cpu":
            return False
        key, linears = self._linears()
        key = (*key, rows)
        if key not in _PROBED_ONE_THREAD:
            F = torch.nn.functional
            generator = torch.Generator().manual_seed(1)
            counts = [rows, rows + 1, 2 * rows + 1, 97, 200]
            with torch.inference_mode():
                inputs = [torch.randn(200, w.shape[1], generator=generator).to(w.dtype) for w, _ in linears]
                many = [[F.linear(x[:c], w, b) for c in counts] for (w, b), x in zip(linears, inputs)]
                torch.set_num_threads(1)
                try:
                    one = [[F.linear(x[:c], w, b) for c in counts] for (w, b), x in zip(linears, inputs)]
                finally:
                    torch.set_num_threads(threads)
            _PROBED_ONE_THREAD[key] = all(
                torch.equal(a, b) for per_a, per_b in zip(many, one) for a, b in zip(per_a, per_b)
            )
        return _PROBED_ONE_THREAD[key]

    def _one_thread_is_faster(self, rows: int) -> bool:
        """Time a small step's work, one thread against the configured count: one layer's
        products on ``rows`` rows and ``rows`` one-row attention calls over 512 keys, best of
        three runs each (a speed choice only: the bits were checked by :meth:`_probe_one_thread`)."""
        torch = self._torch
        F = torch.nn.functional
        threads = torch.get_num_threads()
        _, linears = self._linears()
        generator = torch.Generator().manual_seed(2)
        dtype = self.param.dtype
        inputs = [torch.randn(rows, w.shape[1], generator=generator).to(w.dtype) for w, _ in linears]
        query = torch.randn(1, self.num_heads, 1, self.head_dim, generator=generator).to(dtype)
        cache = torch.randn(1, self.num_kv_heads, 512, self.head_dim, generator=generator).to(dtype)
        gqa = self.num_kv_heads != self.num_heads

        def step() -> float:
            start = time.perf_counter()
            for (w, b), x in zip(linears, inputs):
                F.linear(x, w, b)
            for _ in range(rows):
                F.scaled_dot_product_attention(query, cache, cache, enable_gqa=gqa)
            return time.perf_counter() - start

        with torch.inference_mode():
            every = min(step() for _ in range(3))
            torch.set_num_threads(1)
            try:
                one = min(step() for _ in range(3))
            finally:
                torch.set_num_threads(threads)
        return one < every

    def _probe(self, linears: list[Any]) -> int:
        torch = self._torch
        F = torch.nn.functional
        generator = torch.Generator().manual_seed(0)
        device = self.param.device
        with torch.inference_mode():
            checks = []
            for weight, bias in linears:
                x = torch.randn(_PROBE_ROWS, weight.shape[1], generator=generator).to(device, weight.dtype)
                checks.append((weight, bias, x, F.linear(x, weight, bias)))
            for rows in _ROW_CANDIDATES:
                counts = [*range(rows, 2 * rows + 8), 97, 200, _PROBE_ROWS - 1]
                if all(
                    torch.equal(F.linear(x[:count], weight, bias), reference[:count])
                    for weight, bias, x, reference in checks
                    for count in counts
                ):
                    return rows
        log.warning(
            "batched generation: no row count up to %d makes this BLAS batch-invariant; greedy outputs may "
            "depend on which turns share a batch",
            _ROW_CANDIDATES[-1],
        )
        return _ROW_CANDIDATES[-1]

    def _probe_shared_rows(self) -> int | None:
        """Smallest multiple of query rows to pad a shared-prefix call to, from which the CPU
        flash kernel gives every row the same output and log-sum-exp whatever the other rows
        are and wherever the row sits, on one thread as on all (small steps may run on one);
        None when no candidate does (then every sequence attends alone). Run in the worker thread."""
        torch = self._torch
        threads = torch.get_num_threads()
        group = self.num_heads // self.num_kv_heads
        most = max(64, 2 * self.batch_size * group)
        key = ("shared", str(self.param.dtype), threads, self.num_kv_heads, self.head_dim, most)
        if key in _PROBED_SHARED:
            return _PROBED_SHARED[key]
        generator = torch.Generator().manual_seed(3)
        dtype = self.param.dtype
        scale = self.head_dim**-0.5
        found = None
        with torch.inference_mode():
            cases = []
            for keys in (100, 700):
                k = torch.randn(1, self.num_kv_heads, keys, self.head_dim, generator=generator).to(dtype)
                v = torch.randn(1, self.num_kv_heads, keys, self.head_dim, generator=generator).to(dtype)
                rows = most + 2 * _SHARED_ROW_CANDIDATES[-1]
                q = torch.randn(1, self.num_kv_heads, rows, self.head_dim, generator=generator).to(dtype)
                cases.append((q, k, v, self._flash(q, k, v, scale=scale)))
            for multiple in _SHARED_ROW_CANDIDATES:
                # The first 24 multiples and the largest: row counts a shared call can be padded to.
                counts = list(range(multiple, most + 1, multiple))[:24] + [most - most % multiple]
                shifts = sorted({0, group, multiple, 3 * group})

                def same(count: int, shift: int) -> bool:
                    return all(
                        torch.equal(out, ref_out[:, :, shift : shift + count])
                        and torch.equal(lse, ref_lse[:, :, shift : shift + count])
                        for q, k, v, (ref_out, ref_lse) in cases
                        for out, lse in [self._flash(q[:, :, shift : shift + count], k, v, scale=scale)]
                    )

                ok = all(same(count, shift) for count in counts for shift in shifts)
                if ok and threads > 1:
                    torch.set_num_threads(1)
                    try:
                        ok = all(same(count, shifts[-1]) for count in counts[:4] + counts[-1:])
                    finally:
                        torch.set_num_threads(threads)
                if ok:
                    found = multiple
                    break
        if found is None:
            log.warning(
                "batched generation: no row multiple makes shared-prefix attention batch-invariant; "
                "every sequence attends alone"
            )
        _PROBED_SHARED[key] = found
        return found

    # -- the worker thread ----------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="skillgym-hf-batcher", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        torch = self._torch
        if self.min_rows is None:
            try:
                self.min_rows = self._probe_min_rows()
            except Exception:  # generation can still run; only the invariance is not verified
                log.exception("batched generation: the row-count probe failed; padding to %d rows", _ROW_CANDIDATES[-1])
                self.min_rows = _ROW_CANDIDATES[-1]
        if self.one_thread_small_steps is not False:
            try:
                timed = self.one_thread_small_steps is None
                same_bits = self._probe_one_thread(self.min_rows)
                self.one_thread_small_steps = same_bits and (not timed or self._one_thread_is_faster(self.min_rows))
            except Exception:
                log.exception("batched generation: the one-thread probe failed; small steps keep every thread")
                self.one_thread_small_steps = False
        if self.shared_prefix_attention:
            try:
                self.shared_rows_multiple = self._probe_shared_rows()
            except Exception:
                log.exception("batched generation: the shared-prefix probe failed; every sequence attends alone")
            self.shared_prefix_attention = self.shared_rows_multiple is not None
        running: list[_Sequence] = []
        deferred: list[tuple[GenerationRequest, Future]] = []  # waiting for a shared prefix being prefilled
        stop = False
        while not stop:
            arrivals, deferred = deferred, []
            if not running and not arrivals:
                item = self._queue.get()
                if item is None:
                    break
                arrivals.append(item)
                deadline = time.monotonic() + self.batch_wait_s
                while len(arrivals) < self.batch_size:
                    try:
                        item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                    except queue.Empty:
                        break
                    if item is None:
                        stop = True
                        break
                    arrivals.append(item)
            while len(running) + len(arrivals) < self.batch_size:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                arrivals.append(item)
            for request, future in arrivals:
                if future.running() or future.set_running_or_notify_cancel():
                    try:
                        if self._should_wait(request, running):
                            deferred.append((request, future))
                        else:
                            running.append(self._admit(request, future, running))
                    except Exception as exc:
                        future.set_exception(exc)
            if not running:
                continue
            try:
                with torch.inference_mode():
                    running = self._step(running)
            except Exception as exc:  # a failed step fails its turns, never the thread
                log.exception("batched generation step failed")
                for sequence in running:
                    if not sequence.future.done():
                        sequence.future.set_exception(exc)
                running = []
        for sequence in running:
            if not sequence.future.done():
                sequence.future.set_exception(RuntimeError("the batched generator was closed"))
        for _, future in deferred:
            if not future.done():
                future.set_exception(RuntimeError("the batched generator was closed"))
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None and not item[1].done():
                item[1].set_exception(RuntimeError("the batched generator was closed"))

    def _shared_key(self, request: GenerationRequest) -> tuple[int, bytes] | None:
        """(S, digest of the prompt's first S tokens): the request's declared shared prefix in
        whole chunks (their keys/values are the same in every sequence), None when under a chunk."""
        shared = min(request.shared_prefix, len(request.prompt))
        shared -= shared % self.chunk_tokens
        if shared <= 0:
            return None
        return shared, hashlib.blake2b(array("q", request.prompt[:shared]).tobytes(), digest_size=16).digest()

    def _should_wait(self, request: GenerationRequest, running: list[_Sequence]) -> bool:
        """Whether ``request`` should wait a step for a running sequence that is still encoding
        the same shared prefix, to copy it then instead of encoding it again (the first wave of
        an eval: 16 turns arrive at once with the same ~1,400-token system block)."""
        if not self.prefix_cache:
            return False
        key = self._shared_key(request)
        if key is None or not any(s.shared_key == key and s.exact < key[0] for s in running):
            return False
        return self._best_source(request.prompt, running)[0] < key[0]

    def _admit(self, request: GenerationRequest, future: Future, running: list[_Sequence]) -> _Sequence:
        torch = self._torch
        prompt = request.prompt
        capacity = len(prompt) + request.max_new_tokens + 1
        shape = (self.num_kv_heads, capacity, self.head_dim)
        dtype, device = self.param.dtype, self.param.device
        keys = [torch.empty(shape, dtype=dtype, device=device) for _ in self.layers]
        values = [torch.empty(shape, dtype=dtype, device=device) for _ in self.layers]
        reused = self._reuse(prompt, keys, values, running) if self.prefix_cache else 0
        sequence = _Sequence(request, future, keys, values, length=reused, exact=reused, pending=list(prompt[reused:]))
        sequence.shared_key = self._shared_key(request)
        if self.shared_prefix_attention and sequence.shared_key is not None:
            sequence.shared = sequence.shared_key[0]
        if request.temperature > 0 and request.seed is not None:
            sequence.generator = torch.Generator(device=device).manual_seed(request.seed)
        self.stats["reused_tokens"] += reused
        self.stats["prefill_tokens"] += len(prompt) - reused
        return sequence

    def _best_source(self, prompt: list[int], running: list[_Sequence]) -> tuple[int, int | _Sequence | None]:
        """The longest reusable prefix of ``prompt`` (whole chunks, and at most all but its last
        token, whose logits are needed) and where it is: a cache entry's key, or a running
        sequence whose prompt's whole chunks are already encoded."""
        best, source = 0, None
        limit = len(prompt) - 1
        for key, (tokens, *_) in self._cache.items():
            common = _common_prefix(tokens, prompt, limit)
            if common > best:
                best, source = common, key
        for sequence in running:
            if sequence.exact > best:
                common = _common_prefix(tuple(sequence.request.prompt[: sequence.exact]), prompt, limit)
                if common > best:
                    best, source = common, sequence
        best -= best % self.chunk_tokens
        return (best, source) if best > 0 else (0, None)

    def _reuse(self, prompt: list[int], keys: list[Any], values: list[Any], running: list[_Sequence]) -> int:
        """Copy the longest reusable prefix of ``prompt`` (see :meth:`_best_source`) into the new
        cache; a cached entry the prompt fully extends is dropped (its conversation moved on)."""
        best, source = self._best_source(prompt, running)
        if source is None:
            return 0
        if isinstance(source, _Sequence):
            from_keys, from_values = source.keys, source.values
        else:
            tokens, from_keys, from_values, _ = self._cache[source]
            if best >= len(tokens):
                self._cached_bytes -= self._cache.pop(source)[3]
            else:
                self._cache.move_to_end(source)
        for layer in range(len(self.layers)):
            keys[layer][:, :best].copy_(from_keys[layer][:, :best])
            values[layer][:, :best].copy_(from_values[layer][:, :best])
        return best

    def _remember(self, sequence: _Sequence) -> None:
        if not self.prefix_cache or self.cache_entries < 1:
            return
        if sequence.exact == 0:
            return
        tokens = tuple(sequence.request.prompt + sequence.generated)[: sequence.exact]
        size = sum(t.numel() * t.element_size() for t in (*sequence.keys, *sequence.values))
        if size > self.cache_bytes:
            return
        self._cache_key += 1
        self._cache[self._cache_key] = (tokens, sequence.keys, sequence.values, size)
        self._cached_bytes += size
        while len(self._cache) > self.cache_entries or self._cached_bytes > self.cache_bytes:
            self._cached_bytes -= self._cache.popitem(last=False)[1][3]

    def _step(self, running: list[_Sequence]) -> list[_Sequence]:
        """One forward pass over every running sequence's pending tokens; returns those still running."""
        torch = self._torch
        device = self.param.device
        ids: list[int] = []
        positions: list[int] = []
        spans: list[tuple[int, int]] = []
        for sequence in running:
            start = len(ids)
            ids.extend(sequence.pending)
            positions.extend(range(sequence.length, sequence.length + len(sequence.pending)))
            spans.append((start, len(ids)))
        real = len(ids)
        ghost = max(0, self.min_rows - real)
        ids.extend([0] * ghost)
        positions.extend([0] * ghost)
        last_rows = [end - 1 for _, end in spans]
        threads = torch.get_num_threads()
        one_thread = self.one_thread_small_steps and real <= self.min_rows and threads > 1
        if one_thread:
            torch.set_num_threads(1)
            self.stats["one_thread_steps"] += 1
        try:
            logits = self._forward(
                torch.tensor(ids, device=device), torch.tensor(positions, device=device), running, spans, last_rows
            )
        finally:
            if one_thread:
                torch.set_num_threads(threads)
        self.stats["steps"] += 1
        self.stats["rows"] += real
        still: list[_Sequence] = []
        for index, sequence in enumerate(running):
            sequence.length += len(sequence.pending)
            token = self._choose(logits[index], sequence)
            sequence.generated.append(token)
            self.stats["generated_tokens"] += 1
            request = sequence.request
            if token in request.stop_ids or len(sequence.generated) >= request.max_new_tokens:
                sequence.pending = []
                sequence.future.set_result(list(sequence.generated))
                self._remember(sequence)
            else:
                sequence.pending = [token]
                still.append(sequence)
        return still

    def _choose(self, logits: Any, sequence: _Sequence) -> int:
        torch = self._torch
        request = sequence.request
        if request.temperature <= 0:
            return int(torch.argmax(logits))
        scores = logits.float() / request.temperature
        probs = torch.softmax(scores, dim=-1)
        if request.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < request.top_p
            keep[0] = True
            filtered = torch.zeros_like(probs)
            filtered[order[keep]] = sorted_probs[keep]
            probs = filtered / filtered.sum()
        return int(torch.multinomial(probs, 1, generator=sequence.generator))

    def _forward(self, ids: Any, positions: Any, running: list[_Sequence], spans: list, last_rows: list[int]) -> Any:
        """The decoder over packed rows (Qwen3/Qwen2/Llama block structure), writing each
        sequence's new keys/values into its cache; logits of each sequence's last row."""
        torch = self._torch
        F = torch.nn.functional
        rows = ids.shape[0]
        low = self._matmul_dtype()
        hidden = self.inner.embed_tokens(ids)
        dtype = hidden.dtype
        cos, sin = self.inner.rotary_emb(hidden, positions)
        for layer_index, layer in enumerate(self.layers):
            attn, mlp = layer.self_attn, layer.mlp
            x = layer.input_layernorm(hidden).to(low)
            q = self._project(x, attn.q_proj).to(dtype).view(rows, self.num_heads, self.head_dim)
            k = self._project(x, attn.k_proj).to(dtype).view(rows, self.num_kv_heads, self.head_dim)
            v = self._project(x, attn.v_proj).to(dtype).view(rows, self.num_kv_heads, self.head_dim)
            if getattr(attn, "q_norm", None) is not None:
                q, k = attn.q_norm(q), attn.k_norm(k)
            q, k = self._rope(q, k, cos, sin, unsqueeze_dim=1)
            out = torch.zeros(rows, self.num_heads, self.head_dim, dtype=q.dtype, device=q.device)
            gqa = self.num_kv_heads != self.num_heads
            # Decode rows for shared-prefix attention: (row, sequence, key count).
            split: list[tuple[int, _Sequence, int]] = []
            for sequence, (start, end) in zip(running, spans):
                count = end - start
                past = sequence.length
                total = past + count
                cache_k, cache_v = sequence.keys[layer_index], sequence.values[layer_index]
                cache_k[:, past:total].copy_(k[start:end].transpose(0, 1))
                cache_v[:, past:total].copy_(v[start:end].transpose(0, 1))
                query = q[start:end].transpose(0, 1).unsqueeze(0)  # [1, heads, count, dim]
                chunk = self.chunk_tokens
                first = past
                while first < total:  # calls over whole aligned chunks (a decode step: one row)
                    last = min(total, (first // chunk + 1) * chunk)
                    if last - first == 1 and sequence.shared and first >= sequence.shared:
                        split.append((start + first - past, sequence, last))
                        first = last
                        continue
                    mask = None
                    if last - first > 1:
                        mask = torch.ones(last - first, last, dtype=torch.bool, device=q.device).tril(diagonal=first)
                    result = F.scaled_dot_product_attention(
                        query[:, :, first - past : last - past],
                        cache_k[None, :, :last],
                        cache_v[None, :, :last],
                        attn_mask=mask,
                        scale=attn.scaling,
                        enable_gqa=gqa,
                    )
                    out[start + first - past : start + last - past] = result[0].transpose(0, 1)
                    if layer_index == 0 and first == sequence.exact and last - first == chunk:
                        sequence.exact = last
                    first = last
            if split:
                index = torch.tensor([row for row, _, _ in split], device=q.device)
                out[index] = self._shared_prefix_attention(q[index], split, layer_index, attn.scaling)
                if layer_index == 0:
                    self.stats["shared_rows"] += len(split)
            hidden = hidden + self._project(out.reshape(rows, -1).to(low), attn.o_proj).to(dtype)
            x = layer.post_attention_layernorm(hidden).to(low)
            gated = mlp.act_fn(self._project(x, mlp.gate_proj)) * self._project(x, mlp.up_proj)
            hidden = hidden + self._project(gated, mlp.down_proj).to(dtype)
        hidden = self.inner.norm(hidden)
        picked = hidden[torch.tensor(last_rows, device=hidden.device)]
        if picked.shape[0] < self.min_rows:
            picked = torch.cat([picked, picked.new_zeros(self.min_rows - picked.shape[0], picked.shape[1])])
        return self._project(picked.to(low), self.model.lm_head)[: len(last_rows)].to(dtype)

    def _shared_prefix_attention(self, queries: Any, split: list, layer: int, scale: float) -> Any:
        """Attention of decode rows ``queries`` ([rows, heads, head_dim]; ``split`` gives each
        row's sequence and key count) as two parts merged by log-sum-exp: the shared prefix in
        one call per group of sequences with the same prefix, the rest in one call per row."""
        torch = self._torch
        kv, group, dim = self.num_kv_heads, self.num_heads // self.num_kv_heads, self.head_dim
        count = len(split)
        grouped = queries.view(count, kv, group, dim)  # query heads as rows over their key/value head
        members: dict[tuple[int, bytes], list[int]] = {}
        for index, (_, sequence, _) in enumerate(split):
            members.setdefault(sequence.shared_key, []).append(index)
        parts = []
        for (prefix, _), indices in members.items():
            owner = split[indices[0]][1]  # every member holds the same bits in [0, prefix)
            rows = len(indices) * group
            query = (grouped if len(indices) == count else grouped[indices]).permute(1, 0, 2, 3).reshape(kv, rows, dim)
            padded = -(-rows // self.shared_rows_multiple) * self.shared_rows_multiple
            if padded > rows:
                query = torch.cat([query, query.new_zeros(kv, padded - rows, dim)], dim=1)
            out, lse = self._flash(
                query[None], owner.keys[layer][None, :, :prefix], owner.values[layer][None, :, :prefix], scale=scale
            )
            out = out[0, :, :rows].reshape(kv, len(indices), group, dim).permute(1, 0, 2, 3)
            parts.append((indices, out, lse[0, :, :rows].reshape(kv, len(indices), group).permute(1, 0, 2)))
        if len(parts) == 1:  # the usual case: one env's system block
            shared_out, shared_lse = parts[0][1], parts[0][2]
        else:
            shared_out = queries.new_empty(count, kv, group, dim)
            shared_lse = queries.new_empty(count, kv, group)
            for indices, out, lse in parts:
                shared_out[indices], shared_lse[indices] = out, lse
        own = [
            self._flash(
                query[None],
                sequence.keys[layer][None, :, sequence.shared : last],
                sequence.values[layer][None, :, sequence.shared : last],
                scale=scale,
            )
            for query, (_, sequence, last) in zip(grouped.unbind(0), split)
        ]
        own_out = torch.cat([out for out, _ in own])
        own_lse = torch.cat([lse for _, lse in own])
        top = torch.maximum(shared_lse, own_lse)
        shared_weight = torch.exp(shared_lse - top)
        own_weight = torch.exp(own_lse - top)
        merged = (shared_out * shared_weight[..., None] + own_out * own_weight[..., None]) / (
            shared_weight + own_weight
        )[..., None]
        return merged.reshape(count, self.num_heads, dim)


def _common_prefix(a: tuple[int, ...], b: list[int], limit: int) -> int:
    """Length of the common prefix of ``a`` and ``b``, at most ``limit``."""
    n = min(len(a), len(b), limit)
    if a[:n] == tuple(b[:n]):
        return n
    low, high = 0, n  # binary search on prefix equality: slices compare in C
    while low < high:
        mid = (low + high + 1) // 2
        if a[:mid] == tuple(b[:mid]):
            low = mid
        else:
            high = mid - 1
    return low
