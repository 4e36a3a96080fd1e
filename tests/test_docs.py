"""The page a new env's author reads shows a complete env, and that env runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import skillgym.registry

DOC = Path(__file__).resolve().parents[1] / "docs" / "writing-an-environment.md"
DEFAULT_BACKEND = 'backend: str = "auto"'


@pytest.fixture(params=["local", "docker"])
def backend(request):
    if request.param == "docker":
        request.getfixturevalue("docker_required")
    return request.param


def test_the_example_env_is_short_and_runs(backend, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 1, "the page shows one complete env"
    code = blocks[0]
    assert len(code.splitlines()) < 60, "the example must stay under 60 lines"
    assert DEFAULT_BACKEND in code, "the example's spec factory must take the sandbox backend"
    # The registry is process-wide: register the example's id in a copy, so the test leaves no trace.
    monkeypatch.setattr(skillgym.registry, "_REGISTRY", dict(skillgym.registry._REGISTRY))
    namespace = {"__name__": "writing_an_environment"}
    exec(compile(code.replace(DEFAULT_BACKEND, f'backend: str = "{backend}"'), str(DOC), "exec"), namespace)
    trajectory = namespace["trajectory"]
    assert trajectory.reward == 1.0 and trajectory.policy_id == "wc"
    assert [m["role"] for m in trajectory.messages] == ["system", "user", "assistant", "tool", "assistant", "tool"]
    assert all(t.policy_seconds is not None for t in trajectory.timings)
