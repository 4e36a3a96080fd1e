"""The in-sandbox ops and the executor loop, on a plain temp dir (no sandbox needed)."""

from __future__ import annotations

import base64
import io
import json
import os
import tarfile
import time
from pathlib import Path

import pytest

from skillgym.sandbox import executor, ops
from skillgym.sandbox.ops import OpError


@pytest.fixture
def root(tmp_path: Path) -> str:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "pkg").mkdir()
    (ws / "pkg" / "a.py").write_text("import os\n\ndef alpha():\n    return 1\n\ndef beta():\n    return alpha()\n")
    (ws / "pkg" / "b.txt").write_text("alpha beta\ngamma\n")
    (ws / "top.md").write_text("# title\n")
    (tmp_path / "secret.txt").write_text("host secret\n")
    return str(ws)


# Path confinement ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path", ["../secret.txt", "pkg/../../secret.txt", "/etc/passwd", "/workspace/../etc/passwd", "/"]
)
def test_paths_outside_the_workspace_are_refused(root: str, path: str) -> None:
    with pytest.raises(OpError, match="outside the workspace"):
        ops.read_file(root, path)


def test_symlink_escapes_are_refused(root: str, tmp_path: Path) -> None:
    os.symlink(tmp_path / "secret.txt", Path(root) / "link.txt")
    os.symlink(tmp_path, Path(root) / "linkdir")
    for path in ("link.txt", "linkdir/secret.txt", "/workspace/link.txt"):
        with pytest.raises(OpError, match="outside the workspace"):
            ops.read_file(root, path)
    with pytest.raises(OpError, match="outside the workspace"):
        ops.write_file(root, "linkdir/new.txt", "x")
    assert not (tmp_path / "new.txt").exists()


def test_virtual_and_relative_paths_agree(root: str) -> None:
    a = ops.read_file(root, "/workspace/pkg/a.py")
    b = ops.read_file(root, "pkg/a.py")
    assert a == b and a["path"] == "/workspace/pkg/a.py"


def test_nul_byte_in_path(root: str) -> None:
    with pytest.raises(OpError, match="NUL"):
        ops.read_file(root, "a\x00b")


# Files ----------------------------------------------------------------------------------------
def test_read_file_numbers_lines_and_pages(root: str) -> None:
    out = ops.read_file(root, "pkg/a.py", offset=3, limit=2)
    assert out["content"] == "     3\tdef alpha():\n     4\t    return 1"
    assert (out["first_line"], out["last_line"], out["total_lines"]) == (3, 4, 7)


def test_read_file_errors(root: str) -> None:
    with pytest.raises(OpError, match="does not exist"):
        ops.read_file(root, "nope.py")
    with pytest.raises(OpError, match="is a directory"):
        ops.read_file(root, "pkg")
    Path(root, "bin.dat").write_bytes(b"\x00\x01\x02")
    with pytest.raises(OpError, match="binary"):
        ops.read_file(root, "bin.dat")


def test_write_then_read(root: str) -> None:
    assert ops.write_file(root, "new/dir/f.txt", "héllo\n")["bytes"] == 7
    assert ops.read_text(root, "new/dir/f.txt")["content"] == "héllo\n"


def test_edit_file(root: str) -> None:
    with pytest.raises(OpError, match="occurs 2 times"):
        ops.edit_file(root, "pkg/a.py", "alpha", "ALPHA")
    with pytest.raises(OpError, match="not found"):
        ops.edit_file(root, "pkg/b.txt", "delta", "x")
    with pytest.raises(OpError, match="empty"):
        ops.edit_file(root, "pkg/b.txt", "", "x")
    assert ops.edit_file(root, "pkg/b.txt", "gamma", "delta")["replacements"] == 1
    assert ops.edit_file(root, "pkg/a.py", "alpha", "ALPHA", replace_all=True)["replacements"] == 2
    assert "ALPHA()" in ops.read_text(root, "pkg/a.py")["content"]


def test_glob(root: str) -> None:
    assert ops.glob(root, "*.py")["matches"] == ["/workspace/pkg/a.py"]
    assert ops.glob(root, "**/*.txt")["matches"] == ["/workspace/pkg/b.txt"]
    assert ops.glob(root, "*.md", path="pkg")["matches"] == []


def test_grep(root: str) -> None:
    out = ops.grep(root, r"def \w+", glob="*.py")
    assert out["matches"] == ["/workspace/pkg/a.py:3:def alpha():", "/workspace/pkg/a.py:6:def beta():"]
    ctx = ops.grep(root, "return alpha", context=1)
    assert ctx["matches"] == ["/workspace/pkg/a.py-6-def beta():", "/workspace/pkg/a.py:7:    return alpha()"]
    assert ops.grep(root, "ALPHA", ignore_case=True)["files"] == 2
    with pytest.raises(OpError, match="invalid regular expression"):
        ops.grep(root, "(")


def test_list_dir(root: str) -> None:
    assert ops.list_dir(root)["entries"] == ["pkg/", "top.md"]
    with pytest.raises(OpError, match="does not exist"):
        ops.list_dir(root, "nope")


def _tar_b64(name: str, data: bytes) -> str:
    """A one-member tar archive, base64-encoded as put_archive takes it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return base64.b64encode(buf.getvalue()).decode()


def test_put_archive_refuses_escapes(root: str) -> None:
    with pytest.raises(OpError, match="outside the workspace"):
        ops.put_archive(root, _tar_b64("../evil.txt", b"x"))
    assert not Path(root).parent.joinpath("evil.txt").exists()


def test_put_archive_refuses_sibling_folder_with_same_prefix(root: str) -> None:
    # Regression: a prefix test without a separator let "../ws2/x" pass for root ".../ws".
    with pytest.raises(OpError, match="outside the workspace"):
        ops.put_archive(root, _tar_b64(f"../{Path(root).name}2/x.txt", b"x"))
    assert not Path(root + "2").exists()


def test_put_archive_extracts(root: str) -> None:
    assert ops.put_archive(root, _tar_b64("d/x.txt", b"hi"))["extracted"] == 1
    assert ops.read_text(root, "d/x.txt")["content"] == "hi"


def test_reset_keeps_listed_mounts(root: str) -> None:
    ops.reset(root, keep=["pkg"])
    assert ops.list_dir(root)["entries"] == ["pkg/"]


# Commands --------------------------------------------------------------------------------------
def test_run_truncates_with_marker(root: str) -> None:
    out = ops.run(root, "python3 -c \"print('x' * 5000)\"", max_output=100)
    assert out["truncated"] and out["stdout"].startswith("x" * 100)
    assert "more characters not shown" in out["stdout"]


def test_run_timeout_kills_the_whole_group(root: str) -> None:
    started = time.monotonic()
    # Durations no other test uses: pgrep sees every process on the host (containers included).
    out = ops.run(root, "sleep 30.417 & sleep 31.417; echo never", timeout=0.5)
    assert out["timed_out"] and "never" not in out["stdout"]
    assert time.monotonic() - started < 10
    leftover = ops.run(root, "pgrep -f 'sleep 3[01][.]417' || true")["stdout"]
    assert leftover.strip() == ""


def test_run_reports_exit_code_and_cwd(root: str) -> None:
    out = ops.run(root, "pwd; exit 3", cwd="pkg")
    assert out["exit_code"] == 3 and out["stdout"].strip().endswith("/pkg")
    with pytest.raises(OpError, match="empty"):
        ops.run(root, "  ")


# Executor loop ---------------------------------------------------------------------------------
def _serve(root: str, requests: list) -> list[dict]:
    lines = [r if isinstance(r, bytes) else json.dumps(r).encode() + b"\n" for r in requests]
    out = io.BytesIO()
    executor.serve(root, iter(lines), out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_executor_round_trips_and_survives_bad_requests(root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(root: str) -> dict:
        raise KeyError("kaboom")

    monkeypatch.setitem(ops.OPS, "boom", boom)
    answers = _serve(
        root,
        [
            {"id": 1, "op": "ping", "args": {}},
            b"{not json\n",
            {"id": 2, "op": "read_file", "args": {"path": "../x"}},
            {"id": 3, "op": "nope"},
            {"id": 4, "op": "boom", "args": {}},
            {"id": 5, "op": "read_file", "args": {"bogus": 1}},
            [1, 2],
            {"id": 6, "op": "list_dir", "args": {"path": "pkg"}},
        ],
    )
    ready, *rest = answers
    assert ready["result"] == {"ready": True}
    by_id = {a["id"]: a for a in rest if a["id"] is not None}
    assert by_id[1] == {"id": 1, "ok": True, "result": {"pong": True}}
    assert by_id[2]["kind"] == "op" and "outside the workspace" in by_id[2]["error"]
    assert by_id[3]["kind"] == "op" and "unknown op" in by_id[3]["error"]
    assert by_id[4] == {"id": 4, "ok": False, "error": "KeyError: 'kaboom'", "kind": "internal"}
    assert by_id[5]["kind"] == "internal" and "unexpected keyword" in by_id[5]["error"]
    assert by_id[6]["result"]["entries"] == ["a.py", "b.txt"]
    assert sum(1 for a in rest if a["id"] is None) == 2  # the malformed line and the list


# Hardening (issue 9) ---------------------------------------------------------------------------
def test_run_ends_with_the_shell_not_with_its_background_children(root: str) -> None:
    started = time.monotonic()
    out = ops.run(root, "sleep 30 & echo quick", timeout=10)
    assert (out["stdout"], out["exit_code"], out["timed_out"]) == ("quick\n", 0, False)
    assert time.monotonic() - started < 3


def test_run_caps_output_while_reading(root: str) -> None:
    out = ops.run(root, "head -c 300000000 /dev/zero | tr '\\0' x", timeout=60, max_output=1000)
    assert out["truncated"] and len(out["stdout"]) < 1100
    assert "299999000 more characters not shown" in out["stdout"]


@pytest.mark.parametrize(
    ("cmd", "message"),
    [
        ("echo \ud800", "lone surrogate"),
        ("echo a\x00b", "NUL"),
        ("x" * 200_000, "limit is"),
        (5, "must be a string"),
    ],
)
def test_run_refuses_what_no_shell_can_take(root: str, cmd: object, message: str) -> None:
    with pytest.raises(OpError, match=message):
        ops.run(root, cmd)


def test_control_characters_are_shown_as_text(root: str) -> None:
    out = ops.run(root, "printf '\\033[31mred\\r\\n\\a'")
    assert out["stdout"] == "\\x1b[31mred\r\n\\x07"
    Path(root, "esc.txt").write_text("a\x1b[2Jb\n")
    assert ops.read_file(root, "esc.txt")["content"] == "     1\ta\\x1b[2Jb"
    assert ops.read_text(root, "esc.txt")["content"] == "a\x1b[2Jb\n"  # raw for graders


def test_grep_and_glob_skip_symlinks_out_of_the_workspace_and_fifos(root: str, tmp_path: Path) -> None:
    os.symlink(tmp_path / "secret.txt", Path(root) / "leak.txt")
    os.mkfifo(Path(root) / "pipe.txt")
    assert ops.grep(root, "secret")["matches"] == []
    assert "/workspace/leak.txt" not in ops.glob(root, "*.txt")["matches"]
    with pytest.raises(OpError, match="not a regular file"):
        ops.read_file(root, "pipe.txt")
    with pytest.raises(OpError, match="not a regular file"):
        ops.read_text(root, "pipe.txt")


def test_big_files_are_read_in_part_and_refused_whole(root: str) -> None:
    with open(Path(root, "big.txt"), "wb") as fh:
        fh.write(b"line\n" * 2000)
        fh.truncate(ops.MAX_TEXT_BYTES + 10)  # sparse tail of NULs, past the 8 KiB binary probe
    out = ops.read_file(root, "big.txt", limit=3)
    assert out["content"].endswith("3\tline") and "only its first" in out["note"]
    with pytest.raises(OpError, match="at most"):
        ops.read_text(root, "big.txt")


def test_executor_stops_a_runaway_op(root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    Path(root, "a.txt").write_text("a" * 40 + "b\n")
    monkeypatch.setattr(executor, "OP_TIMEOUT_S", 0.5)
    started = time.monotonic()
    answer = _serve(root, [{"id": 1, "op": "grep", "args": {"pattern": "(a+)+$"}}])[1]
    assert answer["kind"] == "op" and "did not finish within 0.5 s" in answer["error"]
    assert time.monotonic() - started < 3
    nested = b'{"id": 2, "op": "ping", "args": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n"
    answer = _serve(root, [nested])[1]
    assert (answer["id"], answer["kind"]) == (2, "op") and "RecursionError" in answer["error"]  # matched by id
