"""Graders from plain data, so a task file or an env spec can compose them without code.

    {"type": "composite", "parts": [
        {"type": "match", "mode": "numeric", "weight": 2},
        {"type": "check", "command": "pytest -q", "weight": 1},
        {"type": "rubric", "criteria": ["Explains the root cause"]},
        {"type": "compactness", "budget_chars": 300}]}

Types: ``match`` (:class:`AnswerMatch`: ``mode``, ``key``, tolerances), ``check`` /
``checks`` (:class:`CommandChecks`: ``command`` or ``checks``, plus ``key`` for the task's
own), ``rubric`` (:class:`RubricJudge`: ``judge``, ``criteria``), ``compactness``
(``budget_chars``), ``composite`` (``parts``, each with an optional ``weight`` and ``name``),
and ``reference`` (:class:`TaskReferenceGrader`: each task says how it is graded).

A rubric needs a judge model: ``judge`` in the config, else the ``judge`` passed in, else the
``SKILLGYM_JUDGE`` environment variable (``openai:MODEL@URL``).
"""

from __future__ import annotations

import json
import os
from typing import Any

from skillgym.graders.base import Grader
from skillgym.graders.checks import CommandChecks
from skillgym.graders.composite import Compactness, Composite, Part
from skillgym.graders.match import AnswerMatch
from skillgym.sandbox.base import Sandbox
from skillgym.types import Grade, Message, SkillSpec, Task

GRADER_TYPES = ("match", "check", "checks", "rubric", "compactness", "composite", "reference")


class GraderConfigError(ValueError):
    """A grader config is malformed; the message names the path inside the config."""


def default_judge(judge: Any = None) -> Any:
    return judge or os.environ.get("SKILLGYM_JUDGE") or None


def grader_from_config(
    config: dict[str, Any], *, skill: SkillSpec | None = None, judge: Any = None, where: str = "grader"
) -> Grader:
    """Build a grader from a config dict (see the module docstring); ``where`` prefixes errors."""
    if not isinstance(config, dict):
        raise GraderConfigError(f"{where}: expected an object with a 'type', got {type(config).__name__}")
    options = {k: v for k, v in config.items() if k not in ("type", "weight", "name")}
    kind = config.get("type")
    try:
        if kind == "match":
            return AnswerMatch(**options)
        if kind in ("check", "checks"):
            checks = options.pop("checks", None)
            if "command" in options:
                checks = [
                    {
                        "command": options.pop("command"),
                        **{k: options.pop(k) for k in ("exit_code", "output_regex", "timeout") if k in options},
                    }
                ] + list(checks or [])
            key = options.pop("key", None if kind == "check" else "checks")
            _no_extra(options, where, kind)
            return CommandChecks(checks, key=key)
        if kind == "rubric":
            from skillgym.graders.rubric import RubricJudge

            chosen = default_judge(options.pop("judge", None) or judge)
            if chosen is None:
                raise GraderConfigError(
                    f"{where}: a rubric grader needs a judge model; set 'judge' (e.g. 'openai:MODEL@URL') "
                    "or the SKILLGYM_JUDGE environment variable"
                )
            return RubricJudge(chosen, skill=skill, **options)
        if kind == "compactness":
            return Compactness(**options)
        if kind == "composite":
            parts_cfg = options.pop("parts", None)
            _no_extra(options, where, kind)
            if not isinstance(parts_cfg, list) or not parts_cfg:
                raise GraderConfigError(f"{where}.parts: a composite needs a non-empty list of parts")
            parts = []
            for i, part in enumerate(parts_cfg):
                sub = f"{where}.parts[{i}]"
                grader = grader_from_config(part, skill=skill, judge=judge, where=sub)
                weight = part.get("weight", 1.0)
                if not isinstance(weight, (int, float)) or weight < 0:
                    raise GraderConfigError(f"{sub}.weight: must be a number >= 0, got {weight!r}")
                parts.append(Part(grader, float(weight), part.get("name") or part.get("type")))
            return Composite(parts)
        if kind == "reference":
            return TaskReferenceGrader(skill=skill, judge=options.pop("judge", None) or judge, **options)
    except GraderConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise GraderConfigError(f"{where} ({kind}): {exc}") from None
    raise GraderConfigError(f"{where}.type: unknown grader type {kind!r}; choose one of {', '.join(GRADER_TYPES)}")


def _no_extra(options: dict[str, Any], where: str, kind: str) -> None:
    if options:
        raise GraderConfigError(f"{where}: unknown option(s) {sorted(options)} for a {kind!r} grader")


class TaskReferenceGrader:
    """Grades each task the way its ``reference`` says.

    ``reference["grader"]`` (a config dict) wins. Otherwise the parts are inferred from what
    the reference holds: ``answer`` -> an answer match (``reference["match"]`` picks the mode,
    default ``normalized``), ``checks`` -> programmatic checks, ``rubric`` -> the rubric
    judge (when a judge is configured). Several parts are averaged with equal weights.
    """

    kind = "reference"

    def __init__(self, *, skill: SkillSpec | None = None, judge: Any = None):
        self.skill = skill
        self.judge = default_judge(judge)
        self._built: dict[str, Grader] = {}

    def config_for(self, task: Task) -> dict[str, Any]:
        ref = task.reference
        if "grader" in ref:
            return ref["grader"]
        parts: list[dict[str, Any]] = []
        if "answer" in ref:
            parts.append({"type": "match", "mode": ref.get("match", "normalized")})
        if "checks" in ref:
            parts.append({"type": "checks"})
        if ref.get("rubric") and (self.judge or not parts):
            parts.append({"type": "rubric"})  # without a judge this fails, naming what to set
        if not parts:
            raise GraderConfigError(
                f"task {task.id!r}: its reference has nothing to grade with; add 'answer', 'checks', "
                "'rubric' or a 'grader' config"
            )
        return parts[0] if len(parts) == 1 else {"type": "composite", "parts": parts}

    def grade(self, task: Task, answer: str, messages: list[Message], sandbox: Sandbox | None) -> Grade:
        config = self.config_for(task)
        key = json.dumps(config, sort_keys=True, default=str)
        if key not in self._built:
            self._built[key] = grader_from_config(
                config, skill=self.skill, judge=self.judge, where=f"task {task.id!r} reference.grader"
            )
        grade = self._built[key].grade(task, answer, messages, sandbox)
        if self.judge is None and task.reference.get("rubric") and config.get("type") != "rubric":
            grade.details["rubric_skipped"] = "no judge configured (set SKILLGYM_JUDGE or pass judge=)"
        return grade
