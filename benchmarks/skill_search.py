"""Skill-search benchmark: project-written user requests -> the skills that should answer them.

    python -m skillgym.benchmarks.skill_search --json
    python -m skillgym.benchmarks.skill_search --corpus DIR --embedding-model MODEL_DIR --json

Metrics, per search mode, over the labelled queries in ``data/skill_search_queries.json``:

- ``recall@k``: share of queries with at least one acceptable skill in the top k (each query
  lists every acceptable answer, e.g. both a debugging skill and a debugger agent);
- ``full_recall@k``: share of all acceptable answers found in the top k (stricter);
- ``mrr``: mean reciprocal rank of the first acceptable answer (0 when none in the top k).

The queries were written as a user would ask, before looking at rankings, and are not tuned
to the index. The JSON also lists every miss, so a regression can be read, not just counted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from skillgym.skills.library import SkillLibrary
from skillgym.skills.search import SearchMode

HERE = Path(__file__).resolve().parent
QUERIES = HERE / "data" / "skill_search_queries.json"
# benchmarks/ sits at the repository root, next to which the shared corpus lives.
DEFAULT_CORPUS = HERE.parent.parent / "shared" / "skills-corpus"


def find_corpus() -> Path | None:
    """The labelled corpus: ``$SKILLGYM_CORPUS``, else ``<repo>/../shared/skills-corpus``."""
    env = os.environ.get("SKILLGYM_CORPUS")
    candidate = Path(env) if env else DEFAULT_CORPUS
    return candidate if candidate.is_dir() else None


class LabelledQuery(BaseModel):
    id: str
    query: str
    expected: list[str]


def load_queries(path: Path = QUERIES) -> list[LabelledQuery]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return [LabelledQuery.model_validate(q) for q in data["queries"]]


def evaluate(lib: SkillLibrary, queries: list[LabelledQuery], mode: SearchMode, k: int) -> dict[str, Any]:
    hits_at_k = full = reciprocal = 0.0
    misses = []
    started = time.perf_counter()
    for q in queries:
        names = [hit.skill.name for hit in lib.search(q.query, k=k, mode=mode)]
        ranks = [i for i, name in enumerate(names, start=1) if name in q.expected]
        found = {name for name in names if name in q.expected}
        hits_at_k += bool(ranks)
        full += len(found) / min(len(set(q.expected)), k)
        reciprocal += 1.0 / ranks[0] if ranks else 0.0
        if not ranks or ranks[0] > 1:
            misses.append({"id": q.id, "query": q.query, "expected": q.expected, "got": names,
                           "first_rank": ranks[0] if ranks else None})
    seconds = time.perf_counter() - started
    n = len(queries)
    return {
        f"recall@{k}": round(hits_at_k / n, 4),
        f"full_recall@{k}": round(full / n, 4),
        "mrr": round(reciprocal / n, 4),
        "queries": n,
        "ms_per_query": round(1000 * seconds / n, 3),
        "not_first": misses,
    }


def run(corpus: Path, *, modes: list[SearchMode], k: int = 5, embedding_model: Path | None = None,
        queries_file: Path = QUERIES) -> dict[str, Any]:
    queries = load_queries(queries_file)
    started = time.perf_counter()
    lib = SkillLibrary([corpus], embedding_model=embedding_model)
    load_seconds = time.perf_counter() - started
    known = {s.name for s in lib}
    unknown = sorted({name for q in queries for name in q.expected} - known)
    if unknown:
        raise SystemExit(f"{queries_file}: expected names not in the corpus {corpus}: {', '.join(unknown)}")
    return {
        "benchmark": "skill_search",
        "corpus": str(corpus),
        "skills": len(lib),
        "load_seconds": round(load_seconds, 3),
        "k": k,
        "modes": {mode: evaluate(lib, queries, mode, k) for mode in modes},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=find_corpus() or DEFAULT_CORPUS,
                        help="folder of skills and agents (default: $SKILLGYM_CORPUS or ../shared/skills-corpus)")
    parser.add_argument("--queries", type=Path, default=QUERIES, help="labelled query file")
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument("--embedding-model", type=Path, default=None,
                        help="local sentence-transformers model folder; adds embedding and hybrid modes")
    parser.add_argument("--json", action="store_true", help="print the full JSON report")
    args = parser.parse_args(argv)
    if not args.corpus.is_dir():
        parser.error(f"corpus folder {args.corpus} not found; pass --corpus")
    modes: list[SearchMode] = ["bm25"] + (["embedding", "hybrid"] if args.embedding_model else [])
    report = run(args.corpus, modes=modes, k=args.k, embedding_model=args.embedding_model, queries_file=args.queries)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for mode, result in report["modes"].items():
            print(f"{mode:9s} recall@{args.k}={result[f'recall@{args.k}']:.3f} "
                  f"full_recall@{args.k}={result[f'full_recall@{args.k}']:.3f} mrr={result['mrr']:.3f} "
                  f"({result['queries']} queries, {report['skills']} skills)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
