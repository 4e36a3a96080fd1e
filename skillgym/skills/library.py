"""``SkillLibrary``: every skill and subagent under some folders, searchable and savable.

    lib = SkillLibrary(["~/.claude/skills", "../shared/skills-corpus"])
    for hit in lib.search("make a landing page look distinctive", k=3):
        print(hit.skill.name, hit.score, hit.why)
    lib.save("skill-index/")          # later: SkillLibrary.load("skill-index/")

Skills are deduplicated by content hash, so overlapping folders (or a vendored copy of the
same skill) count once. Names are not unique in the wild (two catalogs may both ship a
``sql-pro``); :meth:`SkillLibrary.get` accepts ``<path-fragment>/<name>`` to pick one.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from skillgym.skills.loader import SkillLoadError, load_collection
from skillgym.skills.search import (
    DEFAULT_WEIGHTS,
    Embedder,
    FieldedBM25,
    SearchError,
    SearchHit,
    SearchMode,
    SentenceTransformerEmbedder,
    Tokenizer,
    cosine_scores,
    embedding_text,
    explain,
    reciprocal_rank_fusion,
    top_k,
    write_json,
)
from skillgym.types import SkillSpec

INDEX_FORMAT = 1
INDEX_MANIFEST = "skillgym-index.json"
_SKILLS_FILE = "skills.jsonl"
_EMBEDDINGS_FILE = "embeddings.npy"


class AmbiguousSkillName(LookupError):
    """Several skills share a name; the message lists them and how to pick one."""


class SkillLibrary:
    """Skills and agents loaded from any number of folders (or files, or manifests)."""

    def __init__(
        self,
        paths: Iterable[str | Path] = (),
        *,
        skills: Iterable[SkillSpec] = (),
        embedding_model: str | Path | None = None,
        embedder: Embedder | None = None,
        field_weights: dict[str, float] | None = None,
    ) -> None:
        self.paths = [Path(p).expanduser() for p in paths]
        self.problems: list[SkillLoadError] = []
        loaded = list(skills)
        for path in self.paths:
            if not path.exists():
                raise SkillLoadError(path, "skill library path does not exist", field="path")
            loaded += load_collection(path, problems=self.problems)
        self._skills = _dedupe(loaded)
        self._tokenizer = Tokenizer()
        self._bm25 = FieldedBM25(self._tokenizer, field_weights or DEFAULT_WEIGHTS)
        self._bm25_ready = False
        self._embedding_model = Path(embedding_model) if embedding_model else None
        self._embedder = embedder
        self._vectors: np.ndarray | None = None

    # -- contents -------------------------------------------------------------------------------

    @property
    def skills(self) -> list[SkillSpec]:
        return list(self._skills)

    def __len__(self) -> int:
        return len(self._skills)

    def __iter__(self) -> Iterator[SkillSpec]:
        return iter(self._skills)

    def find(self, name: str) -> list[SkillSpec]:
        """All skills called ``name``; ``fragment/name`` keeps those whose path contains ``fragment``."""
        fragment, _, bare = name.rpartition("/")
        found = [s for s in self._skills if s.name == bare]
        if fragment:
            found = [s for s in found if fragment in Path(s.source_path or "").as_posix()]
        return found

    def get(self, name: str) -> SkillSpec:
        """The one skill called ``name`` (or ``path-fragment/name``, or a content hash)."""
        if name.startswith("sha256:"):
            for skill in self._skills:
                if skill.content_hash == name:
                    return skill
        found = self.find(name)
        if len(found) == 1:
            return found[0]
        if not found:
            raise KeyError(f"no skill or agent named {name!r} in the library ({len(self)} loaded)")
        options = "; ".join(f"{s.kind} at {s.source_path}" for s in found)
        raise AmbiguousSkillName(
            f"{len(found)} skills are named {name!r} ({options}); "
            f"qualify it with part of its path, e.g. '<folder>/{name}'"
        )

    # -- search ---------------------------------------------------------------------------------

    def search(self, query: str, k: int = 5, mode: SearchMode = "bm25") -> list[SearchHit]:
        """The ``k`` best matches for ``query``; each hit says why it matched."""
        if mode not in ("bm25", "embedding", "hybrid"):
            raise ValueError(f"unknown search mode {mode!r}; use bm25, embedding or hybrid")
        if k <= 0 or not self._skills:
            return []
        if mode == "bm25":
            scores = self._bm25_scores(query)
            return [self._bm25_hit(query, i, float(scores[i])) for i in top_k(scores, k, positive_only=True)]
        cosine = self._embedding_scores(query)
        if mode == "embedding":
            return [
                SearchHit(skill=self._skills[i], score=float(cosine[i]), why=f"embedding cosine {cosine[i]:.3f}")
                for i in top_k(cosine, k, positive_only=False)
            ]
        # Hybrid: fuse the two full rankings; depth well beyond k so a skill ranked modestly by
        # both can still beat one ranked well by only one.
        depth = max(50, 4 * k)
        bm25 = self._bm25_scores(query)
        lexical = top_k(bm25, depth, positive_only=True)
        semantic = top_k(cosine, depth, positive_only=False)
        fused = reciprocal_rank_fusion([lexical, semantic])
        best = sorted(fused, key=lambda i: (-fused[i], i))[:k]
        hits = []
        for i in best:
            matched = self._bm25.matches(query, i)
            parts = [f"bm25 rank {lexical.index(i) + 1} ({explain(matched)})" if i in lexical else "no bm25 match"]
            parts.append(f"embedding rank {semantic.index(i) + 1} (cosine {cosine[i]:.3f})")
            hits.append(SearchHit(skill=self._skills[i], score=fused[i], why="; ".join(parts), matched=matched))
        return hits

    def _bm25_scores(self, query: str) -> np.ndarray:
        if not self._bm25_ready:
            self._bm25.build(self._skills)
            self._bm25_ready = True
        return self._bm25.scores(query, len(self._skills))

    def _bm25_hit(self, query: str, i: int, score: float) -> SearchHit:
        matched = self._bm25.matches(query, i)
        return SearchHit(skill=self._skills[i], score=score, why=explain(matched), matched=matched)

    def _get_embedder(self) -> Embedder:
        if self._embedder is None:
            if self._embedding_model is None:
                raise SearchError(
                    "embedding and hybrid search need a local embedding model: pass embedding_model=<folder> "
                    "(CLI: --embedding-model PATH), or use mode='bm25'"
                )
            self._embedder = SentenceTransformerEmbedder(self._embedding_model)
        return self._embedder

    def _doc_vectors(self) -> np.ndarray:
        if self._vectors is None:
            self._vectors = self._get_embedder().encode([embedding_text(s) for s in self._skills])
        return self._vectors

    def _embedding_scores(self, query: str) -> np.ndarray:
        vectors = self._doc_vectors()
        return cosine_scores(vectors, self._get_embedder().encode([query])[0])

    # -- persistence ----------------------------------------------------------------------------

    def save(self, folder: str | Path) -> Path:
        """Write the library and its BM25 index (and embeddings, if computed) to ``folder``.

        The folder is replaced as a whole: a stale index from another library must not survive.
        """
        target = Path(folder).expanduser()
        staging = target.with_name(target.name + ".tmp-index")
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        with (staging / _SKILLS_FILE).open("w", encoding="utf-8") as out:
            for skill in self._skills:
                out.write(skill.model_dump_json() + "\n")
        if not self._bm25_ready and self._skills:
            self._bm25.build(self._skills)
            self._bm25_ready = True
        self._bm25.save(staging / "bm25")
        model_id = None
        if self._embedder is not None or self._embedding_model is not None:
            np.save(staging / _EMBEDDINGS_FILE, self._doc_vectors())
            model_id = self._get_embedder().model_id
        write_json(staging / INDEX_MANIFEST, {
            "format": INDEX_FORMAT,
            "count": len(self._skills),
            "paths": [str(p.resolve()) for p in self.paths],
            "field_weights": self._bm25.weights,
            "stemming": self._tokenizer.stemming,
            "embedding_model": model_id,
        })
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
        return target

    @classmethod
    def load(
        cls,
        folder: str | Path,
        *,
        embedding_model: str | Path | None = None,
        embedder: Embedder | None = None,
    ) -> SkillLibrary:
        """Open an index written by :meth:`save` without re-reading the skill files."""
        root = Path(folder).expanduser()
        manifest_file = root / INDEX_MANIFEST
        if not manifest_file.is_file():
            raise SearchError(f"{root} is not a skill index (no {INDEX_MANIFEST}); build one with `skillgym skills index`")
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        if manifest.get("format") != INDEX_FORMAT:
            raise SearchError(f"{manifest_file}: index format {manifest.get('format')} is not {INDEX_FORMAT}; rebuild it")
        skills = [
            SkillSpec.model_validate_json(line)
            for line in (root / _SKILLS_FILE).read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
        model = embedding_model or manifest.get("embedding_model")
        lib = cls(skills=skills, embedding_model=model, embedder=embedder,
                  field_weights=manifest.get("field_weights"))
        lib.paths = [Path(p) for p in manifest.get("paths", [])]
        if manifest.get("stemming") != lib._tokenizer.stemming:
            raise SearchError(
                f"{root} was built {'with' if manifest.get('stemming') else 'without'} stemming but PyStemmer is "
                f"{'missing' if manifest.get('stemming') else 'installed'} here; rebuild the index"
            )
        lib._bm25.load(root / "bm25", lib._skills)
        lib._bm25_ready = True
        vectors = root / _EMBEDDINGS_FILE
        if vectors.is_file() and embedding_model is None:
            lib._vectors = np.load(vectors)
        return lib

    @classmethod
    def open(cls, paths: Iterable[str | Path], **kwargs) -> SkillLibrary:
        """A saved index when given exactly one index folder; otherwise load and index ``paths``
        (an index folder among several contributes its stored skills)."""
        paths = [Path(p).expanduser() for p in paths]
        if len(paths) == 1 and is_index(paths[0]):
            return cls.load(paths[0], **kwargs)
        skills: list[SkillSpec] = []
        folders = []
        for p in paths:
            if is_index(p):
                skills += cls.load(p).skills
            else:
                folders.append(p)
        return cls(folders, skills=skills, **kwargs)


def is_index(path: Path) -> bool:
    return (path / INDEX_MANIFEST).is_file()


def _dedupe(skills: Iterable[SkillSpec]) -> list[SkillSpec]:
    seen: set[str] = set()
    out = []
    for skill in skills:
        if skill.content_hash not in seen:
            seen.add(skill.content_hash)
            out.append(skill)
    return out
