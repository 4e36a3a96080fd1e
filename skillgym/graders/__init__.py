"""Graders: score a finished episode in [0, 1] and say why."""

from skillgym.graders.base import Grader
from skillgym.graders.checks import Check, CommandChecks
from skillgym.graders.compactness import compactness, trace_chars
from skillgym.graders.composite import Compactness, Composite, Part
from skillgym.graders.config import GraderConfigError, TaskReferenceGrader, grader_from_config
from skillgym.graders.match import MATCHERS, AnswerMatch, normalize


def __getattr__(name: str):
    # The rubric judge pulls in the HTTP client; load it only when asked for.
    if name == "RubricJudge":
        from skillgym.graders.rubric import RubricJudge

        return RubricJudge
    raise AttributeError(name)


__all__ = [
    "MATCHERS",
    "AnswerMatch",
    "Check",
    "CommandChecks",
    "Compactness",
    "Composite",
    "Grader",
    "GraderConfigError",
    "Part",
    "RubricJudge",
    "TaskReferenceGrader",
    "compactness",
    "grader_from_config",
    "normalize",
    "trace_chars",
]
