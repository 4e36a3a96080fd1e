"""Shared pytest fixtures."""

from __future__ import annotations

import datetime as _dt
import os
import time

import pytest

# ---------------------------------------------------------------------------------------------
# Sandbox fixtures (owner: sandbox backends). `docker_required` skips without an engine, unless
# SKILLGYM_REQUIRE_DOCKER=1 (CI), where a missing engine is a failure. At session end, any
# container labelled by skillgym that this test process created fails the run: tests must not
# leak sandboxes.
# ---------------------------------------------------------------------------------------------


def _docker_engine_answers() -> bool:
    from skillgym.sandbox import docker_available

    return docker_available()


def require_docker() -> None:
    """Skip (or fail under SKILLGYM_REQUIRE_DOCKER=1) when no Docker engine answers."""
    if _docker_engine_answers():
        return
    if os.environ.get("SKILLGYM_REQUIRE_DOCKER") == "1":
        pytest.fail("SKILLGYM_REQUIRE_DOCKER=1 but no Docker engine answers (is dockerd running?)")
    pytest.skip("no Docker engine answers (set SKILLGYM_REQUIRE_DOCKER=1 to make this a failure)")


@pytest.fixture
def docker_required() -> None:
    require_docker()


@pytest.fixture(scope="session")
def docker_base_image() -> str:
    """The sandbox base image tag, built if missing (first build: about a minute)."""
    require_docker()
    from skillgym.sandbox.images import ensure_base_image

    return ensure_base_image()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("docker") and "docker_required" not in getattr(item, "fixturenames", ()):
            item.fixturenames.append("docker_required")


_SESSION_START = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _leftover_containers() -> list[str]:
    if not _docker_engine_answers():
        return []
    import docker

    from skillgym.sandbox.gc import LABEL_CREATED, LABEL_PID, owner_alive, skillgym_containers

    client = docker.from_env(timeout=30)

    # Ours, plus orphans created during this session (by subprocesses that tests started).
    def leftovers() -> list:
        return [
            c
            for c in skillgym_containers(client)
            if c.labels.get(LABEL_PID) == str(os.getpid())
            or (c.labels.get(LABEL_CREATED, "") >= _SESSION_START and not owner_alive(c.labels))
        ]

    mine = leftovers()
    deadline = time.monotonic() + 15
    while any(c.labels.get(LABEL_PID) != str(os.getpid()) for c in mine) and time.monotonic() < deadline:
        time.sleep(0.5)  # a dead owner's watchdog removes its containers within seconds
        mine = leftovers()
    names = [c.name for c in mine]
    for container in mine:  # clean up anyway, so one failing run does not poison the next
        try:
            container.remove(force=True, v=True)
        except docker.errors.NotFound:
            pass  # a watchdog removed it meanwhile
    return names


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if hasattr(session.config, "workerinput"):
        return  # xdist workers: the controller checks once
    try:
        leftovers = _leftover_containers()
    except Exception as exc:  # the check itself must not hide the real test results
        print(f"\n[sandbox] could not check for leftover containers: {exc}")
        return
    if leftovers:
        print(f"\n[sandbox] FAIL: tests left {len(leftovers)} skillgym container(s) behind: {', '.join(leftovers)}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# ----------------------------------------------------------------------------- end of sandbox fixtures
