"""BFCL v4 multi-turn (``bfcl-eval==2026.3.23``, Apache-2.0): loader, sandboxed executor and scorer.

Each entry is a conversation of several user turns over simulated APIs (a file system, a
messaging app, a trading bot, ...). The model answers each turn with function calls; BFCL scores
a turn by the *state* the calls leave (every public attribute of every API instance equals the
ground truth's after the same turn) and by the *responses* (what the ground-truth calls returned
must appear among the model's results). An entry passes when every turn passes.

The API classes are BFCL's own (``func_source_code/*.py`` from the wheel), run inside the
episode's sandbox by a small driver written here (:data:`DRIVER`): calls are parsed with
``ast`` (literals only, never ``eval``), dispatched to the instance that has the method, and
the results and state checks come back as JSON. Nothing of BFCL runs in the host process.

    entry = load_entries("multi_turn_base")[0]
    outcome = run_entry(entry, policy, sandbox)      # a skillgym Policy plays every turn
    outcome.passed, outcome.turns

:class:`GoldPolicy` replays the ground truth (every entry passes) and :class:`SilentPolicy`
makes no call (an entry fails unless no turn needs a call): the scripted checks of the scorer.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from typing import Any

from skillgym.policies.base import Policy
from skillgym.sandbox.base import Sandbox
from skillgym.toolcalls import assistant_message, parse_turn, render_tool_call_text
from skillgym.types import Message

from .wheels import BFCL, ensure_files

__all__ = [
    "CATEGORIES",
    "BfclEntry",
    "EntryOutcome",
    "GoldPolicy",
    "SilentPolicy",
    "load_entries",
    "parse_call",
    "run_entry",
    "tool_schemas",
]

CATEGORIES = ("multi_turn_base", "multi_turn_miss_func", "multi_turn_miss_param", "multi_turn_long_context")
DATA = "bfcl_eval/data"
SOURCE = "bfcl_eval/eval_checker/multi_turn_eval/func_source_code"
CLASS_FILES = {
    "GorillaFileSystem": "gorilla_file_system",
    "MathAPI": "math_api",
    "MessageAPI": "message_api",
    "TwitterAPI": "posting_api",
    "TicketAPI": "ticket_api",
    "TradingBot": "trading_bot",
    "TravelAPI": "travel_booking",
    "VehicleControlAPI": "vehicle_control",
}
MAX_STEPS_PER_TURN = 20
WORKDIR = ".bfcl"


def _members() -> list[str]:
    files = [f"{DATA}/BFCL_v4_{c}.json" for c in CATEGORIES]
    files += [f"{DATA}/possible_answer/BFCL_v4_{c}.json" for c in CATEGORIES]
    files += [f"{DATA}/multi_turn_func_doc/{m}.json" for m in CLASS_FILES.values()]
    files += [f"{SOURCE}/{m}.py" for m in (*CLASS_FILES.values(), "long_context")]
    return files


@dataclass
class BfclEntry:
    """One multi-turn entry with its ground truth."""

    id: str
    category: str
    turns: list[list[Message]]
    initial_config: dict[str, Any]
    involved_classes: list[str]
    ground_truth: list[list[str]]
    excluded_functions: list[str] = field(default_factory=list)
    missed_functions: dict[int, list[str]] = field(default_factory=dict)


def _jsonl(path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_entries(category: str = "multi_turn_base", progress: bool | None = None) -> list[BfclEntry]:
    """The entries of one multi-turn category (200 each), downloading the wheel on first use."""
    if category not in CATEGORIES:
        raise ValueError(f"BFCL category {category!r}: choose one of {', '.join(CATEGORIES)}")
    folder = ensure_files(BFCL, _members(), progress=progress)
    answers = {
        a["id"]: a["ground_truth"] for a in _jsonl(folder / DATA / "possible_answer" / f"BFCL_v4_{category}.json")
    }
    out = []
    for row in _jsonl(folder / DATA / f"BFCL_v4_{category}.json"):
        out.append(
            BfclEntry(
                id=row["id"],
                category=category,
                turns=row["question"],
                initial_config=row.get("initial_config", {}),
                involved_classes=row["involved_classes"],
                ground_truth=answers[row["id"]],
                excluded_functions=row.get("excluded_function", []),
                missed_functions={int(k): v for k, v in (row.get("missed_function") or {}).items()},
            )
        )
    return out


_TYPES = {"dict": "object", "float": "number", "tuple": "array", "any": None}


def _schema(node: Any) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "type" and isinstance(value, str) and value in _TYPES:
                if _TYPES[value] is not None:
                    out[key] = _TYPES[value]
                continue
            out[key] = _schema(value)
        return out
    if isinstance(node, list):
        return [_schema(v) for v in node]
    return node


def tool_schemas(entry: BfclEntry, turn: int = 0) -> list[dict[str, Any]]:
    """OpenAI tool schemas of the entry's classes, as offered at ``turn`` (a missed function
    is withheld until the turn that reveals it; excluded functions never appear)."""
    folder = ensure_files(BFCL, _members())
    hidden = set(entry.excluded_functions)
    hidden |= {f for t, names in entry.missed_functions.items() if t > turn for f in names}
    tools = []
    for cls in entry.involved_classes:
        for doc in _jsonl(folder / DATA / "multi_turn_func_doc" / f"{CLASS_FILES[cls]}.json"):
            if doc["name"] in hidden:
                continue
            tools.append(
                {
                    "type": "function",
                    "function": {
                        "name": doc["name"],
                        "description": doc["description"],
                        "parameters": _schema(doc["parameters"]),
                    },
                }
            )
    return tools


def parse_call(text: str) -> list[Any]:
    """``name(a, b=1)`` -> ``[name, [a], {"b": 1}]``; arguments must be literals."""
    node = ast.parse(text.strip(), mode="eval").body
    if not isinstance(node, ast.Call) or not isinstance(node.func, (ast.Name, ast.Attribute)):
        raise ValueError(f"not a function call: {text!r}")
    name = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
    args = [ast.literal_eval(a) for a in node.args]
    kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg is not None}
    return [name, args, kwargs]


DRIVER = r"""
import copy, importlib, json, sys
sys.path.insert(0, ".bfcl")
spec = json.load(open(".bfcl/in.json"))
MODULES = spec["modules"]

def fresh():
    out = {}
    for cls in spec["classes"]:
        module = importlib.import_module("bfcl_eval.eval_checker.multi_turn_eval.func_source_code." + MODULES[cls])
        obj = getattr(module, cls)()
        config = spec["initial_config"].get(cls, {})
        obj._load_scenario(copy.deepcopy(config), long_context=spec["long_context"])
        out[cls] = obj
    return out

def call(instances, name, args, kwargs):
    for obj in instances.values():
        method = getattr(obj, name, None)
        if callable(method) and not name.startswith("_"):
            try:
                return repr(method(*args, **kwargs))
            except Exception as exc:
                return "Error during execution: %s: %s" % (type(exc).__name__, exc)
    return "Error: no function named %s" % name

def public(obj):
    return {k: v for k, v in vars(obj).items() if not k.startswith("_")}

model, gold = fresh(), fresh()
report = {"model_results": [], "turns": []}
for index, calls in enumerate(spec["model"]):
    report["model_results"].append([call(model, *c) for c in calls])
    if spec["gold"] is None:
        continue
    gold_results = [call(gold, *c) for c in spec["gold"][index]]
    states = {cls: public(model[cls]) == public(gold[cls]) for cls in spec["classes"]}
    seen = set(r for turn in report["model_results"][: index + 1] for r in turn)
    responses = all(r in seen for r in gold_results)
    report["turns"].append({"state": all(states.values()), "states": states, "response": responses})
print(json.dumps(report))
"""


def _install(sandbox: Sandbox) -> None:
    """Copy the API classes and the driver into the sandbox (once per sandbox)."""
    try:
        sandbox.read_file(f"{WORKDIR}/driver.py")
        return
    except Exception:  # not there yet
        pass
    folder = ensure_files(BFCL, _members())
    files = {f"{WORKDIR}/driver.py": DRIVER}
    package = "bfcl_eval/eval_checker/multi_turn_eval/func_source_code"
    parts = package.split("/")
    for depth in range(1, len(parts) + 1):
        files[f"{WORKDIR}/{'/'.join(parts[:depth])}/__init__.py"] = ""
    for module in (*CLASS_FILES.values(), "long_context"):
        files[f"{WORKDIR}/{package}/{module}.py"] = (folder / SOURCE / f"{module}.py").read_text(encoding="utf-8")
    sandbox.put_files(files)


def execute(
    sandbox: Sandbox, entry: BfclEntry, model: list[list[list[Any]]], gold: list[list[list[Any]]] | None
) -> dict[str, Any]:
    """Run the model's calls (and the ground truth's) turn by turn in the sandbox."""
    _install(sandbox)
    spec = {
        "modules": CLASS_FILES,
        "classes": entry.involved_classes,
        "initial_config": entry.initial_config,
        "long_context": entry.category == "multi_turn_long_context",
        "model": model,
        "gold": gold,
    }
    sandbox.write_file(f"{WORKDIR}/in.json", json.dumps(spec))
    result = sandbox.run(f"python3 -I {WORKDIR}/driver.py", timeout=60)
    if result["exit_code"] != 0:
        raise RuntimeError(f"BFCL driver failed in the sandbox: {(result.get('stderr') or '')[-600:]}")
    return json.loads(result["stdout"])


@dataclass
class EntryOutcome:
    """How one entry went: ``passed`` when every turn's state and responses match."""

    id: str
    passed: bool
    turns: list[dict[str, Any]]
    calls: list[list[list[Any]]]
    messages: list[Message]


def run_entry(entry: BfclEntry, policy: Policy, sandbox: Sandbox) -> EntryOutcome:
    """Play every turn of ``entry`` with ``policy`` (tool results from the sandboxed APIs), then score.

    The policy sees the chat so far and ``info["tools"]`` (the schemas offered at that turn);
    a turn ends when it answers without a call (or after :data:`MAX_STEPS_PER_TURN` steps).
    """
    messages: list[Message] = []
    calls: list[list[list[Any]]] = []
    for turn, user_messages in enumerate(entry.turns):
        messages += list(user_messages)
        calls.append([])
        info = {"tools": tool_schemas(entry, turn), "task_id": entry.id, "turn": turn}
        for _ in range(MAX_STEPS_PER_TURN):
            action = policy.act(messages, info)
            parsed = parse_turn(action, call_id_prefix=f"t{turn}")
            good = [c for c in parsed.calls if c.name and c.error is None]
            messages.append(assistant_message(parsed.content, None, good))
            made = [[c.name, [], dict(c.arguments or {})] for c in good]
            if not made:
                break
            results = execute(sandbox, entry, [*calls[:-1], calls[-1] + made], None)["model_results"][-1]
            calls[-1] += made
            for call, result in zip(good, results[-len(made) :]):
                messages.append({"role": "tool", "tool_call_id": call.id, "name": call.name, "content": result})
    gold = [[parse_call(c) for c in turn] for turn in entry.ground_truth]
    report = execute(sandbox, entry, calls, gold)
    passed = all(t["state"] and t["response"] for t in report["turns"])
    return EntryOutcome(id=entry.id, passed=passed, turns=report["turns"], calls=calls, messages=messages)


class GoldPolicy(Policy):
    """Replays the ground-truth calls of each turn, then ends the turn (checks the scorer)."""

    policy_id = "bfcl:gold"

    def __init__(self, entry: BfclEntry) -> None:
        self.entry = entry

    def act(self, observation: list[Message], info: dict[str, Any]) -> str:
        turn = info["turn"]
        last = observation[-1] if observation else {}
        if last.get("role") == "tool" or not self.entry.ground_truth[turn]:
            return "Done."
        parts = []
        for text in self.entry.ground_truth[turn]:
            name, args, kwargs = parse_call(text)
            if args:  # positional arguments become the method's parameters by name
                params = _param_names(self.entry, name, info["tools"])
                kwargs = {**dict(zip(params, args)), **kwargs}
            parts.append(render_tool_call_text(name, kwargs))
        return "\n".join(parts)


def _param_names(entry: BfclEntry, name: str, tools: list[dict[str, Any]]) -> list[str]:
    for tool in tools:
        if tool["function"]["name"] == name:
            return list(tool["function"]["parameters"].get("properties", {}))
    return []


class SilentPolicy(Policy):
    """Answers every turn without a call (checks the scorer)."""

    policy_id = "bfcl:silent"

    def act(self, observation: list[Message], info: dict[str, Any]) -> str:
        return "I will not do that."
