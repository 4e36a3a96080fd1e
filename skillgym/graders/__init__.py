"""Graders: score a finished episode in [0, 1] and say why."""

from skillgym.graders.base import Grader
from skillgym.graders.compactness import compactness, trace_chars
from skillgym.graders.match import MATCHERS, AnswerMatch, normalize

__all__ = ["MATCHERS", "AnswerMatch", "Grader", "compactness", "normalize", "trace_chars"]
