"""Skill-search benchmark: user requests -> the skills that should answer them, and scale.

    python -m skillgym.benchmarks.skill_search --json
    python -m skillgym.benchmarks.skill_search --scale 0            # quality only
    python -m skillgym.benchmarks.skill_search --embedding-model minilm --json    # opt-in encoder
    python -m skillgym.benchmarks.skill_search --embedding-model MODEL_DIR --json

Quality, per search mode (bm25, embedding, hybrid), over the labelled queries in
``data/skill_search_queries.json``, reported for the tuning half, the held-out half and all:

- ``recall@1`` (top-1) and ``recall@k``: share of queries with an acceptable skill first / in
  the top k (each query lists every acceptable answer, e.g. a debugging skill and a debugger agent);
- ``full_recall@k``: share of all acceptable answers found in the top k (stricter);
- ``mrr``: mean reciprocal rank of the first acceptable answer (0 when none in the top k).

The split is deterministic (a hash of each query id, alternating within each query style), and
ranking parameters in :mod:`skillgym.skills.search` were tuned on the tuning half only, so the
held-out numbers are the fair ones. Two styles of query exist: ``project`` (written by the
people who built the index) and ``user`` (symptoms, goals and slang, as users ask).

Scale (``--scale N``, default 10,000): N skill files generated in a temporary folder from the
corpus, each a reworded, renamed or re-collected copy of a corpus skill (never committed); the
report gives load, build, save and reload seconds, query latency percentiles, how many
near-duplicate groups MinHash found, and whether each top 5 holds five different skills. Timings
depend on the machine's load: run the benchmark alone for numbers to quote.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from skillgym.skills.embed import MiniLMEmbedder
from skillgym.skills.library import SkillLibrary
from skillgym.skills.search import (
    AUTO,
    MODES,
    SearchMode,
    builtin_model_id,
    default_embedding_model,
    is_builtin_model,
)
from skillgym.types import SkillSpec

HERE = Path(__file__).resolve().parent
QUERIES = HERE / "data" / "skill_search_queries.json"
# benchmarks/ sits at the repository root, next to which the shared corpus lives.
DEFAULT_CORPUS = HERE.parent.parent / "shared" / "skills-corpus"
HALVES = ("tuning", "heldout")
DEFAULT_SCALE = 10_000


def find_corpus() -> Path | None:
    """The labelled corpus: ``$SKILLGYM_CORPUS``, else ``<repo>/../shared/skills-corpus``."""
    env = os.environ.get("SKILLGYM_CORPUS")
    candidate = Path(env) if env else DEFAULT_CORPUS
    return candidate if candidate.is_dir() else None


class LabelledQuery(BaseModel):
    id: str
    query: str
    expected: list[str]
    style: str = "project"


def load_queries(path: Path = QUERIES) -> list[LabelledQuery]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return [LabelledQuery.model_validate(q) for q in data["queries"]]


def split_queries(queries: list[LabelledQuery]) -> dict[str, list[LabelledQuery]]:
    """Deterministic halves: within each style, queries ordered by sha256(id) alternate between
    tuning and held-out, so both halves hold both styles in equal shares."""
    halves: dict[str, list[LabelledQuery]] = {h: [] for h in HALVES}
    for style in sorted({q.style for q in queries}):
        group = sorted(
            (q for q in queries if q.style == style), key=lambda q: hashlib.sha256(q.id.encode()).hexdigest()
        )
        for n, q in enumerate(group):
            halves[HALVES[n % 2]].append(q)
    return halves


def evaluate(
    lib: SkillLibrary, queries: list[LabelledQuery], mode: SearchMode, k: int, base_name: dict[str, str] | None = None
) -> dict[str, Any]:
    """Quality of one mode over some queries.

    Args:
        lib: the library to search.
        queries: labelled queries.
        mode: search mode.
        k: hits per query.
        base_name: source path -> the corpus skill a generated copy came from (scale runs).

    Returns:
        The metrics, latency and every query whose first acceptable answer was not first.
    """
    hits_at_1 = hits_at_k = full = reciprocal = 0.0
    misses = []
    latencies = []
    for q in queries:
        started = time.perf_counter()
        hits = lib.search(q.query, k=k, mode=mode)
        latencies.append(time.perf_counter() - started)
        names = [base_name.get(h.skill.source_path or "", h.skill.name) if base_name else h.skill.name for h in hits]
        ranks = [i for i, name in enumerate(names, start=1) if name in q.expected]
        found = {name for name in names if name in q.expected}
        hits_at_1 += bool(ranks) and ranks[0] == 1
        hits_at_k += bool(ranks)
        full += len(found) / min(len(set(q.expected)), k)
        reciprocal += 1.0 / ranks[0] if ranks else 0.0
        if not ranks or ranks[0] > 1:
            misses.append(
                {
                    "id": q.id,
                    "query": q.query,
                    "expected": q.expected,
                    "got": names,
                    "first_rank": ranks[0] if ranks else None,
                }
            )
    n = max(len(queries), 1)
    return {
        "recall@1": round(hits_at_1 / n, 4),
        f"recall@{k}": round(hits_at_k / n, 4),
        f"full_recall@{k}": round(full / n, 4),
        "mrr": round(reciprocal / n, 4),
        "queries": len(queries),
        "ms_per_query": round(1000 * sum(latencies) / n, 3),
        "not_first": misses,
    }


def run(
    corpus: Path,
    *,
    modes: list[SearchMode] | None = None,
    k: int = 5,
    embedding_model: str | Path | None = None,
    queries_file: Path = QUERIES,
    scale: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """The whole benchmark.

    Args:
        corpus: folder of skills and agents the queries are labelled against.
        modes: search modes to evaluate; None means every mode that can run here.
        k: hits per query.
        embedding_model: ``"wordllama"`` or a sentence-transformers folder; None picks the
            offline default when installed.
        queries_file: labelled queries.
        scale: generate this many skill files and report build, reload and query figures (0: skip).
        seed: seed of the generated library's wording.

    Returns:
        The JSON report.
    """
    queries = load_queries(queries_file)
    started = time.perf_counter()
    # No model named: what `skillgym skills search` picks for this library (MiniLM for a small
    # one when its files are here, else WordLlama; see auto_embedding_model).
    lib = SkillLibrary([corpus], embedding_model=embedding_model or AUTO)
    load_seconds = time.perf_counter() - started
    model = lib.embedding_model_id
    if modes is None:
        modes = list(MODES) if model else ["bm25"]
    known = {s.name for s in lib}
    unknown = sorted({name for q in queries for name in q.expected} - known)
    if unknown:
        raise SystemExit(f"{queries_file}: expected names not in the corpus {corpus}: {', '.join(unknown)}")
    halves = split_queries(queries)
    report: dict[str, Any] = {
        "benchmark": "skill_search",
        "corpus": str(corpus),
        "skills": len(lib),
        "load_seconds": round(load_seconds, 3),
        "k": k,
        "embedding_model": model,
        "split": {h: [q.id for q in qs] for h, qs in halves.items()},
        "modes": {mode: evaluate(lib, queries, mode, k) for mode in modes},
        "halves": {h: {mode: evaluate(lib, qs, mode, k) for mode in modes} for h, qs in halves.items()},
    }
    report["embedding_model"] = lib.embedding_model_id  # the loaded model's full id, now that it ran
    report["summary"] = {
        h: {mode: {m: r[m] for m in ("recall@1", f"recall@{k}", "mrr")} for mode, r in report["halves"][h].items()}
        for h in HALVES
    }
    # Routing as the orchestrator's router runs it: with the named model, else the offline
    # default (route thresholds are set on WordLlama; auto's MiniLM is for search).
    router = lib if embedding_model else SkillLibrary(skills=lib.skills, embedding_model=default_embedding_model())
    report["routing"] = evaluate_routing(router, halves["heldout"])
    report["routing"]["embedding_model"] = router.embedding_model_id
    if scale:
        # MiniLM needs a transformer pass per text (~0.2 s on two cores): 10,000 skills would take
        # most of an hour to index, so its runs measure scale with the offline default instead.
        scale_model = model
        if model and is_builtin_model(model) and builtin_model_id(model) == MiniLMEmbedder.model_id:
            scale_model = default_embedding_model()
        report["scale"] = run_scale(
            lib.skills,
            halves["heldout"],
            n=scale,
            k=k,
            seed=seed,
            modes=["hybrid" if "hybrid" in modes and scale_model else "bm25"],
            embedding_model=scale_model,
        )
    return report


# Requests no skill in the corpus serves: a router should keep these and not delegate.
OFF_TOPIC = [
    "bake a chocolate cake for my grandma's birthday",
    "what's the weather like in Paris tomorrow",
    "recommend a good fantasy novel for the holidays",
    "how many calories are in a banana",
    "plan a weekend hiking trip in the alps",
    "translate 'good morning' into Japanese",
    "who won the football match last night",
    "suggest a name for my new puppy",
]


def evaluate_routing(lib: SkillLibrary, queries: list[LabelledQuery]) -> dict[str, Any]:
    """``SkillLibrary.route`` with the whole corpus as the roster (names and descriptions only,
    as a router sees subagents): how often it picks an acceptable one, how often it declines a
    request it should take, and how often it declines requests nothing in the corpus serves."""
    roster = {}
    for skill in lib:
        roster.setdefault(skill.name, skill.description)  # two catalogs' sql-pro: one roster entry
    correct = declined = 0
    started = time.perf_counter()
    for q in queries:
        decision = lib.route(q.query, roster)
        correct += decision.choice in q.expected
        declined += decision.choice is None
    off = [lib.route(text, roster) for text in OFF_TOPIC]
    seconds = time.perf_counter() - started
    n = max(len(queries), 1)
    return {
        "roster": len(roster),
        "queries": len(queries),
        "accuracy": round(correct / n, 4),
        "declined_on_topic": round(declined / n, 4),
        "declined_off_topic": round(sum(d.choice is None for d in off) / len(off), 4),
        "ms_per_route": round(1000 * seconds / (len(queries) + len(off)), 2),
    }


# ---------------------------------------------------------------------------------------------
# scale


# Word swaps that change wording but not meaning; applied to a random share of occurrences.
_SYNONYMS = {
    "use": "apply",
    "create": "build",
    "creating": "building",
    "build": "construct",
    "make": "produce",
    "help": "assist",
    "helps": "assists",
    "need": "require",
    "comprehensive": "thorough",
    "ensure": "make sure",
    "quickly": "fast",
    "review": "assess",
    "analyze": "examine",
    "improve": "enhance",
    "complex": "complicated",
    "implement": "develop",
    "code": "source",
    "task": "job",
    "tasks": "jobs",
    "user": "person",
    "users": "people",
    "write": "author",
    "check": "verify",
    "fix": "repair",
    "issues": "problems",
    "always": "consistently",
    "important": "crucial",
    "best": "recommended",
    "guide": "handbook",
    "expert": "specialist",
}
_PREFIXES = ["", "", "", "acme-", "team-", "my-", "oss-", "pro-"]
_SUFFIXES = ["", "", "", "-pro", "-helper", "-v2", "-kit", "-plus"]
_NOTES = [
    "",
    "Maintained by the platform team.",
    "Forked from a community collection.",
    "Internal copy; see the original for updates.",
    "Adapted for our monorepo conventions.",
]


def _reword(text: str, rng: random.Random, rate: float) -> str:
    def swap(m: re.Match[str]) -> str:
        word = m.group(0)
        alt = _SYNONYMS.get(word.lower())
        if alt is None or rng.random() > rate:
            return word
        return alt.capitalize() if word[:1].isupper() else alt

    return re.sub(r"[A-Za-z]+", swap, text)


def _frontmatter_value(value: str) -> str:
    # A JSON string is a valid YAML double-quoted scalar: quotes, colons and newlines stay safe.
    return json.dumps(value, ensure_ascii=False)


def generate_library(base: list[SkillSpec], folder: Path, n: int, seed: int = 0) -> dict[str, int]:
    """Write ``n`` skill and agent files under ``folder``: reworded, renamed copies of ``base``
    spread over collections of 100, like a hub of vendored catalogs.

    Returns:
        Source path of each written file -> the index in ``base`` of the skill it copies.
    """
    rng = random.Random(seed)
    origin: dict[str, int] = {}
    for i in range(n):
        spec = base[i % len(base)]
        collection = folder / f"collection-{i // 100:03d}"
        name = f"{rng.choice(_PREFIXES)}{spec.name}{rng.choice(_SUFFIXES)}"
        description = _reword(spec.description, rng, 0.5)
        note = rng.choice(_NOTES)
        body = _reword(spec.instructions, rng, 0.2)
        if note:
            body = f"> {note}\n\n{body}"
        lines = ["---", f"name: {name}", f"description: {_frontmatter_value(description)}"]
        if spec.kind == "agent":
            if spec.allowed_tools:
                lines.append(f"tools: {', '.join(spec.allowed_tools)}")
            path = collection / "agents" / f"{name}-{i}.md"
        else:
            path = collection / f"{name}-{i}" / "SKILL.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join([*lines, "---", body]) + "\n", encoding="utf-8")
        origin[str(path)] = i % len(base)
    return origin


def run_scale(
    base: list[SkillSpec],
    queries: list[LabelledQuery],
    *,
    n: int = DEFAULT_SCALE,
    k: int = 5,
    seed: int = 0,
    modes: list[SearchMode] | None = None,
    embedding_model: str | Path | None = None,
) -> dict[str, Any]:
    """Build, save, reload and query a generated ``n``-skill library; report the figures."""
    modes = modes or ["hybrid"]
    root = Path(tempfile.mkdtemp(prefix="skillgym-scale-"))
    try:
        started = time.perf_counter()
        origin = generate_library(base, root / "skills", n, seed)
        base_name = {path: base[b].name for path, b in origin.items()}
        generate_seconds = time.perf_counter() - started

        # CPU seconds beside wall seconds: on a shared machine the wall clock mostly measures
        # the neighbours, CPU time what this index costs.
        started, cpu = time.perf_counter(), time.process_time()
        lib = SkillLibrary([root / "skills"], embedding_model=embedding_model)
        load_seconds, load_cpu = time.perf_counter() - started, time.process_time() - cpu
        started, cpu = time.perf_counter(), time.process_time()
        lib.build()
        build_seconds, build_cpu = time.perf_counter() - started, time.process_time() - cpu
        started, cpu = time.perf_counter(), time.process_time()
        lib.save(root / "index")
        save_seconds, save_cpu = time.perf_counter() - started, time.process_time() - cpu
        index_bytes = sum(f.stat().st_size for f in (root / "index").rglob("*") if f.is_file())

        started, cpu = time.perf_counter(), time.process_time()
        loaded = SkillLibrary.load(root / "index")
        reload_seconds, reload_cpu = time.perf_counter() - started, time.process_time() - cpu
        # The first query loads the embedder (about half a second for WordLlama); it is timed
        # apart so that the percentiles describe a warm index.
        started = time.perf_counter()
        loaded.search("warm up", k=k, mode=modes[0])
        first_query_seconds = time.perf_counter() - started

        by_mode = {}
        for mode in modes:
            latencies = []
            distinct = 0
            cpu = time.process_time()
            for q in queries:
                t0 = time.perf_counter()
                hits = loaded.search(q.query, k=k, mode=mode)
                latencies.append(1000 * (time.perf_counter() - t0))
                # Distinct corpus skills, not names: two catalogs' sql-pro agents are two skills.
                bases = {origin.get(h.skill.source_path or "", -1 - n) for n, h in enumerate(hits)}
                distinct += len(hits) == k and len(bases) == k
            query_cpu_ms = 1000 * (time.process_time() - cpu) / max(len(queries), 1)
            quality = evaluate(loaded, queries, mode, k, base_name=base_name)
            by_mode[mode] = {
                "query_ms_p50": round(statistics.median(latencies), 2),
                "query_ms_p90": round(sorted(latencies)[int(0.9 * (len(latencies) - 1))], 2),
                "query_cpu_ms_mean": round(query_cpu_ms, 2),
                "top_k_all_different_skills": round(distinct / max(len(queries), 1), 4),
                "recall@1": quality["recall@1"],
                f"recall@{k}": quality[f"recall@{k}"],
                "mrr": quality["mrr"],
                "queries": len(queries),
            }
        groups = loaded.duplicate_groups()
        grouped = sum(len(g) for g in groups)
        return {
            "skills": len(lib),
            "embedding_model": loaded.embedding_model_id,
            "generated_files": n,
            "base_skills": len(base),
            "cpu_count": os.cpu_count(),
            "generate_seconds": round(generate_seconds, 2),
            "load_seconds": round(load_seconds, 2),
            "build_seconds": round(build_seconds, 2),
            "load_and_build_seconds": round(load_seconds + build_seconds, 2),
            "save_seconds": round(save_seconds, 2),
            "reload_seconds": round(reload_seconds, 3),
            "save_and_reload_seconds": round(save_seconds + reload_seconds, 2),
            "cpu_seconds": {
                "load": round(load_cpu, 2),
                "build": round(build_cpu, 2),
                "save": round(save_cpu, 2),
                "reload": round(reload_cpu, 3),
            },
            "load_average_1min": round(os.getloadavg()[0], 2),
            "first_query_seconds": round(first_query_seconds, 3),
            "index_megabytes": round(index_bytes / 2**20, 1),
            "duplicate_groups": len(groups),
            "distinct_after_grouping": len(lib) - grouped + len(groups),
            "modes": by_mode,
            "note": "wall timings depend on machine load (see load_average_1min); quote numbers from a run on an "
            "otherwise idle machine",
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--corpus",
        type=Path,
        default=find_corpus() or DEFAULT_CORPUS,
        help="folder of skills and agents (default: $SKILLGYM_CORPUS or ../shared/skills-corpus)",
    )
    parser.add_argument("--queries", type=Path, default=QUERIES, help="labelled query file")
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument(
        "--embedding-model",
        default=None,
        help="'wordllama', 'minilm' or a local sentence-transformers model folder (default: what search picks: "
        "minilm for a small library when its files are here, else wordllama)",
    )
    parser.add_argument("--modes", default=None, help="comma-separated subset of bm25,embedding,hybrid")
    parser.add_argument(
        "--scale",
        type=int,
        default=DEFAULT_SCALE,
        help=f"generated skills for the scale figures (default {DEFAULT_SCALE}; 0 skips them)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the full JSON report")
    args = parser.parse_args(argv)
    if not args.corpus.is_dir():
        parser.error(f"corpus folder {args.corpus} not found; pass --corpus")
    modes = [m.strip() for m in args.modes.split(",")] if args.modes else None
    if modes and any(m not in MODES for m in modes):
        parser.error(f"--modes takes a subset of {', '.join(MODES)}")
    report = run(
        args.corpus,
        modes=modes,
        k=args.k,
        embedding_model=args.embedding_model,  # type: ignore[arg-type]
        queries_file=args.queries,
        scale=args.scale,
        seed=args.seed,
    )
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for half in (*HALVES, "all"):
        results = report["modes"] if half == "all" else report["halves"][half]
        for mode, result in results.items():
            print(
                f"{half:8s} {mode:9s} recall@1={result['recall@1']:.3f} recall@{args.k}={result[f'recall@{args.k}']:.3f} "
                f"mrr={result['mrr']:.3f} ({result['queries']} queries, {report['skills']} skills)"
            )
    r = report["routing"]
    print(
        f"routing (held-out, roster of {r['roster']}): accuracy {r['accuracy']:.3f}, declined on-topic "
        f"{r['declined_on_topic']:.3f}, declined off-topic {r['declined_off_topic']:.3f}"
    )
    if "scale" in report:
        s = report["scale"]
        print(
            f"scale: {s['skills']} skills, load+build {s['load_and_build_seconds']} s, save {s['save_seconds']} s, "
            f"reload {s['reload_seconds']} s, {s['duplicate_groups']} duplicate groups"
        )
        for mode, r in s["modes"].items():
            print(
                f"  {mode}: p50 {r['query_ms_p50']} ms, p90 {r['query_ms_p90']} ms, "
                f"top-{args.k} all different {r['top_k_all_different_skills']:.2f}, recall@{args.k} {r[f'recall@{args.k}']:.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
