"""A skillgym env as a `verifiers <https://pypi.org/project/verifiers/>`_ (0.4, ``verifiers.v1``) environment.

    env = load_environment("codebase-explorer-v0", split="test", limit=10)

or from verifiers' own CLI once this module is imported (it registers itself as the
taskset plugin ``skillgym_verifiers``)::

    vf-eval skillgym_verifiers --env.taskset.env-id codebase-explorer-v0 \\
        --env.agent.runtime.type subprocess --env.agent.harness.id null -m MODEL ...

How an episode runs: like verifiers' own OpenEnv bridge, the env plays the user. The
skillgym env is reset on the task; its system prompt and tool schemas (in the Qwen3
``<tools>`` block the students are trained on) become the agent's system prompt and its
task prompt the first user turn. Every reply of the agent is one ``SkillEnv.step``: the env
parses the ``<tool_call>`` markup, runs the tools in its own sandbox and answers with
``<tool_response>`` blocks as the next user turn, until the env ends the episode. The
reward recorded on the verifiers trace (``skillgym_reward``) is the env's grader score, so
it equals what ``skillgym eval`` gives for the same task and actions. No tool or grader is
re-implemented here.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from typing import Any

import verifiers.v1 as vf
from pydantic import Field

import skillgym
from skillgym.adapters.chat_text import system_prompt_with_tools, text_of, tool_responses_text

__all__ = [
    "SkillgymData",
    "SkillgymEnv",
    "SkillgymEnvConfig",
    "SkillgymTask",
    "SkillgymTaskset",
    "SkillgymTasksetConfig",
    "load_environment",
]

REWARD_NAME = "skillgym_reward"
# verifiers resolves a taskset id as a top-level module name (dots are not allowed), so the
# adapter registers itself under one; importing this module is enough for in-process runs.
PLUGIN_ID = "skillgym_verifiers"
sys.modules.setdefault(PLUGIN_ID, sys.modules[__name__])


class SkillgymData(vf.TaskData):
    """One skillgym task, by reference: the env builds the prompt and workspace on reset."""

    env_id: str
    task_id: str
    split: str
    env_kwargs: dict[str, Any] = Field(default_factory=dict)


class SkillgymTask(vf.Task[SkillgymData]):
    """The reward lives on the trace (recorded by :class:`SkillgymEnv` from the env's grader)."""


class SkillgymTasksetConfig(vf.TasksetConfig):
    env_id: str = "codebase-explorer-v0"
    """Any id ``skillgym.make`` accepts: ``name-vN``, ``skill:NAME``, ``module:function``."""
    split: str = "test"
    limit: int | None = None
    """Only the first ``limit`` tasks of the split (None: all)."""
    task_ids: list[str] | None = None
    """Only these task ids, in this order (overrides ``limit``)."""
    env_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Options for ``skillgym.make`` (spec and env options, e.g. ``sandbox``)."""


class SkillgymTaskset(vf.Taskset[SkillgymTask, SkillgymTasksetConfig]):
    """The tasks of a skillgym env's split; reading them starts no sandbox."""

    def load(self) -> Iterator[SkillgymTask]:
        config = self.config
        spec = skillgym.make_spec(config.env_id, **config.env_kwargs)
        if config.task_ids is not None:
            tasks = [spec.tasks.get(task_id) for task_id in config.task_ids]
        else:
            tasks = list(spec.tasks.tasks(config.split))
            if config.limit is not None:
                tasks = tasks[: config.limit]
        for task in tasks:
            data = SkillgymData(
                id=task.id,
                name=task.id,
                prompt=None,
                env_id=config.env_id,
                task_id=task.id,
                split=task.split or config.split,
                env_kwargs=config.env_kwargs,
            )
            yield SkillgymTask(data, config.task)


class SkillgymEnvConfig(vf.SingleAgentEnvConfig):
    """verifiers' single-agent config; ``load_environment`` defaults the agent to the
    ``null`` harness (a plain chat loop) on a local subprocess runtime."""


class SkillgymEnv(vf.Env[SkillgymEnvConfig]):
    """Runs one skillgym episode per verifiers episode; the env's grader gives the reward."""

    async def run(self, task: SkillgymTask, agents: vf.Agents) -> None:
        data = task.data
        # skillgym's reset/step block (sandbox start, tool runs): keep them off the event loop.
        env = await asyncio.to_thread(skillgym.make, data.env_id, split=data.split, **data.env_kwargs)
        reward = 0.0
        components: dict[str, Any] = {}
        try:
            observation, info = await asyncio.to_thread(env.reset, options={"task_id": data.task_id})
            system = next((m for m in observation if m.get("role") == "system"), None)
            user = next(m for m in observation if m.get("role") == "user")
            prompt = system_prompt_with_tools(text_of(system.get("content")) if system else "", info.get("tools", []))
            seat = task.with_data(prompt=None, system_prompt=prompt)
            async with agents.agent.interaction(seat) as interaction:
                segment = await interaction.turn(text_of(user.get("content")))
                while True:
                    before = len(observation)
                    observation, step_reward, terminated, truncated, info = await asyncio.to_thread(
                        env.step, segment.last_reply
                    )
                    if terminated or truncated:
                        reward = float(step_reward)
                        components = dict(info.get("reward_components") or {})
                        break
                    if segment.terminated:  # verifiers' own limits ended the agent first
                        interaction.trace.stop("agent_terminated")
                        break
                    # observation = chat so far: [..., assistant (this reply), tool results...]
                    answers = [m for m in observation[before + 1 :] if m.get("role") == "tool"]
                    segment = await interaction.turn(tool_responses_text(answers))
            trace = interaction.trace
            trace.record_reward(REWARD_NAME, reward)
            for key, value in components.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    trace.record_metric(f"skillgym_{key}", float(value))
        finally:
            await asyncio.to_thread(env.close)


def load_environment(
    env_id: str = "codebase-explorer-v0",
    *,
    split: str = "test",
    limit: int | None = None,
    task_ids: list[str] | None = None,
    env_kwargs: dict[str, Any] | None = None,
    agent: dict[str, Any] | None = None,
) -> SkillgymEnv:
    """A verifiers environment whose tasks, tools and reward are skillgym env ``env_id``'s.

    Args:
        env_id: Any id :func:`skillgym.make` accepts.
        split: Which task split to serve.
        limit: Only the first ``limit`` tasks of the split.
        task_ids: Only these tasks (overrides ``split`` and ``limit``).
        env_kwargs: Options for :func:`skillgym.make` (e.g. ``{"sandbox": "local"}``).
        agent: verifiers ``AgentConfig`` fields (default: the ``null`` harness on a
            subprocess runtime, which needs no container and no tunnel).

    Returns:
        A ``verifiers.v1.Env``; run it with verifiers' eval (``run_eval``) or trainers.
    """
    config = SkillgymEnvConfig.model_validate(
        {
            "taskset": env_config_dict(env_id, split=split, limit=limit, task_ids=task_ids, env_kwargs=env_kwargs),
            "agent": agent if agent is not None else DEFAULT_AGENT,
        }
    )
    return SkillgymEnv(config)


DEFAULT_AGENT: dict[str, Any] = {"runtime": {"type": "subprocess"}, "harness": {"id": "null"}}


def env_config_dict(
    env_id: str,
    *,
    split: str = "test",
    limit: int | None = None,
    task_ids: list[str] | None = None,
    env_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``taskset`` block of a verifiers env config for ``env_id`` (for ``EvalConfig``)."""
    out: dict[str, Any] = {"id": PLUGIN_ID, "env_id": env_id, "split": split, "env_kwargs": env_kwargs or {}}
    if limit is not None:
        out["limit"] = limit
    if task_ids is not None:
        out["task_ids"] = task_ids
    return out
