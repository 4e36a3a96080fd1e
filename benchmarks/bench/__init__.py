"""The Part 2 benchmark harness: ``skillgym bench run`` and ``skillgym bench report``.

* :mod:`.roster`: a roster plus its baselines (``large``, ``small-base``, ``small-tuned``, ...);
* :mod:`.run`: one benchmark, every baseline, resumable (a rollout store per baseline);
* :mod:`.report`: tables with intervals, tokens and cost per model, latency, routing; plots.
"""

from .roster import BASELINE_KINDS, NO_SUBAGENTS, Baseline, BenchRoster, load_bench_roster
from .run import BenchRun, baseline_dir, read_bench_runs, run_bench

__all__ = [
    "BASELINE_KINDS",
    "NO_SUBAGENTS",
    "Baseline",
    "BenchRoster",
    "BenchRun",
    "baseline_dir",
    "load_bench_roster",
    "read_bench_runs",
    "run_bench",
]
