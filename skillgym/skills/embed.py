"""Offline text embeddings for skill search: WordLlama's static word vectors, loaded from its wheel.

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
