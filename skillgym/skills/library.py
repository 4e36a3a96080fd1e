"""``SkillLibrary``: every skill and subagent under some folders, searchable and savable.

    lib = SkillLibrary(["~/.claude/skills", "../shared/skills-corpus"], embedding_model="wordllama")
    for hit in lib.search("make a landing page look distinctive", k=3, mode="hybrid"):
        print(hit.skill.name, hit.score, hit.why)
    lib.save("skill-index/")          # later: SkillLibrary.load("skill-index/")
    decision = lib.route("the checkout page crashes", {"debugger": "...", "designer": "..."})

Skills are deduplicated by content hash, so overlapping folders (or a vendored copy of the
same skill) count once; near-duplicates (reworded or renamed copies) are grouped by MinHash
so a search's top k are k different skills. Names are not unique in the wild (two catalogs
may both ship a ``sql-pro``); :meth:`SkillLibrary.get` accepts ``<path-fragment>/<name>``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from skillgym.skills.dedupe import near_duplicate_groups
from skillgym.skills.loader import SkillLoadError, load_collection
from skillgym.skills.search import (
    AUTO,
    DEFAULT_WEIGHTS,
    HYBRID_RRF_K,
    HYBRID_WEIGHTS,
    MAX_LISTED_DUPLICATES,
    MODES,
    Embedder,
    FieldedBM25,
    SearchError,
    SearchHit,
    SearchMode,
    Tokenizer,
    auto_embedding_model,
    builtin_model_id,
    cosine_scores,
    default_embedding_model,
    explain,
    is_builtin_model,
    load_embedder,
    reciprocal_rank_fusion,
    skill_vectors,
    top_k,
    write_json,
)
from skillgym.types import SkillSpec

INDEX_FORMAT = 2
INDEX_MANIFEST = "skillgym-index.json"
_SKILLS_FILE = "skills.jsonl"
_EMBEDDINGS_FILE = "embeddings.npy"
_GROUPS_FILE = "groups.npy"
# Routing: a candidate's score blends embedding cosine and the share of the task's words that
# its description covers; both lie in [0, 1], so thresholds mean the same for any roster.
ROUTE_EMBEDDING_WEIGHT = 0.6
# Set on the tuning half and the off-topic requests in the benchmark: on-topic best scores sat
# above 0.15, most off-topic ones below. A margin threshold is the router's choice (rosters often
# hold two agents for one job, whose scores are close by design), so none by default.
ROUTE_MIN_SCORE = 0.15
ROUTE_MIN_MARGIN = 0.0


class AmbiguousSkillName(LookupError):
    """Several skills share a name; the message lists them and how to pick one."""


class RouteDecision(BaseModel):
    """Which roster member should take a task, how sure that is, and whether to delegate at all."""

    choice: str | None = Field(description="The chosen candidate, or None when the router should not delegate.")
    best: str | None = Field(description="The best-scoring candidate, chosen or not.")
    score: float = Field(description="The best candidate's score in [0, 1].")
    margin: float = Field(description="Best score minus the runner-up's (the whole score when alone).")
    ranking: list[tuple[str, float]] = Field(description="Every candidate with its score, best first.")
    reason: str


class SkillLibrary:
    """Skills and agents loaded from any number of folders (or files, or manifests).

    Args:
        paths: folders, skill folders, agent files or manifests to load.
        skills: already-loaded skills to add.
        embedding_model: ``"wordllama"`` (offline, shipped in the wordllama wheel), ``"minilm"``
            (all-MiniLM-L6-v2, from a pinned PyPI wheel), ``"auto"`` (MiniLM for small libraries
            when its files are here, else WordLlama: :func:`~skillgym.skills.search.auto_embedding_model`)
            or a local sentence-transformers folder; needed for the embedding and hybrid modes.
        embedder: a ready embedder (overrides ``embedding_model``).
        field_weights: BM25 weight per field (name, description, examples, tools, head, body).
        group_duplicates: fold near-duplicate skills into one hit (MinHash).
    """

    def __init__(
        self,
        paths: Iterable[str | Path] = (),
        *,
        skills: Iterable[SkillSpec] = (),
        embedding_model: str | Path | None = None,
        embedder: Embedder | None = None,
        field_weights: dict[str, float] | None = None,
        group_duplicates: bool = True,
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
        if embedding_model == AUTO:
            embedding_model = auto_embedding_model(len(self._skills))
        self._embedding_model = (
            embedding_model if embedding_model is None or is_builtin_model(embedding_model) else Path(embedding_model)
        )
        self._embedder = embedder
        self._vectors: np.ndarray | None = None
        self.group_duplicates = group_duplicates
        self._groups: np.ndarray | None = None
        self.hybrid_weights = dict(HYBRID_WEIGHTS)
        self._route_vectors: dict[str, np.ndarray] = {}
        self._route_words: dict[str, frozenset[str]] = {}

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

    @property
    def embedding_model_id(self) -> str | None:
        """The embedder's id when one is configured (loaded or not), else None."""
        if self._embedder is not None:
            return self._embedder.model_id
        return str(self._embedding_model) if self._embedding_model is not None else None

    # -- search ---------------------------------------------------------------------------------

    def search(self, query: str, k: int = 5, mode: SearchMode = "bm25") -> list[SearchHit]:
        """The ``k`` best matches for ``query``; each hit says why it matched.

        Args:
            query: the request, in the user's words.
            k: number of hits; near-duplicate copies count once (see ``SearchHit.duplicates``).
            mode: ``bm25`` (lexical), ``embedding`` (semantic) or ``hybrid`` (both, fused).

        Returns:
            Hits, best first.
        """
        if mode not in MODES:
            raise ValueError(f"unknown search mode {mode!r}; use bm25, embedding or hybrid")
        if k <= 0 or not self._skills:
            return []
        groups = self._group_ids()
        return [self._hit(query, mode, i, score, groups, why) for i, score, why in self._ranked(query, mode, k)]

    def _collapse(self, scores: np.ndarray, depth: int, *, positive_only: bool) -> list[int]:
        """The best member of each of the ``depth`` best near-duplicate groups, best first.

        Collapsing before fusing (instead of filtering a fused list) keeps a query in
        milliseconds when a skill has a hundred copies: one sort, no re-ranking deeper and deeper.
        """
        if not self.group_duplicates:
            return top_k(scores, depth, positive_only=positive_only)
        order = np.argsort(-scores, kind="stable")
        if positive_only:
            order = order[scores[order] > 0]
        _, first = np.unique(self._group_ids()[order], return_index=True)
        first.sort()
        return [int(i) for i in order[first[:depth]]]

    def _ranked(self, query: str, mode: SearchMode, depth: int) -> list[tuple[int, float, tuple[str, str]]]:
        """``(skill index, score, (bm25 side, embedding side) of its explanation)`` for the best
        ``depth`` groups; the matched words are added by :meth:`_hit`, for the shown hits only."""
        if mode == "bm25":
            scores = self._bm25_scores(query)
            return [(i, float(scores[i]), ("", "")) for i in self._collapse(scores, depth, positive_only=True)]
        cosine = self._embedding_scores(query)
        if mode == "embedding":
            return [
                (i, float(cosine[i]), ("", f"embedding similarity {cosine[i]:.3f}"))
                for i in self._collapse(cosine, depth, positive_only=False)
            ]
        # Hybrid: fuse the two rankings of groups well beyond the depth asked for, so a skill
        # ranked modestly by both can still beat one ranked well by only one.
        groups = self._group_ids()
        pool = max(50, 4 * depth)
        lexical = self._collapse(self._bm25_scores(query), pool, positive_only=True)
        semantic = self._collapse(cosine, pool, positive_only=False)
        # A group's representative: its best lexical member (whose matched words explain the
        # hit), else its best semantic one.
        representative = {int(groups[i]): i for i in semantic}
        representative.update({int(groups[i]): i for i in lexical})
        lexical_groups = [int(groups[i]) for i in lexical]
        semantic_groups = [int(groups[i]) for i in semantic]
        fused = reciprocal_rank_fusion(
            [lexical_groups, semantic_groups],
            k=HYBRID_RRF_K,
            weights=[self.hybrid_weights["bm25"], self.hybrid_weights["embedding"]],
        )
        best = sorted(fused, key=lambda g: (-fused[g], g))[:depth]
        lexical_rank = {g: r for r, g in enumerate(lexical_groups, start=1)}
        semantic_rank = {g: r for r, g in enumerate(semantic_groups, start=1)}
        out = []
        for g in best:
            i = representative[g]
            why = (
                f"bm25 rank {lexical_rank[g]}" if g in lexical_rank else "no bm25 match",
                f"embedding rank {semantic_rank[g]} (similarity {cosine[i]:.3f})"
                if g in semantic_rank
                else f"embedding similarity {cosine[i]:.3f}",
            )
            out.append((i, fused[g], why))
        return out

    def _hit(
        self, query: str, mode: SearchMode, i: int, score: float, groups: np.ndarray, why: tuple[str, str]
    ) -> SearchHit:
        skill = self._skills[i]
        copies = [int(j) for j in np.flatnonzero(groups == groups[i]) if j != i] if self.group_duplicates else []
        dup = {
            "duplicates": [self._skills[j].source_path or self._skills[j].name for j in copies[:MAX_LISTED_DUPLICATES]],
            "duplicate_count": len(copies),
        }
        if mode == "embedding":
            return SearchHit(skill=skill, score=score, why=why[1], **dup)
        matched = self._bm25.matches(query, i)
        if mode == "bm25":
            return SearchHit(skill=skill, score=score, why=explain(matched), matched=matched, **dup)
        lexical, semantic = why
        if lexical != "no bm25 match":
            lexical = f"{lexical} ({explain(matched)})"
        return SearchHit(skill=skill, score=score, why=f"{lexical}; {semantic}", matched=matched, **dup)

    def _group_ids(self) -> np.ndarray:
        if self._groups is None or len(self._groups) != len(self._skills):
            self._groups = (
                near_duplicate_groups(self._skills)
                if self.group_duplicates
                else np.arange(len(self._skills), dtype=np.int32)
            )
        return self._groups

    def duplicate_groups(self) -> list[list[SkillSpec]]:
        """Every group of two or more near-duplicate skills (MinHash), largest first."""
        groups = self._group_ids()
        members: dict[int, list[SkillSpec]] = {}
        for i, g in enumerate(groups):
            members.setdefault(int(g), []).append(self._skills[i])
        return sorted((m for m in members.values() if len(m) > 1), key=len, reverse=True)

    def _bm25_scores(self, query: str) -> np.ndarray:
        self._ensure_bm25()
        return self._bm25.scores(query, len(self._skills))

    def _ensure_bm25(self) -> None:
        if not self._bm25_ready:
            self._bm25.build(self._skills)
            self._bm25_ready = True

    def _get_embedder(self) -> Embedder:
        if self._embedder is None:
            if self._embedding_model is None:
                raise SearchError(
                    "embedding and hybrid search need an embedding model: pass embedding_model='wordllama' "
                    "(offline, pip install wordllama) or a local sentence-transformers folder "
                    "(CLI: --embedding-model), or use mode='bm25'"
                )
            self._embedder = load_embedder(self._embedding_model)
        return self._embedder

    def _doc_vectors(self) -> np.ndarray:
        if self._vectors is None:
            self._vectors = skill_vectors(self._get_embedder(), self._skills)
        return self._vectors

    def _embedding_scores(self, query: str) -> np.ndarray:
        vectors = self._doc_vectors()
        return cosine_scores(vectors, self._get_embedder().encode([query])[0])

    def build(self) -> SkillLibrary:
        """Compute everything a search needs now (BM25, embeddings if configured, groups)
        instead of on the first query."""
        self._ensure_bm25()
        if self._embedder is not None or self._embedding_model is not None:
            self._doc_vectors()
        self._group_ids()
        return self

    # -- routing --------------------------------------------------------------------------------

    def route(
        self,
        task_text: str,
        candidates: Mapping[str, str] | Sequence[SkillSpec | str] | None = None,
        *,
        min_score: float = ROUTE_MIN_SCORE,
        min_margin: float = ROUTE_MIN_MARGIN,
    ) -> RouteDecision:
        """Pick the roster member whose description fits a task best, or decline.

        The score of a candidate is ``0.6 * cosine + 0.4 * coverage``: the embedding cosine of
        task and description (left out when no embedder is available) and the share of the
        task's content words that the candidate's name and description contain. Both are
        absolute, so a router can decline when nothing fits (``score < min_score``) or when two
        candidates fit equally well (``margin < min_margin``).

        Args:
            task_text: the task, as the user or the orchestrator states it.
            candidates: ``{name: description}``, skills, or names of skills in this library;
                None means every skill in the library.
            min_score: below it the router should handle the task itself.
            min_margin: below it the choice is a coin toss and is declined too (0 by default:
                rosters often hold two agents for one job).

        Returns:
            A :class:`RouteDecision`; ``choice`` is None when declined.
        """
        roster = self._roster(candidates)
        if not roster:
            return RouteDecision(choice=None, best=None, score=0.0, margin=0.0, ranking=[], reason="no candidates")
        names = list(roster)
        stems = list(dict.fromkeys(self._tokenizer(task_text)))
        coverage = np.zeros(len(names))
        if stems:
            for n, name in enumerate(names):
                text = f"{_bare(name)} {roster[name]}"
                if text not in self._route_words:
                    if len(self._route_words) > 4096:
                        self._route_words.clear()
                    self._route_words[text] = frozenset(self._tokenizer(text))
                coverage[n] = sum(s in self._route_words[text] for s in stems) / len(stems)
        embedder = self._route_embedder()
        if embedder is not None:
            texts = [f"{_bare(n)}: {roster[n]}" for n in names]
            missing = [t for t in dict.fromkeys(texts) if t not in self._route_vectors]
            if len(self._route_vectors) + len(missing) > 4096:  # bounded: rosters change over a long run
                self._route_vectors.clear()
                missing = list(dict.fromkeys(texts))
            if missing:
                self._route_vectors.update(zip(missing, embedder.encode(missing)))
            # A roster is re-sent with every task; its descriptions are encoded once.
            matrix = np.stack([self._route_vectors[t] for t in texts])
            cosine = np.clip(matrix @ embedder.encode([task_text])[0], 0.0, 1.0)
            scores = ROUTE_EMBEDDING_WEIGHT * cosine + (1 - ROUTE_EMBEDDING_WEIGHT) * coverage
        else:
            scores = coverage
        order = np.argsort(-scores, kind="stable")
        ranking = [(names[i], round(float(scores[i]), 4)) for i in order]
        best, score = ranking[0]
        margin = score - ranking[1][1] if len(ranking) > 1 else score
        if score < min_score:
            choice, reason = None, f"best match {best!r} scores {score:.3f} < {min_score}: nothing fits well"
        elif margin < min_margin:
            choice, reason = (
                None,
                (f"{best!r} and {ranking[1][0]!r} fit almost equally (margin {margin:.3f} < {min_margin})"),
            )
        else:
            choice, reason = best, f"{best!r} scores {score:.3f}, {margin:.3f} ahead of the next"
        return RouteDecision(
            choice=choice, best=best, score=score, margin=round(margin, 4), ranking=ranking, reason=reason
        )

    def _roster(self, candidates: Mapping[str, str] | Sequence[SkillSpec | str] | None) -> dict[str, str]:
        if candidates is None:
            return {s.name: s.description for s in self._skills}
        if isinstance(candidates, Mapping):
            return {str(k): str(v) for k, v in candidates.items()}
        roster: dict[str, str] = {}
        for c in candidates:
            # A name given as "folder/name" stays the key, so two catalogs' sql-pro stay apart.
            spec = c if isinstance(c, SkillSpec) else self.get(c)
            roster[c if isinstance(c, str) else spec.name] = spec.description
        return roster

    def _route_embedder(self) -> Embedder | None:
        """The library's embedder, else the offline default; None leaves routing lexical."""
        if self._embedder is None and self._embedding_model is None:
            model = default_embedding_model()
            if model is None:
                return None
            self._embedding_model = model
        return self._get_embedder()

    # -- persistence ----------------------------------------------------------------------------

    def save(self, folder: str | Path) -> Path:
        """Write the library, its BM25 index, near-duplicate groups and embeddings (when an
        embedder is configured) to ``folder``.

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
        self._ensure_bm25()
        (staging / "bm25").mkdir()
        self._bm25.save(staging / "bm25")
        np.save(staging / _GROUPS_FILE, self._group_ids())
        model_id = None
        if self._embedder is not None or self._embedding_model is not None:
            np.save(staging / _EMBEDDINGS_FILE, np.asarray(self._doc_vectors(), dtype=np.float32))
            model_id = self._get_embedder().model_id
        write_json(
            staging / INDEX_MANIFEST,
            {
                "format": INDEX_FORMAT,
                "count": len(self._skills),
                "paths": [str(p.resolve()) for p in self.paths],
                "field_weights": self._bm25.weights,
                "hybrid_weights": self.hybrid_weights,
                "stemming": self._tokenizer.stemming,
                "embedding_model": model_id,
                "group_duplicates": self.group_duplicates,
            },
        )
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
        mmap: bool = True,
    ) -> SkillLibrary:
        """Open an index written by :meth:`save` without re-reading the skill files.

        Args:
            folder: the index folder.
            embedding_model: overrides the model recorded in the index (its vectors are then
                recomputed with the new model).
            embedder: a ready embedder to use for queries.
            mmap: memory-map the BM25 score matrices instead of reading them.

        Returns:
            The library, ready to search.
        """
        root = Path(folder).expanduser()
        manifest_file = root / INDEX_MANIFEST
        if not manifest_file.is_file():
            raise SearchError(
                f"{root} is not a skill index (no {INDEX_MANIFEST}); build one with `skillgym skills index`"
            )
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        if manifest.get("format") != INDEX_FORMAT:
            raise SearchError(
                f"{manifest_file}: index format {manifest.get('format')} is not {INDEX_FORMAT}; rebuild it"
            )
        with (root / _SKILLS_FILE).open(encoding="utf-8") as lines:
            skills = [SkillSpec.model_validate_json(line) for line in lines if line.strip()]
        recorded = manifest.get("embedding_model")
        if embedding_model == AUTO:
            # An index keeps the model it was built with; "auto" only picks one for an index without.
            embedding_model = None if recorded else auto_embedding_model(int(manifest.get("count", 0)))
        # The same model named differently ("wordllama" vs its recorded id) keeps the stored vectors.
        same_model = embedding_model is None or _model_id(embedding_model) == recorded
        model = recorded if same_model else embedding_model
        lib = cls(
            skills=skills,
            embedding_model=model,
            embedder=embedder,
            field_weights=manifest.get("field_weights"),
            group_duplicates=manifest.get("group_duplicates", True),
        )
        lib.hybrid_weights.update(manifest.get("hybrid_weights") or {})
        lib.paths = [Path(p) for p in manifest.get("paths", [])]
        if manifest.get("stemming") != lib._tokenizer.stemming:
            raise SearchError(
                f"{root} was built {'with' if manifest.get('stemming') else 'without'} stemming but PyStemmer is "
                f"{'missing' if manifest.get('stemming') else 'installed'} here; rebuild the index"
            )
        lib._bm25.load(root / "bm25", lib._skills, mmap=mmap)
        lib._bm25_ready = True
        if (root / _GROUPS_FILE).is_file():
            lib._groups = np.load(root / _GROUPS_FILE)
        vectors = root / _EMBEDDINGS_FILE
        if vectors.is_file() and same_model:
            # Read, not mapped: 10 MB per 10,000 skills loads in milliseconds, and a matrix-vector
            # product over a memory map measured several times slower per query.
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


def _bare(name: str) -> str:
    """A roster name as words: "voltagent-subagents/sql-pro" -> "sql pro"."""
    return name.rpartition("/")[2].replace("-", " ").replace("_", " ")


def _model_id(model: str | Path) -> str:
    return builtin_model_id(model) if is_builtin_model(model) else str(Path(model).expanduser().resolve())


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
