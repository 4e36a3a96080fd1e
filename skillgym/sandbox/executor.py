"""The in-sandbox server: one JSON object per line in, one per line out.

Request:  ``{"id": 7, "op": "read_file", "args": {"path": "a.py"}}``
Response: ``{"id": 7, "ok": true, "result": {...}}`` or
          ``{"id": 7, "ok": false, "error": "...", "kind": "op" | "internal"}``

It runs inside the sandbox (a container's Debian python3, or a local subprocess), so it is
standard-library only and Python >= 3.9. It is started as a script
(``python3 /opt/skillgym/executor.py --root /workspace``) with :mod:`ops` next to it. Nothing
a request does may end the loop: only EOF on stdin (the host went away) stops it.

Optional flags apply limits before serving, for the local backend where no container does
it: ``--memory-mb`` (RLIMIT_AS), ``--nproc`` (RLIMIT_NPROC) and ``--uid/--gid`` (drop root,
because the kernel does not apply RLIMIT_NPROC to root).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

if __package__:
    from . import ops
else:  # run as a script: ops.py sits in the same folder, which is sys.path[0]
    import ops  # type: ignore[no-redef]

READY = {"id": None, "ok": True, "result": {"ready": True}}


def handle(root: str, request: object) -> dict:
    """Answer one decoded request; never raises."""
    req_id = request.get("id") if isinstance(request, dict) else None
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
        except ValueError as exc:
            response = {"id": None, "ok": False, "error": f"malformed request line: {exc}", "kind": "internal"}
        else:
            response = handle(root, request)
        out.write(encode(response))
        out.flush()


def apply_limits(memory_mb: int | None, nproc: int | None, uid: int | None, gid: int | None) -> None:
    import resource

    if memory_mb:
        size = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size, size))
    if uid is not None:
        # Order matters: groups and gid while still root, uid last.
        os.setgroups([])
        os.setgid(gid if gid is not None else uid)
        os.setuid(uid)
    if nproc:
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="skillgym sandbox executor (JSON lines on stdin/stdout)")
    parser.add_argument("--root", default=ops.VIRTUAL_ROOT)
    parser.add_argument("--memory-mb", type=int, default=None)
    parser.add_argument("--nproc", type=int, default=None)
    parser.add_argument("--uid", type=int, default=None)
    parser.add_argument("--gid", type=int, default=None)
    args = parser.parse_args(argv)
    apply_limits(args.memory_mb, args.nproc, args.uid, args.gid)
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
