"""Programmatic checks: commands run in the episode's sandbox after the model has answered.

The sandbox is still open when the env grades, so a check sees exactly the workspace the
model left behind (files written, tests added). A check passes on the expected exit code
and, when given, an output regex; the score is the weighted share of checks that pass.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from skillgym.io import validation_message
from skillgym.sandbox.base import Sandbox
from skillgym.types import Grade, Message, Task


class Check(BaseModel):
    """One command and what its result must look like."""

    model_config = ConfigDict(extra="forbid")

    command: str
    name: str | None = None
    exit_code: int | None = Field(default=0, description="Required exit code; None accepts any.")
    output_regex: str | None = Field(default=None, description="Must match stdout+stderr (search, case-insensitive).")
    timeout: float = Field(default=60.0, gt=0)
    weight: float = Field(default=1.0, ge=0)

    @property
    def label(self) -> str:
        return self.name or self.command


def parse_checks(value: Any, where: str) -> list[Check]:
    """Checks from a string, a dict or a list of either; errors name ``where`` and the field."""
    items = value if isinstance(value, list) else [value]
    checks = []
    for i, item in enumerate(items):
        try:
            checks.append(Check(command=item) if isinstance(item, str) else Check.model_validate(item))
        except ValidationError as exc:
            raise ValueError(f"{where}[{i}]: {validation_message(exc)}") from None
    return checks


def run_check(sandbox: Sandbox, check: Check) -> dict[str, Any]:
    """Run one check; the record says whether it passed and why not."""
    result = sandbox.run(check.command, timeout=check.timeout)
    output = (result.get("stdout") or "") + (result.get("stderr") or "")
    problems = []
    if result.get("timed_out"):
        problems.append(f"timed out after {check.timeout:g} s")
    elif check.exit_code is not None and result.get("exit_code") != check.exit_code:
        problems.append(f"exit code {result.get('exit_code')}, expected {check.exit_code}")
    if check.output_regex and not re.search(check.output_regex, output, re.IGNORECASE | re.MULTILINE):
        problems.append(f"output does not match {check.output_regex!r}")
    return {
        "check": check.label,
        "passed": not problems,
        "exit_code": result.get("exit_code"),
        "problem": "; ".join(problems) or None,
        "output_tail": output[-500:],
    }


class CommandChecks:
    """Runs fixed ``checks`` plus those listed in ``task.reference[key]`` (when ``key`` is set)."""

    def __init__(self, checks: Any = None, *, key: str | None = "checks"):
        self.checks = parse_checks(checks, "checks") if checks else []
        self.key = key

    def checks_for(self, task: Task) -> list[Check]:
        extra = task.reference.get(self.key) if self.key else None
        found = self.checks + (parse_checks(extra, f"task {task.id!r} reference.{self.key}") if extra else [])
        if not found:
            raise ValueError(f"task {task.id!r} has no checks: give the grader checks or set reference.{self.key}")
        return found

    def grade(self, task: Task, answer: str, messages: list[Message], sandbox: Sandbox | None) -> Grade:
        checks = self.checks_for(task)
        if sandbox is None:
            raise RuntimeError(f"task {task.id!r}: programmatic checks need the episode's sandbox, and none is open")
        results = [run_check(sandbox, c) for c in checks]
        total = sum(c.weight for c in checks) or 1.0
        score = sum(c.weight for c, r in zip(checks, results) if r["passed"]) / total
        return Grade(score=round(score, 6), components={"checks": round(score, 6)}, details={"checks": results})
