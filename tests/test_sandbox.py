"""One suite for every sandbox backend: Docker, local bubblewrap, and (where sensible) plain local.

Security tests (network, writes outside the workspace, memory and fork bombs) run on the
isolating backends only; the plain local backend isolates nothing by design.
"""

from __future__ import annotations

import os
import signal
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from skillgym.sandbox import (
    ExecutorInternalError,
    Mount,
    OpError,
    Sandbox,
    SandboxConfig,
    SandboxDied,
    SandboxError,
    SandboxPool,
)
from skillgym.sandbox.local import LocalSandbox, bwrap_works

pytestmark = pytest.mark.timeout(60)

ISOLATING = ["docker", "bwrap"]
ALL = ISOLATING + ["plain"]


def _build(backend: str, config: SandboxConfig, request: pytest.FixtureRequest) -> Sandbox:
    if backend == "docker":
        request.getfixturevalue("docker_base_image")
        from skillgym.sandbox.docker import DockerSandbox

        return DockerSandbox(config.model_copy(update={"backend": "docker"}))
    if backend == "bwrap":
        if not bwrap_works():
            pytest.skip("bubblewrap is missing or cannot create namespaces here")
        return LocalSandbox(config, isolation="bwrap")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the no-isolation warning is expected here
        sandbox = LocalSandbox(config, isolation="none")
        sandbox.start()
    return sandbox


def kill_executor(sandbox: Sandbox) -> None:
    """Kill the executor from outside (tool commands cannot: it runs as another uid)."""
    container = getattr(sandbox, "container", None)
    if container is not None:
        container.kill()
    else:
        os.kill(sandbox._proc.pid, signal.SIGKILL)


@pytest.fixture(params=ALL)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=ISOLATING)
def isolating(request: pytest.FixtureRequest) -> str:
    return request.param


def _factories(backend: str, request: pytest.FixtureRequest) -> Iterator[Callable[..., Sandbox]]:
    """``factory(**config_fields)`` -> a started sandbox of ``backend``, closed at teardown."""
    created: list[Sandbox] = []

    def factory(**fields) -> Sandbox:
        sandbox = _build(backend, SandboxConfig(**fields), request)
        created.append(sandbox)
        sandbox.start()
        return sandbox

    yield factory
    for sandbox in created:
        sandbox.close()


@pytest.fixture
def make(backend: str, request: pytest.FixtureRequest) -> Iterator[Callable[..., Sandbox]]:
    yield from _factories(backend, request)


@pytest.fixture
def secure(isolating: str, request: pytest.FixtureRequest) -> Iterator[Callable[..., Sandbox]]:
    """Like ``make``, over the isolating backends only."""
    yield from _factories(isolating, request)


@pytest.fixture
def sb(make: Callable[..., Sandbox]) -> Sandbox:
    return make()


# Behaviour every backend shares ----------------------------------------------------------------
def test_run_in_workspace(sb: Sandbox) -> None:
    out = sb.run("echo hello > greeting.txt && cat greeting.txt && echo err >&2; exit 4")
    assert (out["stdout"], out["stderr"], out["exit_code"]) == ("hello\n", "err\n", 4)
    assert sb.read_file("/workspace/greeting.txt") == "hello\n"


def test_file_ops_round_trip(sb: Sandbox) -> None:
    sb.put_files({"src/m.py": "def f(x=3):\n    return x\n", "README": "hi\n"})
    sb.call("edit_file", path="src/m.py", old_string="x=3", new_string="x=4")
    assert sb.call("grep", pattern="x=4")["matches"] == ["/workspace/src/m.py:1:def f(x=4):"]
    assert sb.call("list_dir")["entries"] == ["README", "src/"]
    assert sb.call("glob", pattern="**/*.py")["matches"] == ["/workspace/src/m.py"]
    assert sb.run("python3 src/m.py && echo ok")["stdout"] == "ok\n"


def test_errors_for_the_model_keep_the_sandbox_usable(sb: Sandbox) -> None:
    with pytest.raises(OpError, match="outside the workspace"):
        sb.read_file("../../etc/passwd")
    with pytest.raises(OpError, match="unknown op"):
        sb.call("no_such_op")
    with pytest.raises(ExecutorInternalError, match="unexpected keyword"):
        sb.call("ping", surprise=1)
    assert sb.alive


def test_run_timeout(sb: Sandbox) -> None:
    out = sb.run("sleep 20", timeout=0.5)
    assert out["timed_out"]
    assert sb.run("echo still here")["stdout"] == "still here\n"


def test_mounts_are_visible_and_survive_reset(make: Callable[..., Sandbox], tmp_path: Path) -> None:
    tmp_path.chmod(0o755)  # the sandbox user is unprivileged; pytest's tmp dirs are 0700
    (tmp_path / "lib.py").write_text("ANSWER = 42\n")
    sb = make(mounts=[Mount(source=tmp_path, target="repo")])
    assert sb.read_file("repo/lib.py") == "ANSWER = 42\n"
    sb.run("echo changed > repo/lib.py")  # refused (read-only) or applied to a copy
    assert (tmp_path / "lib.py").read_text() == "ANSWER = 42\n"
    sb.write_file("scratch.txt", "x")
    sb.reset()
    assert sb.call("list_dir")["entries"] == ["repo/"]
    assert "ANSWER" in sb.read_file("repo/lib.py")


def test_dead_executor_raises_sandbox_error(sb: Sandbox) -> None:
    kill_executor(sb)
    with pytest.raises(SandboxDied, match="executor"):  # SandboxDied is a SandboxError
        sb.run("sleep 5")
    assert not sb.alive
    with pytest.raises(SandboxError, match="start a new one"):
        sb.call("ping")


def test_close_is_idempotent_and_final(sb: Sandbox) -> None:
    sb.close()
    sb.close()
    with pytest.raises(SandboxError):
        sb.call("ping")


def test_pool_resets_and_replaces_broken(backend: str, request: pytest.FixtureRequest) -> None:
    def factory() -> Sandbox:
        return _build(backend, SandboxConfig(), request)

    with SandboxPool(size=2, factory=factory) as pool:
        a = pool.acquire()
        a.write_file("left-over.txt", "x")
        pool.release(a)
        b = pool.acquire()
        c = pool.acquire()
        assert b.call("list_dir")["entries"] == [] and c.call("list_dir")["entries"] == []
        kill_executor(b)
        with pytest.raises(SandboxError):
            b.run("sleep 5")
        pool.release(b)  # broken: closed and replaced in the background
        pool.release(c)
        got = [pool.acquire(timeout=30), pool.acquire(timeout=30)]
        assert all(s.alive for s in got) and b not in got
        for s in got:
            pool.release(s)


# Security: isolating backends only ------------------------------------------------------------
def test_no_network(secure: Callable[..., Sandbox]) -> None:
    sb = secure()
    probe = (
        'python3 -c "import socket\n'
        "try:\n socket.create_connection(('1.1.1.1', 53), timeout=3); print('CONNECTED')\n"
        "except OSError as e: print('blocked', e)\""
    )
    out = sb.run(probe, timeout=15)
    assert "blocked" in out["stdout"] and "CONNECTED" not in out["stdout"]
    assert sb.run("cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '")["stdout"].split() == ["lo"]


@pytest.mark.parametrize(
    "target", ["/etc/owned", "/usr/owned", "/owned", "/opt/owned", "/.skillgym/owned", "/opt/skillgym/owned"]
)
def test_cannot_write_outside_workspace(secure: Callable[..., Sandbox], target: str) -> None:
    sb = secure()
    out = sb.run(f"echo x > {target} && echo WROTE")
    assert "WROTE" not in out["stdout"] and out["exit_code"] != 0
    assert not Path(target).exists()
    assert sb.run("echo fine > /workspace/ok && cat /workspace/ok")["stdout"] == "fine\n"


def test_runs_unprivileged(secure: Callable[..., Sandbox]) -> None:
    sb = secure()
    assert sb.run("id -u")["stdout"].strip() != "0"


def test_memory_bomb_is_contained(secure: Callable[..., Sandbox]) -> None:
    sb = secure(memory_mb=256)
    bomb = "python3 -c \"a = []\nwhile True: a.append(b'x' * (32 * 1024 * 1024))\""
    out = sb.run(bomb, timeout=30)
    assert out["exit_code"] != 0 and not out["timed_out"]  # killed (OOM) or MemoryError, not stuck
    assert sb.run("echo alive")["stdout"] == "alive\n"


def test_fork_bomb_is_contained(secure: Callable[..., Sandbox]) -> None:
    sb = secure(pids_limit=64)
    out = sb.run("bomb() { bomb | bomb & }; bomb; sleep 2; echo survived-bomb", timeout=4)
    assert out["exit_code"] is not None
    # The group is killed after the call; the sandbox is usable again and the limit held.
    assert sb.run("echo alive")["stdout"] == "alive\n"
    count = int(sb.run("ls /proc | grep -c '^[0-9]'")["stdout"])
    assert count < 64


def test_reset_leaves_nothing_running_or_lying_in_tmp(secure: Callable[..., Sandbox]) -> None:
    with secure() as sandbox:
        # setsid escapes the per-command process-group kill; the sweep of the tool uid after
        # every call catches it (a process left running could tamper with a later grader call).
        sandbox.run("setsid sleep 300 > /dev/null 2>&1 < /dev/null & sleep 0.5; echo x > /tmp/left.txt")
        assert "sleep 300" not in sandbox.run("ps -eo args")["stdout"]
        sandbox.reset()
        after = sandbox.run("ps -eo args; ls -A /tmp")["stdout"]
        assert "sleep 300" not in after and "left.txt" not in after
