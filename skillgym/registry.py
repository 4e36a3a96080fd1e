"""The environment registry: ``register`` an id, ``make`` an env, ``list_envs``.

Every id registered here is also registered with Gymnasium as ``skillgym/<id>``, so
``gymnasium.make("skillgym/codebase-explorer-v0")`` works once skillgym is imported.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium

from skillgym.spec import ENV_ID_RE

GYM_NAMESPACE = "skillgym"


@dataclass
class Registration:
    id: str
    entry_point: Callable[..., Any] | str
    description: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)

    def load(self) -> Callable[..., Any]:
        if callable(self.entry_point):
            return self.entry_point
        module, _, attr = self.entry_point.partition(":")
        return getattr(importlib.import_module(module), attr)


_REGISTRY: dict[str, Registration] = {}
_BUILTINS_LOADED = False


def register(
    id: str,
    entry_point: Callable[..., Any] | str,
    *,
    description: str = "",
    override: bool = False,
    **kwargs: Any,
) -> None:
    """Register an environment factory under ``id`` ('name-vN').

    ``entry_point`` is a callable or a ``"module:function"`` string returning a SkillEnv;
    ``kwargs`` are its defaults, which ``make(id, **overrides)`` can change.
    """
    if not ENV_ID_RE.match(id):
        raise ValueError(f"env id {id!r} must look like 'name-vN' (lowercase, e.g. 'my-skill-v0')")
    if id in _REGISTRY and not override:
        raise ValueError(f"env {id!r} is already registered; pass override=True to replace it")
    _REGISTRY[id] = Registration(id, entry_point, description, dict(kwargs))
    gymnasium.register(
        id=f"{GYM_NAMESPACE}/{id}",
        entry_point=_gym_entry,
        kwargs={"_skillgym_id": id},
        disable_env_checker=False,
    )


def _gym_entry(_skillgym_id: str, **kwargs: Any):
    return make(_skillgym_id, **kwargs)


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        importlib.import_module("skillgym.envs")


def make(id: str, **kwargs: Any):
    """Build the environment registered as ``id``; ``skill:<name>`` compiles a library skill."""
    _load_builtins()
    if id.startswith("skill:"):
        from skillgym.compiler import make_from_library

        return make_from_library(id.removeprefix("skill:"), **kwargs)
    if id not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise KeyError(f"no environment {id!r} is registered; known environments: {known}")
    reg = _REGISTRY[id]
    return reg.load()(**{**reg.kwargs, **kwargs})


def list_envs() -> list[Registration]:
    _load_builtins()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]
