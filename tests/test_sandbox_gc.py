"""`skillgym sandbox gc` reaps containers whose owner was killed, and only those."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.timeout(90)]

OWNER = textwrap.dedent(
    """
    import sys, time
    from skillgym.sandbox.docker import DockerSandbox
    sb = DockerSandbox()
    sb.start()
    print(sb.container.name, flush=True)
    time.sleep(600)
    """
)


def test_gc_reaps_containers_of_a_killed_owner(docker_base_image: str) -> None:
    import docker
    from docker.errors import NotFound
    from typer.testing import CliRunner

    from skillgym.sandbox.cli import app
    from skillgym.sandbox.docker import DockerSandbox

    client = docker.from_env(timeout=30)
    # Without its watchdog, which would remove the orphan itself (tests/test_sandbox_security.py covers that).
    env = dict(os.environ, SKILLGYM_SANDBOX_WATCHDOG="0")
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True, env=env)
    try:
        name = owner.stdout.readline().strip()
        assert name.startswith("skillgym-"), f"owner process did not start a sandbox (got {name!r})"
    finally:
        os.kill(owner.pid, signal.SIGKILL)  # no cleanup code runs: the container is orphaned
        owner.wait(timeout=10)
    # Orphaned: still there (its executor may already have exited, as its stdin closed with the owner).
    assert client.containers.get(name).status in ("running", "exited")

    with DockerSandbox() as alive_one:  # its owner (this process) lives: gc must spare it
        result = CliRunner().invoke(app, ["gc", "--json"])
        assert result.exit_code == 0, result.output
        reaped = json.loads(result.output)
        mine = [r for r in reaped if r["name"] == name]  # other orphans on this host may be reaped too
        assert len(mine) == 1 and mine[0]["removed"]
        with pytest.raises(NotFound):
            client.containers.get(name)
        assert alive_one.alive
