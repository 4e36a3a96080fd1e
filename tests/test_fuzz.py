"""Fuzzing SkillEnv.step with what a model (or a clumsy policy) can send (issue 9, acceptance).

Per backend, 5,000 actions drawn with a fixed seed from every class of input that broke the
env before: malformed markup and JSON, arguments of every wrong type, message dicts with
fields of the wrong types, lone surrogates and NULs, nesting up to 100,000 levels, sizes up
to 10 MB, and hostile bash commands with short timeouts. Asserted: step() never raises, each
step ends within its own time budget (the timeouts of the calls it makes plus one second: a
correctness bound, not a performance claim), every finished episode is storable, and nothing
(container, local folder) is left once the env is closed.

Most actions are cheap; the expensive classes (big payloads, hostile commands) are capped, so
both backends together run in a couple of minutes.
"""

from __future__ import annotations

import collections
import json
import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from skillgym.env import SkillEnv
from skillgym.graders import AnswerMatch
from skillgym.sandbox.base import SandboxConfig
from skillgym.sandbox.gc import LABEL_PID, LOCAL_PREFIX
from skillgym.spec import EnvSpec
from skillgym.tasks import TaskList
from skillgym.types import Task

SEED = 20261130
N_ACTIONS = 5_000
DEFAULT_TIMEOUT = 2.0  # the sandbox's bound on any op without a timeout of its own
SLACK_S = 1.0
MAX_TURNS = 8
CAPS = {"big": 12, "hostile": 24}  # expensive classes: at most this many per backend

TOOLS = ["bash", "read_file", "write_file", "edit_file", "glob", "grep", "list_dir", "submit"]
TASK = Task(
    id="fuzz",
    prompt="What number is in n.txt?",
    files={"n.txt": "the number is 7\n", "src/a.py": "def f():\n    return 1\n", "aaa": "a" * 40_000 + "\n"},
    reference={"answer": "7"},
)


def _nested(depth: int) -> list:
    root: list = []
    node = root
    for _ in range(depth):
        node.append([])
        node = node[0]
    return root


DEEP_LIST = _nested(100_000)
TEN_MB = "x" * 10_000_000


def tc(payload: Any) -> str:
    body = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"<tool_call>{body}</tool_call>"


def struct(name: Any, arguments: Any, call_id: Any = "c1", **extra: Any) -> dict:
    return {
        "role": "assistant",
        "content": extra.pop("content", ""),
        **extra,
        "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}],
    }


# -- the classes of actions: each returns (action, seconds of tool timeouts it may use) ---------------
Draw = Callable[[random.Random], tuple[Any, float]]

GOOD_CALLS = [
    ("list_dir", {}),
    ("list_dir", {"path": "src"}),
    ("read_file", {"path": "n.txt"}),
    ("read_file", {"path": "aaa", "offset": 1, "limit": 5}),
    ("glob", {"pattern": "**/*.py"}),
    ("grep", {"pattern": "def \\w+", "path": "."}),
    ("write_file", {"path": "out/w.txt", "content": "hello"}),
    ("edit_file", {"path": "n.txt", "old_string": "7", "new_string": "7"}),
    ("bash", {"command": "echo hi; ls", "timeout": 2}),
    ("read_file", {"path": "../../etc/passwd"}),
    ("read_file", {"path": "/proc/1/root/etc/passwd"}),
    ("grep", {"pattern": "root", "path": "/etc"}),
    ("list_dir", {"path": "/"}),
]


def good(rng: random.Random) -> tuple[Any, float]:
    calls = [rng.choice(GOOD_CALLS) for _ in range(rng.choice([1, 1, 1, 2, 3]))]
    if rng.random() < 0.5:
        action = "Let me look.\n" + "".join(tc({"name": n, "arguments": a}) for n, a in calls)
    else:
        action = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": f"c{i}", "type": "function", "function": {"name": n, "arguments": json.dumps(a)}}
                for i, (n, a) in enumerate(calls)
            ],
        }
    return action, DEFAULT_TIMEOUT * len(calls)


def broken_markup(rng: random.Random) -> tuple[Any, float]:
    valid = json.dumps({"name": "read_file", "arguments": {"path": "n.txt"}})
    options = [
        tc(valid[: rng.randrange(len(valid))]),
        "<tool_call>" + valid,
        tc(""),
        tc("[1, 2]"),
        tc("null"),
        tc('{"arguments": {}}'),
        tc({"name": "grep", "arguments": {}, "pattern": "x"}),
        "oops </tool_call>",
        tc('{"name": "grep", "arguments": "pattern=x"}'),
        tc('{"name": 7}'),
        tc("{" * rng.randint(1, 50)),
        "<think>" + tc(valid),
        "</think></think>" + tc(valid) + "</tool_call>",
        tc(valid).replace('"', "'"),
        tc('{"name": "grep", "arguments": {"pattern": "a", "pattern": "b"}}'),
        tc('{"name": "read_file", "arguments": {"path": "n.txt", "limit": 1e999}}'),
        tc('{"name": "read_file", "arguments": {"path": "n.txt", "limit": NaN}}'),
        "".join(rng.choice('<>{}[]":,tool_call/ \n\\') for _ in range(rng.randint(1, 300))),
    ]
    return rng.choice(options), DEFAULT_TIMEOUT


WRONG_VALUES = [
    None,
    True,
    False,
    0,
    -1,
    2**63,
    1.5,
    float("nan"),
    float("inf"),
    "",
    "x" * 10_000,
    [],
    ["x"],
    {},
    {"a": 1},
    "\x00",
    "\ud800",
    "../..",
    "/etc/passwd",
    "-1",
    "1e9",
    " 7 ",
]


def bad_arguments(rng: random.Random) -> tuple[Any, float]:
    name, args = rng.choice(GOOD_CALLS)
    args = dict(args)
    roll = rng.random()
    if roll < 0.6 and args:
        args[rng.choice(list(args))] = rng.choice(WRONG_VALUES)
    elif roll < 0.8:
        args[rng.choice(["flags", "PATH", "limit", "timeout", "replace_all", "", "\ud800"])] = rng.choice(WRONG_VALUES)
    else:
        args = {}
    if name == "bash" and isinstance(args.get("timeout"), (int, float)) and not isinstance(args["timeout"], bool):
        args["timeout"] = 2  # keep a (valid) bash call short
    text = rng.random() < 0.5
    try:
        action: Any = tc({"name": name, "arguments": args}) if text else struct(name, args)
    except ValueError:  # NaN and friends: send the object form
        action = struct(name, args)
    return action, DEFAULT_TIMEOUT


MALFORMED_FIELDS = [
    {"content": {"text": "7"}},
    {"content": ["7"]},
    {"content": [{"type": "text", "text": 7}]},
    {"content": 7},
    {"content": [{"type": "image_url", "image_url": {"url": "x"}}]},
    {"content": [None]},
    {"content": b"7"},
    {"content": "7", "reasoning_content": ["x"]},
    {"content": "7", "reasoning_content": {"a": 1}},
    {"content": "7", "reasoning": 12},
    {"tool_calls": "grep"},
    {"tool_calls": 7},
    {"tool_calls": [7, "x"]},
    {"tool_calls": {"function": {"name": "list_dir"}}},
    {"tool_calls": [{"function": "list_dir"}]},
    {"tool_calls": [{"function": {"name": 7}}]},
    {"tool_calls": [{"function": {"name": ["list_dir"]}}]},
    {"tool_calls": [{"id": {"a": 1}, "function": {"name": "list_dir", "arguments": {}}}]},
    {"tool_calls": [{"function": {"name": "list_dir", "arguments": [1]}}]},
    {"tool_calls": [{"function": {"name": "list_dir", "arguments": b"{}"}}]},
    {"tool_calls": [{"function": {"name": "grep", "arguments": {"pattern": b"x"}}}]},
    {"tool_calls": [{"function": {"name": "grep", "arguments": {"pattern": {1, 2}}}}]},
    {"tool_calls": [{"function": {"name": "grep", "arguments": {(1, 2): "x"}}}]},
    {"tool_calls": [{"function": {"name": "read_file", "arguments": {"path": "n.txt", "limit": 10**5000}}}]},
    {"tool_calls": [{"function": {"name": "list_dir"}}] * 40},
    {"role": "user", "content": "7"},
    {},
    {"content": None, "tool_calls": None},
]


def malformed_message(rng: random.Random) -> tuple[Any, float]:
    return {"role": "assistant", **rng.choice(MALFORMED_FIELDS)}, DEFAULT_TIMEOUT


def not_a_message(rng: random.Random) -> tuple[Any, float]:
    return rng.choice([None, 7, 10**5000, 1.5, float("nan"), b"7", ["7"], ("7",), {"7"}, object(), DEEP_LIST]), 0.0


def hostile_text(rng: random.Random) -> tuple[Any, float]:
    options: list[Callable[[], Any]] = [
        lambda: (
            '<tool_call>{"name": "write_file", "arguments": {"path": "s\\ud800.txt", "content": "a\\udfffb"}}</tool_call>'
        ),
        lambda: tc({"name": "bash", "arguments": {"command": "echo a\x00b"}}),
        lambda: tc({"name": "read_file", "arguments": {"path": "a\x00b"}}),
        lambda: "\ud800 answer",
        lambda: struct("write_file", {"path": "\udc00", "content": "\ud800"}, content="x\udfff"),
        lambda: tc({"name": "bash", "arguments": {"command": "printf 'x' > \"$(printf 'n\\377')\"; ls", "timeout": 2}}),
        lambda: tc({"name": "bash", "arguments": {"command": "printf '\\033[31mred\\033[0m\\r\\b'", "timeout": 2}}),
        lambda: tc({"name": "read_file", "arguments": {"path": "n.txt", "limit": int("9" * rng.randint(20, 4200))}}),
        lambda: (
            '<tool_call>{"name": "read_file", "arguments": {"path": "n.txt", "limit": ' + "9" * 5000 + "}}</tool_call>"
        ),
        lambda: tc({"name": "x" * rng.randint(1, 100_000), "arguments": {}}),
        lambda: "<tool_call>" + "[" * rng.choice([50, 1_000, 100_000]) + "</tool_call>",
        lambda: '<tool_call>{"name": "grep", "arguments": ' + '{"a":' * rng.choice([40, 5_000]) + "</tool_call>",
        lambda: struct("grep", {"pattern": DEEP_LIST}),
        lambda: struct("grep", '{"pattern": ' + "[" * 100_000),
        lambda: struct(DEEP_LIST, {}),
        lambda: struct("grep", {"pattern": "x"}, call_id=DEEP_LIST),
        lambda: tc({"name": "list_dir", "arguments": {}}) * rng.choice([33, 1_000, 100_000]),
    ]
    return rng.choice(options)(), DEFAULT_TIMEOUT


def big(rng: random.Random) -> tuple[Any, float]:
    size = int(10 ** rng.uniform(5, 7))  # 100 kB .. 10 MB
    filler = TEN_MB[:size]
    return (
        rng.choice(
            [
                tc({"name": "write_file", "arguments": {"path": "big.txt", "content": filler}}),
                struct("write_file", {"path": "big.txt", "content": filler}),
                struct("write_file", json.dumps({"path": "big.txt", "content": filler})),
                "<think>" + filler + "</think>" + tc({"name": "list_dir", "arguments": {}}),
                filler,  # a 10 MB final answer: graded on its first MAX_ANSWER_CHARS
                tc({"name": "grep", "arguments": {"pattern": filler[:1_000_000]}}),
            ]
        ),
        DEFAULT_TIMEOUT,
    )


HOSTILE_COMMANDS = [
    "kill -9 $PPID",
    "kill -STOP $PPID",
    "mkfifo f 2>/dev/null; cat f",
    "setsid sleep 10000 &",
    "sleep 10000 & echo quick",
    "head -c 1000000000 /dev/zero",
    "yes",
    "truncate -s 3G sparse && cat sparse | wc -c",
    "cat /dev/urandom",
    "exec 1>&-; exec 2>&-; sleep 100",
    "nohup sleep 10000 >/dev/null 2>&1 &",
    "(sleep 10000 &) ; echo forked",
    "echo hi > /proc/$PPID/fd/1",
    "dd if=/dev/zero of=fill bs=1M count=64 2>/dev/null; ls -la fill",
]


def hostile_command(rng: random.Random) -> tuple[Any, float]:
    timeout = rng.choice([0.5, 1.0])
    roll = rng.random()
    if roll < 0.75:
        action = tc({"name": "bash", "arguments": {"command": rng.choice(HOSTILE_COMMANDS), "timeout": timeout}})
        return action, timeout
    setup = "mkfifo fifo 2>/dev/null; truncate -s 3G sparse3"
    target = rng.choice(
        [
            {"name": "read_file", "arguments": {"path": "fifo"}},
            {"name": "read_file", "arguments": {"path": "sparse3"}},
            {"name": "grep", "arguments": {"pattern": "(a*)*b", "path": "aaa"}},
            {"name": "grep", "arguments": {"pattern": "x", "path": "."}},
        ]
    )
    action = tc({"name": "bash", "arguments": {"command": setup, "timeout": 2}}) + tc(target)
    return action, 2 + DEFAULT_TIMEOUT


def answer(rng: random.Random) -> tuple[Any, float]:
    return rng.choice(
        [
            "7",
            "The number is 7.",
            tc({"name": "submit", "arguments": {"answer": "7"}}),
            struct("submit", {"answer": 7}),
            struct("submit", '{"answer": "7"}'),
            "",
        ]
    ), 0.0


CLASSES: list[tuple[str, Draw, float]] = [
    ("good", good, 0.22),
    ("broken_markup", broken_markup, 0.18),
    ("bad_arguments", bad_arguments, 0.2),
    ("malformed_message", malformed_message, 0.14),
    ("not_a_message", not_a_message, 0.04),
    ("hostile_text", hostile_text, 0.08),
    ("big", big, 0.02),
    ("hostile", hostile_command, 0.04),
    ("answer", answer, 0.08),
]


def draw(rng: random.Random, used: collections.Counter) -> tuple[str, Any, float]:
    names, draws, weights = zip(*CLASSES)
    while True:
        index = rng.choices(range(len(CLASSES)), weights=weights)[0]
        name = names[index]
        if used[name] < CAPS.get(name, N_ACTIONS):
            used[name] += 1
            action, seconds = draws[index](rng)
            return name, action, seconds


def make_env(backend: str) -> SkillEnv:
    spec = EnvSpec(
        id="fuzz-v0",
        tools=TOOLS,
        sandbox=SandboxConfig(backend=backend, default_timeout=DEFAULT_TIMEOUT, memory_mb=512),
        tasks=TaskList([TASK]),
        grader=AnswerMatch("normalized"),
        max_turns=MAX_TURNS,
    )
    return SkillEnv(spec)


def _leftovers(backend: str) -> list[str]:
    if backend == "docker":
        import docker

        client = docker.from_env(timeout=30)
        try:
            found = client.containers.list(all=True, filters={"label": f"{LABEL_PID}={os.getpid()}"})
            return [c.name for c in found]
        finally:
            client.close()
    return [str(p) for p in Path(tempfile.gettempdir()).glob(f"{LOCAL_PREFIX}{os.getpid()}-*")]


@pytest.fixture(params=["local", "docker"])
def backend(request):
    if request.param == "docker":
        request.getfixturevalue("docker_required")
    return request.param


@pytest.mark.timeout(900)
def test_fuzz_step_never_raises_and_ends_in_time(backend):
    rng = random.Random(SEED)
    used: collections.Counter = collections.Counter()
    failures: dict[str, list[str]] = collections.defaultdict(list)
    slow: dict[str, list[str]] = collections.defaultdict(list)
    # Only what this run leaves counts: earlier tests in the same process own their sandboxes.
    before = set(_leftovers(backend))
    env = make_env(backend)
    episodes = 0
    slowest: dict[str, float] = collections.defaultdict(float)
    try:
        env.reset(seed=0)
        for i in range(N_ACTIONS):
            name, action, seconds = draw(rng, used)
            budget = seconds + SLACK_S
            started = time.monotonic()
            try:
                _, _, terminated, truncated, _ = env.step(action)
            except Exception as exc:  # the finding: record it with its class and go on
                failures[name].append(f"action {i}: {type(exc).__name__}: {str(exc)[:300]}")
                terminated = True
            elapsed = time.monotonic() - started
            slowest[name] = max(slowest[name], round(elapsed, 3))
            if elapsed > budget:
                slow[name].append(f"action {i}: {elapsed:.2f} s > {budget:.1f} s: {_describe(action)}")
            if terminated or truncated:
                try:
                    env.trajectory.model_dump_json()  # every finished episode is storable
                except Exception as exc:
                    failures["record"].append(f"action {i}: {type(exc).__name__}: {str(exc)[:300]}")
                episodes += 1
                env.reset(seed=i)
    finally:
        env.close()
    leftovers = sorted(set(_leftovers(backend)) - before)
    report = {"failures": dict(failures), "slow": dict(slow), "leftovers": leftovers}
    print(json.dumps({"backend": backend, "episodes": episodes, "drawn": used, "slowest_step_s": slowest}))
    assert sum(used.values()) == N_ACTIONS and episodes > N_ACTIONS // (MAX_TURNS + 1)
    assert not failures and not slow and not leftovers, json.dumps(report, indent=1)[:20_000]


def _describe(action: Any) -> str:
    if isinstance(action, str):
        return repr(action[:120]) + (f"... ({len(action):,} chars)" if len(action) > 120 else "")
    if isinstance(action, dict):
        try:
            return json.dumps(action, default=repr)[:200]
        except (ValueError, RecursionError):
            return f"dict with keys {sorted(map(str, action))}"
    return type(action).__name__
