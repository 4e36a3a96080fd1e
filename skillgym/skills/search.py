"""Ranking for the skill library: field-weighted BM25, optional embeddings, and their fusion.

BM25 comes from ``bm25s``. It has no notion of fields, so each field (name, description,
body) gets its own index and a skill's score is the weighted sum of its field scores: a query
word in a skill's name or description says far more about what the skill is *for* than the
same word somewhere in a long body. Embeddings (sentence-transformers, a local model only)
are imported lazily; hybrid search fuses both rankings by reciprocal rank.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, Field

from skillgym.io import atomic_write_json
from skillgym.types import SkillSpec

SearchMode = Literal["bm25", "embedding", "hybrid"]
FIELDS = ("name", "description", "body")
DEFAULT_WEIGHTS: dict[str, float] = {"name": 3.0, "description": 2.0, "body": 1.0}
RRF_K = 60  # the usual reciprocal-rank-fusion constant: damps the gap between ranks 1 and 2
_WORD = re.compile(r"[a-z0-9]+")
# English function words. bm25s ships only ~30; requests ("how do I ... for our ...") carry many
# more that would otherwise match every long skill body.
STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have
having he her here hers herself him himself his how i if in into is it its itself just me more most
my myself no nor not now of off on once only or other our ours ourselves out over own same she should
so some such than that the their theirs them themselves then there these they this those through to
too under until up us very was we were what when where which while who whom why will with would you
your yours yourself yourselves let lets get got also etc via
""".split())


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


def field_texts(skill: SkillSpec) -> dict[str, str]:
    """What each BM25 field sees. Hyphens in names become spaces so "frontend-design" matches
    "design"."""
    return {
        "name": skill.name.replace("-", " ").replace("_", " "),
        "description": skill.description,
        "body": skill.instructions,
    }


def embedding_text(skill: SkillSpec, body_chars: int = 1000) -> str:
    """Name, description and the head of the body: what a skill is for, not every detail."""
    return f"{skill.name}: {skill.description}\n{skill.instructions[:body_chars]}"


# ---------------------------------------------------------------------------------------------
# BM25


class FieldedBM25:
    """One ``bm25s`` index per field, combined by a weighted sum of scores."""

    def __init__(self, tokenizer: Tokenizer, weights: dict[str, float] | None = None) -> None:
        self.tokenizer = tokenizer
        self.weights = dict(weights or DEFAULT_WEIGHTS)
        self._indexes: dict[str, Any] = {}
        self._terms: list[dict[str, set[str]]] = []  # per skill, per field: its stems ("why")

    def build(self, skills: Sequence[SkillSpec]) -> FieldedBM25:
        bm25s = _bm25s()
        self._indexes = {}
        texts = [field_texts(s) for s in skills]
        self._terms = [{f: set(self.tokenizer(t[f])) for f in FIELDS} for t in texts]
        for f in FIELDS:
            index = bm25s.BM25()
            # An empty document list would make bm25s fail; an empty library just scores nothing.
            if skills:
                index.index([self.tokenizer(t[f]) for t in texts], show_progress=False)
            self._indexes[f] = index
        return self

    def scores(self, query: str, n_docs: int) -> np.ndarray:
        stems = self.tokenizer(query)
        total = np.zeros(n_docs, dtype=np.float64)
        if not stems or n_docs == 0:
            return total
        for f in FIELDS:
            weight = self.weights.get(f, 0.0)
            if weight:
                total += weight * np.asarray(self._indexes[f].get_scores(stems), dtype=np.float64)
        return total

    def matches(self, query: str, doc: int) -> dict[str, list[str]]:
        """Field -> the query's own words (not stems) that occur in that field of ``doc``."""
        words = list(dict.fromkeys(self.tokenizer.words(query)))
        stems = self.tokenizer.stem(words)
        out: dict[str, list[str]] = {}
        for f in FIELDS:
            hit = [w for w, s in zip(words, stems) if s in self._terms[doc][f]]
            if hit:
                out[f] = hit
        return out

    def save(self, folder: Path) -> None:
        for f, index in self._indexes.items():
            if getattr(index, "vocab_dict", None):
                index.save(str(folder / f), show_progress=False)

    def load(self, folder: Path, skills: Sequence[SkillSpec]) -> FieldedBM25:
        bm25s = _bm25s()
        if not skills:
            return self.build(skills)
        self._terms = [{f: set(self.tokenizer(t[f])) for f in FIELDS} for t in map(field_texts, skills)]
        for f in FIELDS:
            if not (folder / f).is_dir():
                raise SearchError(f"index folder {folder} lacks the '{f}' BM25 index; rebuild it with `skillgym skills index`")
            self._indexes[f] = bm25s.BM25.load(str(folder / f), show_progress=False)
        return self


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
                "sentence-transformers model (skillgym never downloads one)"
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


def cosine_scores(matrix: np.ndarray, query_vector: np.ndarray) -> np.ndarray:
    """Rows and query are normalized, so the dot product is the cosine similarity."""
    if matrix.size == 0:
        return np.zeros(0, dtype=np.float64)
    return (matrix @ query_vector.reshape(-1)).astype(np.float64)


# ---------------------------------------------------------------------------------------------
# ranking


def top_k(scores: np.ndarray, k: int, *, positive_only: bool) -> list[int]:
    """Indices of the ``k`` best scores, ties broken by position (stable and reproducible)."""
    order = [int(i) for i in np.argsort(-scores, kind="stable")]
    if positive_only:
        order = [i for i in order if scores[i] > 0]
    return order[:k]


def reciprocal_rank_fusion(rankings: Sequence[Sequence[int]], k: int = RRF_K) -> dict[int, float]:
    """Sum of 1 / (k + rank) over the rankings each document appears in (rank from 1)."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, doc in enumerate(ranking, start=1):
            fused[doc] = fused.get(doc, 0.0) + 1.0 / (k + rank)
    return fused


def write_json(path: Path, data: Any) -> None:
    """Atomic write: a crash mid-save leaves the old file, never half a file."""
    atomic_write_json(path, data, sort_keys=True)
