"""A skillgym env as a `SkyRL-gym <https://pypi.org/project/skyrl-gym/>`_ text env (``BaseTextEnv``).

    import skillgym.adapters.skyrl                    # registers env class "skillgym"
    rows = skillgym.adapters.skyrl.dataset_rows("codebase-explorer-v0", split="train")
    env = skyrl_gym.make("skillgym", env_config={}, extras=rows[0])

SkyRL builds one env per dataset row with the row's extra fields as ``extras``; a row names
the skillgym env and task (``env_id``, ``task_id``). ``init`` resets the skillgym env on that
task and returns its chat (system prompt with the Qwen3 ``<tools>`` block, then the task
prompt): the env's own prompt, not the row's copy, so the env stays the single source of
truth. ``step`` takes the model's text turn (``<tool_call>`` markup), runs it through
``SkillEnv.step`` (the env's tools on its sandbox) and returns the tool results as one user
turn of ``<tool_response>`` blocks; on the final step the reward is the env's grader score.
"""

from __future__ import annotations

from typing import Any

import skyrl_gym
from skyrl_gym.envs.base_text_env import BaseTextEnv, BaseTextEnvStepOutput

import skillgym
from skillgym.adapters.chat_text import system_prompt_with_tools, text_of, tool_responses_text

ENV_CLASS = "skillgym"


class SkillgymTextEnv(BaseTextEnv):
    """One skillgym episode as a SkyRL-gym text env.

    Args:
        env_config: SkyRL's per-env-class config; may hold ``env_id`` and ``env_kwargs``
            (options for :func:`skillgym.make`) as defaults for every row.
        extras: The dataset row's fields: ``task_id`` (required), ``env_id``, ``split``.
    """

    def __init__(self, env_config: Any = None, extras: dict[str, Any] | None = None):
        super().__init__()
        config = dict(env_config or {})
        extras = dict(extras or {})
        if not extras.get("task_id"):
            raise ValueError("a skillgym row needs 'task_id' (build rows with skillgym.adapters.skyrl.dataset_rows)")
        self.env_id = str(extras.get("env_id") or config.get("env_id") or "")
        if not self.env_id:
            raise ValueError("a skillgym row (or the env config) needs 'env_id', e.g. 'codebase-explorer-v0'")
        self.task_id = str(extras["task_id"])
        kwargs = dict(config.get("env_kwargs") or {})
        if extras.get("split"):
            kwargs["split"] = extras["split"]
        self.env = skillgym.make(self.env_id, **kwargs)
        self.max_turns = self.env.env_spec.max_turns
        self._seen = 0
        self.reward = 0.0
        self.reward_components: dict[str, Any] = {}

    def init(self, prompt: Any = None) -> tuple[list[dict[str, str]], dict[str, Any]]:
        messages, info = self.env.reset(options={"task_id": self.task_id})
        self._seen = len(messages)
        system = next((m for m in messages if m.get("role") == "system"), None)
        user = next(m for m in messages if m.get("role") == "user")
        chat = [
            {
                "role": "system",
                "content": system_prompt_with_tools(
                    text_of(system.get("content")) if system else "", info.get("tools", [])
                ),
            },
            {"role": "user", "content": text_of(user.get("content"))},
        ]
        return chat, {
            "task_id": info.get("task_id"),
            "task_metadata": info.get("task_metadata", {}),
            "tools": info.get("tools", []),
        }

    def step(self, action: str) -> BaseTextEnvStepOutput:
        self.turns += 1
        messages, reward, terminated, truncated, info = self.env.step(action)
        new = messages[self._seen :]
        self._seen = len(messages)
        done = bool(terminated or truncated)
        answers = [m for m in new if m.get("role") == "tool"]
        observations = [] if done or not answers else [{"role": "user", "content": tool_responses_text(answers)}]
        if done:
            self.reward, self.reward_components = float(reward), dict(info.get("reward_components") or {})
        metadata = {
            "terminated": bool(terminated),
            "truncated": bool(truncated),
            "turn": info.get("turn"),
            "tool_errors": info.get("tool_errors", []),
            "reward_components": info.get("reward_components"),
        }
        return BaseTextEnvStepOutput(
            observations=observations, reward=float(reward), done=done, metadata=metadata, postprocessed_action=None
        )

    def get_metrics(self) -> dict[str, Any]:
        numeric = {
            k: float(v)
            for k, v in self.reward_components.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        return {"reward": self.reward, "turns": self.turns, **numeric}

    def close(self) -> None:
        self.env.close()


def dataset_rows(
    env_id: str, split: str = "train", limit: int | None = None, **env_kwargs: Any
) -> list[dict[str, Any]]:
    """SkyRL dataset rows for env ``env_id``'s tasks (reading them starts no sandbox).

    Args:
        env_id: Any id :func:`skillgym.make` accepts.
        split: The task split.
        limit: Only the first ``limit`` tasks.
        **env_kwargs: Spec options for :func:`skillgym.make_spec`.

    Returns:
        Rows with ``prompt`` (the task prompt as one user message, for SkyRL's bookkeeping),
        ``env_class`` (``"skillgym"``), ``env_id``, ``task_id`` and ``split``.
    """
    tasks = list(skillgym.make_spec(env_id, **env_kwargs).tasks.tasks(split))[:limit]
    return [
        {
            "prompt": [{"role": "user", "content": t.prompt}],
            "env_class": ENV_CLASS,
            "env_id": env_id,
            "task_id": t.id,
            "split": split,
        }
        for t in tasks
    ]


if ENV_CLASS not in skyrl_gym.registry:
    skyrl_gym.register(id=ENV_CLASS, entry_point=SkillgymTextEnv)
