"""Any skillgym env as a TRL ``environment_factory`` class (GRPO with the env's own reward).

TRL's contract: the public methods of an environment instance are the tools (their type
hints and Google-style docstrings become the schemas), ``reset(**row)`` receives the dataset
row and returns text appended to the prompt's last user message, and ``get_reward()`` scores
the finished rollout. Here every tool method forwards one call to the wrapped
:class:`~skillgym.env.SkillEnv`, so the tools, the sandbox and the grader are the env's own:
nothing is written twice (DESIGN.md, "the one rule").

The episode ends when the model calls ``submit``: TRL does not hand the final free-text
turn to ``get_reward``, so a rollout that never submits scores 0.
"""

from __future__ import annotations

import copy
import inspect
import itertools
import json
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from skillgym.env import SkillEnv, system_prompt_for
from skillgym.tools.base import Tool

_ids = itertools.count()


class SkillEnvAdapter:
    """Base of the generated classes: holds one SkillEnv and the state of one rollout.
    ``tool_schemas`` are the env's tools exactly as the env offers them (see :func:`match_env_prompts`)."""

    _env_factory: Callable[[], SkillEnv]
    tool_schemas: list[dict[str, Any]] = []

    def __init__(self) -> None:
        self._env = type(self)._env_factory()
        self._done = False
        self._reward = 0.0
        self._last_info: dict[str, Any] = {}

    def reset(self, **row: Any) -> str:
        """Start the episode for ``row["task_id"]`` (or a seeded draw) and return the task prompt."""
        options = {"task_id": row["task_id"]} if row.get("task_id") else {}
        observation, _ = self._env.reset(seed=row.get("seed"), options=options)
        self._done, self._reward, self._last_info = False, 0.0, {}
        return observation[-1]["content"]

    def get_reward(self) -> float:
        return self._reward if self._done else 0.0

    def _call(self, name: str, arguments: dict[str, Any]) -> str:
        if self._done:
            return "The task is over: the answer was already submitted (or the budget ran out)."
        call = {
            "id": f"call_{next(_ids)}",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)},
        }
        observation, reward, terminated, truncated, info = self._env.step(
            {"role": "assistant", "content": "", "tool_calls": [call]}
        )
        self._last_info = info
        if terminated or truncated:
            self._done, self._reward = True, float(reward)
        return observation[-1]["content"]

    @property
    def trajectory(self):
        return self._env.trajectory

    def _close(self) -> None:
        # Underscored: every public method of this class is offered to the model as a tool.
        self._env.close()


def _tool_method(tool: Tool) -> Callable[..., str]:
    """A plain function with the tool's signature and a Google-style docstring."""
    args_model: type[BaseModel] = tool.Args
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    annotations: dict[str, Any] = {"return": str}
    doc_args = []
    for name, field in args_model.model_fields.items():
        annotation = field.annotation
        default = inspect.Parameter.empty if field.is_required() else field.default
        params.append(
            inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=annotation)
        )
        annotations[name] = annotation
        doc_args.append(f"    {name}: {field.description or name}")
    tool_name = tool.name

    def method(self: SkillEnvAdapter, *args: Any, **kwargs: Any) -> str:
        bound = inspect.signature(method).bind(self, *args, **kwargs)
        bound.apply_defaults()
        arguments = {k: v for k, v in bound.arguments.items() if k != "self" and v is not None}
        return self._call(tool_name, arguments)

    method.__name__ = method.__qualname__ = tool_name
    method.__signature__ = inspect.Signature(params, return_annotation=str)  # type: ignore[attr-defined]
    method.__annotations__ = annotations
    doc = tool.description.rstrip(".") + "."
    if doc_args:
        doc += "\n\nArgs:\n" + "\n".join(doc_args)
    method.__doc__ = doc + "\n\nReturns:\n    The tool's output, as the model reads it."
    return method


def trl_environment(env_id: str, **env_kwargs: Any) -> type[SkillEnvAdapter]:
    """A class to pass as ``GRPOTrainer(environment_factory=...)`` for the skillgym env ``env_id``.

    Each instance owns one env (one sandbox); TRL creates one per concurrent rollout and
    reuses them through ``reset``.
    """
    import skillgym

    # The tools come from an env that is built but never reset (no sandbox starts): an env class
    # may offer tools beyond its spec's (orchestrator-v0's host-side subagent tools).
    probe = skillgym.make(env_id, **env_kwargs)
    try:
        methods = {name: _tool_method(tool) for name, tool in probe.tools.items()}
        schemas = copy.deepcopy(probe.tool_schemas)
    finally:
        probe.close()
    for reserved in ("reset", "get_reward", "trajectory"):
        if reserved in methods:
            raise ValueError(f"{env_id}: a tool named {reserved!r} would clash with the TRL environment protocol")
    cls_name = "".join(part.title() for part in env_id.replace("-", "_").split("_") if part) + "TRLEnv"
    return type(
        cls_name,
        (SkillEnvAdapter,),
        {
            **methods,
            "_env_factory": staticmethod(lambda: skillgym.make(env_id, **env_kwargs)),
            "tool_schemas": schemas,
            "__doc__": f"TRL environment for {env_id}.",
        },
    )


def grpo_dataset(
    env_id: str, split: str = "train", n: int | None = None, task_ids: list[str] | None = None, **env_kwargs: Any
):
    """Rows for GRPO: the env's system prompt and an empty user turn that ``reset`` fills
    with the task prompt, plus the ``task_id`` that ``reset`` receives. ``task_ids`` keeps only
    those tasks of the split (then ``n`` caps how many)."""
    from datasets import Dataset

    import skillgym

    spec = skillgym.make_spec(env_id, **env_kwargs)
    tasks = list(spec.tasks.tasks(split))
    if task_ids is not None:
        wanted = set(task_ids)
        unknown = wanted - {t.id for t in tasks}
        if unknown:
            raise ValueError(
                f"{env_id}: {len(unknown)} task ids are not in its {split!r} split, e.g. {sorted(unknown)[0]!r}"
            )
        tasks = [t for t in tasks if t.id in wanted]
    tasks = tasks[:n]
    system = system_prompt_for(spec)
    head = [{"role": "system", "content": system}] if system else []
    return Dataset.from_list([{"prompt": head + [{"role": "user", "content": ""}], "task_id": t.id} for t in tasks])


def match_env_prompts(trainer: Any, environment: type[SkillEnvAdapter]) -> None:
    """Make a ``GRPOTrainer`` render its prompts with the env's own tool schemas.

    TRL turns the environment's methods into schemas with transformers' ``get_json_schema``,
    which writes them differently from the env (key order, no defaults, a ``return`` entry, the
    tools sorted by name). A student SFT'd on the env's prompts then sees another system block in
    GRPO than in every eval; a from-scratch student fails there outright (no tool call at all).
    The methods still run the calls; only the rendered (and parsed-against) schemas change.

    Raises:
        RuntimeError: the installed TRL keeps its environment tools elsewhere (nothing is changed).
    """
    tools = getattr(trainer, "_env_tools", None)
    if not isinstance(tools, dict) or not tools:
        raise RuntimeError(
            "this TRL version does not keep environment tools in GRPOTrainer._env_tools; skillgym cannot render "
            "the env's tool schemas in GRPO prompts (pin the trl version in pyproject.toml's train extra)"
        )
    for name in tools:
        tools[name] = copy.deepcopy(environment.tool_schemas)


def check_env_prompt(tokenizer: Any, row: dict[str, Any], environment: type[SkillEnvAdapter]) -> None:
    """Check that a GRPO row renders to the very prompt the env gives a policy (same token ids).

    TRL builds the first turn from the dataset row's messages with the reset text appended to
    the last one, and the tools :func:`match_env_prompts` set; the env builds it from its own
    observation and schemas. Both must agree, or GRPO trains on prompts no eval ever shows.

    Raises:
        ValueError: they differ; the message gives the first differing position.
    """
    instance = environment()
    try:
        prompt = [dict(m) for m in row["prompt"]]
        prompt[-1]["content"] = str(prompt[-1].get("content") or "") + instance.reset(**row)
        episode = instance.trajectory  # what the env shows a policy after that same reset
    finally:
        instance._close()

    def ids(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[int]:
        encoded = tokenizer.apply_chat_template(
            messages, tools=tools or None, add_generation_prompt=True, tokenize=True, return_dict=True
        )
        return list(encoded["input_ids"])

    ours, theirs = ids(episode.messages, episode.tools), ids(prompt, environment.tool_schemas)
    if ours != theirs:
        at = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
        raise ValueError(
            f"GRPO's first prompt for task {row['task_id']!r} differs from the env's at token {at} "
            f"({len(theirs)} vs {len(ours)} tokens): {tokenizer.decode(theirs[at : at + 20])!r} "
            f"instead of {tokenizer.decode(ours[at : at + 20])!r}"
        )
