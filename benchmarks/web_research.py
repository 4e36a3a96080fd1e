"""web-research-v0 benchmark: index build, start-up, shared memory, search latency under load.

    python -m skillgym.benchmarks.web_research --json
    python -m skillgym.benchmarks.web_research --pages 5000 --procs 2 --episodes 8 --json   # small

Reports (JSON):

- ``build``: seconds and bytes to build the BM25 index and page store from the cached HotpotQA
  file (``--pages N``: the first N pages only), into a temporary folder (the cache is untouched);
- ``startup``: wall seconds of a fresh Python process that makes the env's spec from the cached
  index and answers one search (the "later uses start in <= 2 s" check), best and median of 3;
- ``memory``: ``--procs`` processes open the default index at once and run searches and page
  reads; each reports RSS, PSS and private memory from ``/proc/self/smaps_rollup``. The score
  matrix and page texts are memory-mapped, so their pages are shared. Two baselines in the same
  run: ``bare`` (the same imports, no index: what a process costs anyway) and ``copy`` (the
  score matrix read into each process, ``mmap=False``). Per-process private memory above
  ``bare`` is what each process adds (vocabulary and URL tables are Python objects, private);
- ``latency``: ``web_search`` latency p50/p99 with ``--episodes`` concurrent episodes (threads
  calling the host-side tool, as ``SkillEnv.step`` does), each waiting ``--think`` seconds
  between searches (a policy's turn), and again with no wait (saturation).

Timings depend on the machine's load: run it alone for numbers to quote.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from skillgym.envs.web_research import WebSearch, hotpotqa_index, make_spec
from skillgym.envs.web_research.corpus import pages_from_questions
from skillgym.envs.web_research.data import load_questions
from skillgym.envs.web_research.search import LocalIndex, build_index

_CHILD = r"""
import json, sys, time
from pathlib import Path
folder, mode, queries = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
import bm25s
from skillgym.envs.web_research.search import LocalIndex, _OpenIndex
index = LocalIndex(folder)
if mode != "bare":  # bare: the same imports, no index (what a process costs anyway)
    opened = index._index()
    if mode == "copy":  # the baseline: the score matrix read into this process's memory
        opened.bm25 = bm25s.BM25.load(str(Path(folder) / "bm25"), mmap=False, show_progress=False)
    for q in queries:
        for hit in index.search(q, 5):
            index.fetch(hit.url)
mem = {}
for line in open("/proc/self/smaps_rollup"):
    parts = line.split()
    if parts[0].rstrip(":") in ("Rss", "Pss", "Private_Clean", "Private_Dirty", "Shared_Clean"):
        mem[parts[0].rstrip(":")] = int(parts[1]) / 1024
print(json.dumps(mem), flush=True)
sys.stdin.read()  # stay alive until every sibling has reported, so their pages are shared at once
"""


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def bench_build(pages_limit: int | None) -> dict[str, Any]:
    questions = load_questions(progress=False)
    pages = pages_from_questions(questions)[:pages_limit]
    with tempfile.TemporaryDirectory(prefix="web-research-bench-") as tmp:
        folder = Path(tmp) / "index"
        started = time.perf_counter()
        build_index(pages, folder)
        seconds = time.perf_counter() - started
        return {
            "pages": len(pages),
            "seconds": round(seconds, 2),
            "bytes": _folder_bytes(folder),
            "text_bytes": sum(len(p.text.encode()) for p in pages),
        }


def bench_startup(runs: int = 3) -> dict[str, Any]:
    code = (
        "import skillgym; s = skillgym.make_spec('web-research-v0'); "
        "t = [x for x in s.host_tools if x.name == 'web_search'][0]; t.backend.search('Scott Derrickson', 5)"
    )
    out: dict[str, Any] = {"runs": runs}
    # The baseline in the same run: a process that only imports skillgym (what any env costs).
    for label, program in (("import_only", "import skillgym"), ("env", code)):
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", program], check=True)
            times.append(time.perf_counter() - started)
        out[label] = {"best_s": round(min(times), 3), "median_s": round(statistics.median(times), 3)}
    return out


def bench_memory(folder: Path, procs: int, queries: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"index_bytes": _folder_bytes(folder), "procs": procs}
    for label in ("bare", "mmap", "copy"):
        children = [
            subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(folder), label, json.dumps(queries)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(procs)
        ]
        reports = [json.loads(c.stdout.readline()) for c in children]
        for c in children:
            c.communicate("")
        private = [r["Private_Clean"] + r["Private_Dirty"] for r in reports]
        out[label] = {
            "rss_mb_each": round(statistics.mean(r["Rss"] for r in reports), 1),
            "pss_mb_sum": round(sum(r["Pss"] for r in reports), 1),
            "private_mb_each": round(statistics.mean(private), 1),
            "shared_mb_each": round(statistics.mean(r["Shared_Clean"] for r in reports), 1),
        }
    return out


def bench_latency(episodes: int, think: float, searches: int, queries: list[str]) -> dict[str, Any]:
    tool = next(t for t in make_spec().host_tools if isinstance(t, WebSearch))
    tool(None, WebSearch.Args(query="warm up", k=5))
    result: dict[str, Any] = {"episodes": episodes, "searches_per_episode": searches}
    for label, wait in (("with_think", think), ("saturated", 0.0)):
        latencies: list[float] = []
        lock = threading.Lock()

        def episode(i: int, wait: float = wait, latencies: list[float] = latencies, lock: Any = lock) -> None:
            mine = []
            for j in range(searches):
                if wait:
                    time.sleep(wait)
                query = queries[(i * searches + j) % len(queries)]
                started = time.perf_counter()
                tool(None, WebSearch.Args(query=query, k=5))
                mine.append(time.perf_counter() - started)
            with lock:
                latencies.extend(mine)

        threads = [threading.Thread(target=episode, args=(i,)) for i in range(episodes)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - started
        latencies.sort()
        result[label] = {
            "think_s": wait,
            "p50_ms": round(1000 * latencies[len(latencies) // 2], 2),
            "p99_ms": round(1000 * latencies[int(len(latencies) * 0.99) - 1], 2),
            "searches_per_s": round(len(latencies) / wall, 1),
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=None, help="Build the index over the first N pages only.")
    parser.add_argument("--procs", type=int, default=8, help="Processes sharing the index at once.")
    parser.add_argument("--episodes", type=int, default=32, help="Concurrent episodes searching.")
    parser.add_argument("--think", type=float, default=0.1, help="Seconds between an episode's searches.")
    parser.add_argument("--searches", type=int, default=20, help="Searches per episode.")
    parser.add_argument("--skip", nargs="*", default=[], choices=["build", "startup", "memory", "latency"])
    parser.add_argument("--json", action="store_true", help="Print JSON (the default output is JSON too).")
    args = parser.parse_args(argv)
    folder = hotpotqa_index(progress=sys.stderr.isatty())
    questions = [t.prompt for t in make_spec().tasks.tasks("test")[:200]]
    report: dict[str, Any] = {"cpus": os.cpu_count(), "index": str(folder), "pages": len(LocalIndex(folder))}
    if "build" not in args.skip:
        report["build"] = bench_build(args.pages)
    if "startup" not in args.skip:
        report["startup"] = bench_startup()
    if "memory" not in args.skip:
        report["memory"] = bench_memory(folder, args.procs, questions[:50])
    if "latency" not in args.skip:
        report["latency"] = bench_latency(args.episodes, args.think, args.searches, questions)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
