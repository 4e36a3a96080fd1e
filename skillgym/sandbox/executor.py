"""The in-sandbox server: one JSON object per line in, one per line out.

Request:  ``{"id": 7, "op": "read_file", "args": {"path": "a.py"}}``
Response: ``{"id": 7, "ok": true, "result": {...}}`` or
          ``{"id": 7, "ok": false, "error": "...", "kind": "op" | "internal"}``

It runs inside the sandbox (a container's Debian python3, or a local subprocess), so it is
standard-library only and Python >= 3.9. It is started as a script
(``python3 /opt/skillgym/executor.py --root /workspace``) with :mod:`ops` next to it. Nothing
a request does may end the loop: only EOF on stdin (the host went away) stops it.

Privileges: with ``--tool-uid`` the executor stays root (with only the capabilities its
sandbox grants: set*id and kill) while tool commands run as the tool uid and file ops run with
it as the effective uid. A tool command can then neither signal, trace, nor open the fds of
the executor, so it cannot forge the answers the host (and a grader) reads. Without it (the
unisolated local backend, or bubblewrap as a non-root user) commands share the executor's uid.

Optional flags apply limits before serving, for the local backend where no container does
it: ``--memory-mb`` (RLIMIT_AS) and ``--nproc`` (RLIMIT_NPROC, applied to the tool uid).
``--op-timeout`` bounds every op but ``run`` (which has its own timeout): a catastrophic
regex in grep, say, ends with an error instead of hanging the sandbox.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import traceback

if __package__:
    from . import ops
else:  # run as a script: ops.py sits in the same folder, which is sys.path[0]
    import ops  # type: ignore[no-redef]

READY = {"id": None, "ok": True, "result": {"ready": True}}
# Ops that manage privileges themselves (run spawns as the tool uid; reset kills as root).
ROOT_OPS = {"run", "reset", "ping"}
OP_TIMEOUT_S = 30.0
RUN_SLACK_S = 0.7  # a run op gets its own timeout plus this before the alarm stops it


class OpTimeout(BaseException):
    """Raised by SIGALRM; a BaseException so that no ``except Exception`` in an op swallows it."""


def _alarm(signum, frame):
    raise OpTimeout()


def handle(root: str, request: object) -> dict:
    """Answer one decoded request; never raises."""
    req_id = request.get("id") if isinstance(request, dict) else None
    op = request.get("op") if isinstance(request, dict) else None
    args = request.get("args") if isinstance(request, dict) else None
    limit = OP_TIMEOUT_S
    if op == "run" and isinstance(args, dict):
        t = args.get("timeout")
        limit = (
            t if isinstance(t, (int, float)) and not isinstance(t, bool) and 0 < t < 86_400 else 30.0
        ) + RUN_SLACK_S
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        if op in ROOT_OPS:
            return _handle(root, request, req_id)
        with ops.as_tool_user():
            return _handle(root, request, req_id)
    except OpTimeout:
        return {
            "id": req_id,
            "ok": False,
            "kind": "op",
            "error": f"op {op!r} did not finish within {limit:g} s and was stopped; "
            "narrow it (a smaller path, a simpler pattern)",
        }
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _handle(root: str, request: object, req_id: object) -> dict:
    try:
        if not isinstance(request, dict):
            raise ops.OpError("request must be a JSON object with 'id', 'op' and 'args'")
        op = request.get("op")
        func = ops.OPS.get(op) if isinstance(op, str) else None
        if func is None:
            raise ops.OpError(f"unknown op {op!r}; known ops: {', '.join(sorted(ops.OPS))}")
        args = request.get("args") or {}
        if not isinstance(args, dict):
            raise ops.OpError(f"args of op {op!r} must be a JSON object, got {type(args).__name__}")
        return {"id": req_id, "ok": True, "result": func(root, **args)}
    except ops.OpError as exc:
        return {"id": req_id, "ok": False, "error": str(exc), "kind": "op"}
    except MemoryError:
        return {
            "id": req_id,
            "ok": False,
            "kind": "op",
            "error": "the op ran out of memory in the sandbox; ask for less at once (a smaller file or range)",
        }
    except RecursionError:
        return {"id": req_id, "ok": False, "kind": "op", "error": "the request is nested too deeply"}
    except Exception:  # a bug or an unexpected OS error: report it, keep serving
        last = traceback.format_exc().strip().splitlines()[-1]
        return {"id": req_id, "ok": False, "error": last, "kind": "internal"}


def encode(response: dict) -> bytes:
    try:
        text = json.dumps(response)
    except (TypeError, ValueError) as exc:  # an op returned something JSON cannot carry
        text = json.dumps(
            {"id": response.get("id"), "ok": False, "error": f"unserializable result: {exc}", "kind": "internal"}
        )
    return text.encode("utf-8") + b"\n"


def serve(root: str, inp, out) -> None:
    """The loop: ``inp`` yields request lines (bytes), ``out`` is a binary writer."""
    out.write(encode(READY))
    out.flush()
    for line in inp:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
        except (ValueError, RecursionError, MemoryError) as exc:
            # The host writes the id first: answering under it lets the host match the error
            # instead of waiting for an answer that never comes.
            found = re.match(rb'\{"id": (\d{1,18}),', line)
            response = {
                "id": int(found.group(1)) if found else None,
                "ok": False,
                "error": f"malformed request line: {type(exc).__name__}: {exc}"[:500],
                "kind": "op",
            }
        else:
            response = handle(root, request)
        out.write(encode(response))
        out.flush()


def apply_limits(
    root: str, memory_mb: int | None, nproc: int | None, tool_uid: int | None, tool_gid: int | None
) -> None:
    import resource

    if memory_mb:
        size = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size, size))
    if tool_uid is not None:
        if os.geteuid() != 0:
            raise SystemExit("executor: --tool-uid needs the executor to run as root")
        os.setgroups([])  # no supplementary group (docker, ...) reaches tool commands or file ops
        gid = tool_gid if tool_gid is not None else tool_uid
        try:
            if os.stat(root).st_uid != tool_uid:
                os.chown(root, tool_uid, gid)  # a fresh tmpfs belongs to root: hand it to the tool user
        except PermissionError:
            pass
        ops.configure(tool_uid, gid, nproc)
    elif nproc:
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))


def main(argv: list[str] | None = None) -> int:
    global OP_TIMEOUT_S
    parser = argparse.ArgumentParser(description="skillgym sandbox executor (JSON lines on stdin/stdout)")
    parser.add_argument("--root", default=ops.VIRTUAL_ROOT)
    parser.add_argument("--memory-mb", type=int, default=None)
    parser.add_argument("--nproc", type=int, default=None)
    parser.add_argument("--tool-uid", type=int, default=None)
    parser.add_argument("--tool-gid", type=int, default=None)
    parser.add_argument("--op-timeout", type=float, default=OP_TIMEOUT_S)
    parser.add_argument(
        "--pid-namespace-per-command",
        action="store_true",
        help="run each command in its own pid namespace (nested bubblewrap)",
    )
    args = parser.parse_args(argv)
    OP_TIMEOUT_S = args.op_timeout
    apply_limits(args.root, args.memory_mb, args.nproc, args.tool_uid, args.tool_gid)
    if args.pid_namespace_per_command:
        ops.configure(pid_namespace_per_command=True)
    os.chdir(args.root)
    # Responses own the real stdout; anything else that writes to sys.stdout (a stray print
    # in an op) goes to stderr instead of corrupting the protocol.
    out = os.fdopen(os.dup(1), "wb")
    sys.stdout = sys.stderr
    try:
        serve(args.root, sys.stdin.buffer, out)
    except (BrokenPipeError, KeyboardInterrupt):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
