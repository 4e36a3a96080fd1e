"""Regression tests for issue 9's sandbox routes: each broke once; each runs on every backend it applies to.

Backends: Docker, and local bubblewrap (on this root host: executor as root, tools as a per-sandbox
uid). The plain local backend isolates nothing by design and is not tested here.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from skillgym.sandbox import ExecutorInternalError, OpError, Sandbox, SandboxConfig, SandboxError
from skillgym.sandbox.local import SYSTEM_DIRS, LocalSandbox, bwrap_works

pytestmark = pytest.mark.timeout(120)


def _build(backend: str, config: SandboxConfig, request: pytest.FixtureRequest) -> Sandbox:
    if backend == "docker":
        request.getfixturevalue("docker_base_image")
        from skillgym.sandbox.docker import DockerSandbox

        return DockerSandbox(config.model_copy(update={"backend": "docker"}))
    if not bwrap_works():
        pytest.skip("bubblewrap is missing or cannot create namespaces here")
    return LocalSandbox(config, isolation="bwrap")


@pytest.fixture(params=["docker", "bwrap"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def make(backend: str, request: pytest.FixtureRequest) -> Iterator[Callable[..., Sandbox]]:
    created: list[Sandbox] = []

    def factory(**fields) -> Sandbox:
        sandbox = _build(backend, SandboxConfig(**fields), request)
        created.append(sandbox)
        sandbox.start()
        return sandbox

    yield factory
    for sandbox in created:
        sandbox.close()


def _timed(fn: Callable[[], object]) -> tuple[object, float]:
    started = time.monotonic()
    try:
        result = fn()
    except (OpError, SandboxError) as exc:
        result = exc
    return result, time.monotonic() - started


# Critical 1 and 2: the executor is out of the tool commands' reach ---------------------------
def test_tool_commands_run_as_another_uid_than_the_executor(make: Callable[..., Sandbox]) -> None:
    sb = make()
    out = sb.run("id -u; ps -o uid= -p $PPID; id -G")["stdout"].split()
    tool_uid, executor_uid, groups = out[0], out[1], out[2:]
    assert tool_uid != "0" and executor_uid == "0" and tool_uid != executor_uid
    assert groups == [tool_uid]  # no supplementary group (docker, ...) reaches a command


@pytest.mark.parametrize(
    "attack",
    [
        'echo \'{"id": 2, "ok": true, "result": {"exit_code": 0}}\' > /proc/$PPID/fd/1',  # forge an answer
        "head -c 1000000 /dev/zero > /proc/$PPID/fd/2",  # flood the container log / executor stderr
        "kill -STOP $PPID",  # freeze the executor and answer in its place
        "kill -9 $PPID",  # kill it
        'python3 -c "import ctypes,os,sys; sys.exit(0 if ctypes.CDLL(None).ptrace(16, os.getppid(), 0, 0) == 0 else 1)"',
        "cat /proc/$PPID/environ /proc/1/environ",
    ],
)
def test_tool_commands_cannot_touch_the_executor(make: Callable[..., Sandbox], attack: str) -> None:
    sb = make()
    out = sb.run(attack, timeout=10)
    assert out["exit_code"] != 0, out  # refused: permission denied, not merely ignored
    # What a command-check grader runs next is answered by the real executor.
    graded = sb.run("echo graded; exit 3")
    assert (graded["exit_code"], graded["stdout"]) == (3, "graded\n")
    assert sb.alive


def test_a_lingering_process_cannot_forge_a_later_answer(make: Callable[..., Sandbox]) -> None:
    sb = make()
    forger = (
        "setsid bash -c 'while :; do for f in /proc/[0-9]*/fd/1; do "
        "echo FORGED > $f; done 2>/dev/null; done' > /dev/null 2>&1 < /dev/null & sleep 0.3; echo started"
    )
    assert sb.run(forger)["stdout"] == "started\n"
    for _ in range(5):
        graded = sb.run("echo real; sleep 0.1; exit 3")
        assert (graded["exit_code"], graded["stdout"]) == (3, "real\n")
    assert "while" not in sb.run("ps -eo args")["stdout"]  # nothing of the forger survived its call


def test_docker_container_keeps_no_log(backend: str, make: Callable[..., Sandbox]) -> None:
    if backend != "docker":
        pytest.skip("Docker only")
    sb = make()
    sb.container.reload()
    assert sb.container.attrs["HostConfig"]["LogConfig"]["Type"] == "none"
    caps = set(sb.container.attrs["HostConfig"]["CapAdd"] or [])
    assert caps <= {"SETUID", "SETGID", "KILL", "CAP_SETUID", "CAP_SETGID", "CAP_KILL"}


# Critical 3: local backend as a non-root user in the docker group ----------------------------
def test_bwrap_mounts_only_system_folders(backend: str, make: Callable[..., Sandbox]) -> None:
    if backend != "bwrap":
        pytest.skip("bubblewrap only")
    sb = make()
    top = set(sb.run("ls -A /")["stdout"].split())
    assert top <= set(SYSTEM_DIRS) | {"dev", "proc", "tmp", "workspace", ".skillgym"}, top
    probe = sb.run("ls /var/run/docker.sock /run /home /root 2>&1; exit 0")["stdout"]
    assert probe.count("No such file") == 4, probe


@pytest.fixture(scope="module")
def docker_group_user() -> Iterator[str]:
    """A throwaway non-root user in the docker group (the usual developer set-up)."""
    if os.geteuid() != 0 or not Path("/var/run/docker.sock").exists():
        pytest.skip("needs root (to create a throwaway user) and a Docker socket")
    if not bwrap_works():
        pytest.skip("bubblewrap is missing")
    if subprocess.run(["getent", "group", "docker"], capture_output=True).returncode != 0:
        pytest.skip("no docker group")
    user = f"sgprobe{secrets.token_hex(3)}"
    subprocess.run(["useradd", "-M", "-G", "docker", user], check=True)
    try:
        yield user
    finally:
        subprocess.run(["userdel", user], capture_output=True)


def _serve_as(user: str, tmp_path: Path, requests: list[dict]) -> dict:
    """Run the unprivileged bubblewrap executor as ``user``; answers by request id."""
    workspace = tmp_path / "ws"
    workspace.mkdir(exist_ok=True)
    argv = LocalSandbox(SandboxConfig(), isolation="bwrap")._bwrap_argv(workspace, privileged=False)
    lines = "".join(json.dumps(dict(r, id=i)) + "\n" for i, r in enumerate(requests, start=1))
    done = subprocess.run(
        ["runuser", "-u", user, "--", *argv], input=lines, capture_output=True, text=True, cwd="/", timeout=120
    )
    answers = {a["id"]: a for a in map(json.loads, done.stdout.splitlines()) if a["id"] is not None}
    assert len(answers) == len(requests), (done.stdout[-2000:], done.stderr[-2000:])
    return answers


CONNECT = (
    'python3 -c "import socket; s = socket.socket(socket.AF_UNIX); '
    "s.connect('/var/run/docker.sock'); print('CONNECTED')\""
)


def test_bwrap_as_a_docker_group_user_cannot_reach_the_docker_socket(docker_group_user: str, tmp_path: Path) -> None:
    # The test can fail: outside the sandbox this user does reach the socket.
    bare = subprocess.run(
        ["runuser", "-u", docker_group_user, "--", "bash", "-c", CONNECT],
        capture_output=True,
        text=True,
        cwd="/",
        timeout=30,
    )
    assert "CONNECTED" in bare.stdout, bare.stderr
    result = _serve_as(docker_group_user, tmp_path, [{"op": "run", "args": {"cmd": CONNECT, "timeout": 10}}])[1]
    result = result["result"]
    assert "CONNECTED" not in result["stdout"] and result["exit_code"] != 0, result
    assert "FileNotFoundError" in result["stderr"], result  # the socket is simply not there


def test_bwrap_as_a_non_root_user_keeps_the_executor_out_of_reach(docker_group_user: str, tmp_path: Path) -> None:
    attacks = [
        'echo \'{"id": 9, "ok": true, "result": {"exit_code": 0}}\' > /proc/$PPID/fd/1; '
        "kill -STOP $PPID; kill -9 $PPID; ps -eo args",
        "setsid bash -c 'while :; do for f in /proc/[0-9]*/fd/1; do echo FORGED > $f; done 2>/dev/null; done' "
        "> /dev/null 2>&1 < /dev/null & sleep 0.2; echo left",
        "echo real; sleep 0.2; exit 3",
        "ps -eo args",
    ]
    answers = _serve_as(
        docker_group_user, tmp_path, [{"op": "run", "args": {"cmd": a, "timeout": 10}} for a in attacks]
    )
    assert "executor.py" not in answers[1]["result"]["stdout"]  # out of sight
    graded = answers[3]["result"]
    assert (graded["exit_code"], graded["stdout"]) == (3, "real\n"), graded
    assert "while" not in answers[4]["result"]["stdout"]  # the forger died with its command


# Critical 4: local resources are bounded per sandbox -----------------------------------------
def test_workspace_and_tmp_have_a_size_limit(make: Callable[..., Sandbox]) -> None:
    sb = make(memory_mb=512)
    for folder in ("/workspace", "/tmp"):
        out = sb.run(f"fallocate -l 2G {folder}/big || head -c 2000000000 /dev/zero > {folder}/big", timeout=30)
        assert out["exit_code"] != 0, (folder, out)
        sb.run(f"rm -f {folder}/big")


def test_memory_is_limited_per_sandbox_not_per_process(backend: str, make: Callable[..., Sandbox]) -> None:
    sb = make(memory_mb=512)
    if backend == "bwrap" and not sb._cgroups:
        pytest.skip("no cgroup can be created on this host (the sandbox warned)")
    hog = "python3 -c \"a = bytearray(300 << 20); a[::4096] = b'x' * len(a[::4096]); import time; time.sleep(3); print('held')\""
    out = sb.run(f"for i in 1 2 3; do {hog} & done; wait", timeout=30)
    assert out["stdout"].count("held") < 3, out  # 900 MB together does not fit in 512 MB
    assert sb.run("echo alive")["stdout"] == "alive\n"


# Major 5: every call returns within its timeout + 1 s, with a precise result -----------------
def test_calls_return_in_time_with_precise_results(make: Callable[..., Sandbox]) -> None:
    sb = make(default_timeout=3)
    quick, took = _timed(lambda: sb.run("sleep 10000 & echo quick", timeout=5))
    assert took < 2 and quick["stdout"] == "quick\n" and quick["exit_code"] == 0 and not quick["timed_out"]

    escaped, took = _timed(lambda: sb.run("setsid sleep 10000 & sleep 100", timeout=1))
    assert took < 2 and escaped["timed_out"]

    flood, took = _timed(lambda: sb.run("head -c 1000000000 /dev/zero | tr '\\0' x", timeout=20))
    assert took < 21 and flood["truncated"] and len(flood["stdout"]) < 40_000, took

    sb.run("mkfifo pipe; truncate -s 3G sparse; python3 -c \"print('a' * 40 + 'b')\" > text.txt")
    for call in (lambda: sb.call("read_file", path="pipe"), lambda: sb.read_file("pipe")):
        result, took = _timed(call)
        assert isinstance(result, OpError) and "not a regular file" in str(result) and took < 1
    result, took = _timed(lambda: sb.call("read_file", path="sparse"))
    assert isinstance(result, OpError) and "binary" in str(result) and took < 2
    result, took = _timed(lambda: sb.read_file("sparse"))
    assert isinstance(result, OpError) and "at most" in str(result) and took < 2
    result, took = _timed(lambda: sb.call("grep", pattern="(a+)+$"))  # catastrophic backtracking
    assert isinstance(result, OpError) and "did not finish" in str(result) and took < 3 + 1, (result, took)
    # The sandbox is intact afterwards, and a grader still gets the truth.
    assert sb.run("exit 3")["exit_code"] == 3


def test_large_output_does_not_break_later_calls(make: Callable[..., Sandbox]) -> None:
    sb = make(memory_mb=512)
    out = sb.run("head -c 1500000000 /dev/zero | tr '\\0' y", timeout=30)
    assert out["truncated"]
    assert sb.run("echo fine")["stdout"] == "fine\n"


# Major 8: contamination and escapes ----------------------------------------------------------
def test_reset_scrubs_shared_memory_and_ipc(make: Callable[..., Sandbox]) -> None:
    sb = make()
    sb.run(
        'echo x > /dev/shm/left 2>/dev/null; python3 -c "from multiprocessing import shared_memory as s; '
        "m = s.SharedMemory(create=True, size=4096, name='leftshm'); m.close()\" 2>/dev/null; true"
    )
    sb.reset()
    assert sb.run("ls -A /dev/shm 2>/dev/null; ls -A /tmp")["stdout"].strip() == ""


def test_grep_and_glob_do_not_follow_symlinks_out_of_the_workspace(make: Callable[..., Sandbox]) -> None:
    sb = make()
    sb.run("ln -s /etc/passwd leak.txt && ln -s /etc escape && echo root-inside > own.txt && ln -s own.txt ok.txt")
    out = sb.call("grep", pattern="root")
    assert out["matches"] == ["/workspace/ok.txt:1:root-inside", "/workspace/own.txt:1:root-inside"], out
    assert sb.call("glob", pattern="*.txt")["matches"] == ["/workspace/ok.txt", "/workspace/own.txt"]
    with pytest.raises(OpError, match="outside the workspace"):
        sb.call("grep", pattern="root", path="leak.txt")


def test_network_without_a_bridge_is_refused_unless_host_networking_is_asked(docker_base_image: str) -> None:
    from skillgym.sandbox.docker import _has_bridge, container_kwargs, default_client

    client = default_client()
    if _has_bridge(client):
        assert container_kwargs(SandboxConfig(network=True), client)["network_mode"] == "bridge"
        return
    with pytest.raises(SandboxError, match="no bridge network"):
        container_kwargs(SandboxConfig(network=True), client)
    assert container_kwargs(SandboxConfig(network=True, allow_host_network=True), client)["network_mode"] == "host"
    assert container_kwargs(SandboxConfig(), client)["network_mode"] == "none"


# Minor: precise messages, writable HOME, escaped terminal codes -------------------------------
def test_home_and_tmp_are_writable(make: Callable[..., Sandbox]) -> None:
    sb = make()
    out = sb.run("echo x > $HOME/f && echo y > /tmp/g && cat $HOME/f /tmp/g")
    assert out["stdout"] == "x\ny\n", out


def test_malformed_input_gets_a_precise_message(make: Callable[..., Sandbox]) -> None:
    sb = make()
    sb.run("ln -s /proc/1/root rootlink; echo x > f")
    cases = [
        (lambda: sb.run("echo \ud800"), "lone surrogate"),
        (lambda: sb.run("echo a\x00b"), "NUL"),
        (lambda: sb.run("echo " + "x" * 10_000_000), "limit is"),
        (lambda: sb.read_file("a\ud800b"), "lone surrogate"),
        (lambda: sb.read_file("a\x00b"), "NUL"),
        (lambda: sb.write_file("f.txt", "bad \ud800"), "lone surrogate"),
        (lambda: sb.read_file("rootlink/etc/passwd"), "outside the workspace|cannot be resolved"),
        (lambda: sb.call("read_file", path="f", offset="x"), "must be a number"),
    ]
    for call, message in cases:
        with pytest.raises(OpError, match=message) as info:
            call()
        assert not isinstance(info.value, ExecutorInternalError), info.value
    assert sb.alive


def test_terminal_escapes_are_shown_as_text(make: Callable[..., Sandbox]) -> None:
    sb = make()
    out = sb.run(
        "printf '\\033[2J\\033[31mred\\a\\n'; printf 'a\\rb\\r\\n' > crlf.txt; printf '\\033]0;t\\007x\\n' > esc.txt"
    )
    assert out["stdout"] == "\\x1b[2J\\x1b[31mred\\x07\n"
    assert sb.call("read_file", path="esc.txt")["content"] == "     1\t\\x1b]0;t\\x07x"
    assert sb.read_file("esc.txt") == "\x1b]0;t\x07x\n"  # graders read raw bytes


# Major 9: nothing outlives its owner -----------------------------------------------------------
OWNER = textwrap.dedent(
    """
    import sys, time, warnings
    from skillgym.sandbox.local import LocalSandbox
    warnings.simplefilter("ignore")
    boxes = [LocalSandbox(isolation=sys.argv[2])]
    if sys.argv[1] == "1":
        from skillgym.sandbox.docker import DockerSandbox
        boxes.append(DockerSandbox())
    for b in boxes:
        b.start()
    print(boxes[0]._tmp, flush=True)
    print(boxes[1].container.name if len(boxes) > 1 else "", flush=True)
    time.sleep(600)
    """
)


@pytest.mark.parametrize("isolation", ["bwrap", "none"])
def test_nothing_outlives_an_owner_killed_with_sigkill(isolation: str) -> None:
    from skillgym.sandbox import docker_available

    if isolation == "bwrap" and not bwrap_works():
        pytest.skip("bubblewrap is missing")
    with_docker = docker_available() and isolation == "bwrap"  # one Docker run is enough
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, "1" if with_docker else "0", isolation], stdout=subprocess.PIPE, text=True
    )
    try:
        folder = Path(owner.stdout.readline().strip())
        container = owner.stdout.readline().strip()
        assert folder.name.startswith(f"skillgym-local-{owner.pid}-") and folder.is_dir()
    finally:
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(timeout=10)
    deadline = time.monotonic() + 30
    client = None
    if with_docker:
        import docker

        client = docker.from_env(timeout=30)
    while time.monotonic() < deadline:
        names = [c.name for c in client.containers.list(all=True)] if client else []
        if not folder.exists() and container not in names:
            break
        time.sleep(0.5)
    assert not folder.exists(), "the local sandbox folder outlived its owner"
    if client is not None:
        assert container not in [c.name for c in client.containers.list(all=True)], "the container outlived its owner"


def test_gc_reaps_local_folders_of_dead_owners() -> None:
    from typer.testing import CliRunner

    from skillgym.sandbox.cli import app
    from skillgym.sandbox.gc import local_root

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = local_root() / f"skillgym-local-{dead.pid}-test{secrets.token_hex(3)}"
    orphan.mkdir()
    (orphan / "owner.json").write_text(json.dumps({"pid": dead.pid, "pid_start": "1"}))
    mine = local_root() / f"skillgym-local-{os.getpid()}-test{secrets.token_hex(3)}"
    mine.mkdir()
    from skillgym.sandbox.gc import owner_record

    (mine / "owner.json").write_text(json.dumps(owner_record()))
    try:
        result = CliRunner().invoke(app, ["gc", "--json"])
        assert result.exit_code == 0, result.output
        reaped = [r["name"] for r in json.loads(result.output)]
        assert str(orphan) in reaped and not orphan.exists()
        assert mine.exists()  # its owner (this process) lives
    finally:
        for folder in (orphan, mine):
            subprocess.run(["rm", "-rf", str(folder)])
