"""The pipeline on top of the stages: ``distill`` runs teacher rollouts → export → SFT →
side-by-side evaluation → report, and :mod:`skillgym.pipeline.cli` assembles the full
``skillgym`` command line from the core's commands and each stage's own.

    from skillgym.pipeline import DistillConfig, run_distill
"""

from skillgym.pipeline.distill import DistillConfig, DistillReport, run_distill

__all__ = ["DistillConfig", "DistillReport", "run_distill"]
