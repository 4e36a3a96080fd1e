"""The environment registry: ``register`` an id, ``make_spec`` reads an env, ``make`` builds one.

One path builds every env. :func:`make_spec` turns an id into an :class:`EnvSpec` and
starts nothing; :func:`make` is ``SkillEnv(make_spec(id, ...), ...)``. An id is one of:

* ``name-vN``: registered with :func:`register` (built-in envs register in ``skillgym.envs``);
* ``skill:NAME``: a skill or subagent found in the skill library and compiled
  (:func:`skillgym.compiler.spec_from_library`);
* ``module:function``: a factory that returns an :class:`EnvSpec` (or a ready
  :class:`SkillEnv`, whose ``env_spec`` is taken).

Every registered id is also registered with Gymnasium as ``skillgym/<id>``, so
``gymnasium.make("skillgym/codebase-explorer-v0")`` works once skillgym is imported.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium

from skillgym.compiler.build import spec_from_library
from skillgym.env import SkillEnv
from skillgym.sandbox.base import SandboxConfig
from skillgym.spec import ENV_ID_RE, EnvSpec

GYM_NAMESPACE = "skillgym"

ENV_KWARGS = frozenset(n for n in inspect.signature(SkillEnv.__init__).parameters if n not in ("self", "env_spec"))
"""Keyword arguments that configure the :class:`SkillEnv` (``split``, ``sandbox``, ...), not its spec."""

EntryPoint = Callable[..., Any] | str


@dataclass
class Registration:
    """One registered id: a spec factory (``spec_entry_point``) or, for envs that need their
    own :class:`SkillEnv` subclass, an env factory (``entry_point``), with default kwargs."""

    id: str
    entry_point: EntryPoint | None = None
    spec_entry_point: EntryPoint | None = None
    description: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)

    def load(self) -> Callable[..., Any]:
        """The factory: the spec factory where there is one, else the env factory."""
        return _resolve(self.spec_entry_point if self.spec_entry_point is not None else self.entry_point)


def _resolve(entry_point: EntryPoint | None) -> Callable[..., Any]:
    if callable(entry_point):
        return entry_point
    if not isinstance(entry_point, str) or ":" not in entry_point:
        raise ValueError(f"entry point {entry_point!r} must be a callable or a 'module:function' string")
    module, _, attr = entry_point.partition(":")
    return getattr(importlib.import_module(module), attr)


_REGISTRY: dict[str, Registration] = {}
_BUILTINS_LOADED = False


def register(
    id: str,
    entry_point: EntryPoint | None = None,
    *,
    spec_entry_point: EntryPoint | None = None,
    description: str = "",
    override: bool = False,
    **kwargs: Any,
) -> None:
    """Register an environment under ``id``.

    Args:
        id: ``name-vN`` (lowercase, e.g. ``my-skill-v0``).
        entry_point: A callable or ``"module:function"`` returning a :class:`SkillEnv`; for
            envs that need their own env class. Prefer ``spec_entry_point``.
        spec_entry_point: A callable or ``"module:function"`` returning the
            :class:`EnvSpec`: then :func:`make_spec` reads the env without building it.
        description: One line for ``skillgym envs``.
        override: Replace an existing registration instead of refusing.
        **kwargs: Defaults for the factory, which ``make(id, **overrides)`` can change.
    """
    if not ENV_ID_RE.match(id):
        raise ValueError(f"env id {id!r} must look like 'name-vN' (lowercase, e.g. 'my-skill-v0')")
    if (entry_point is None) == (spec_entry_point is None):
        raise ValueError(f"register({id!r}): give exactly one of entry_point= (an env factory) or spec_entry_point=")
    if id in _REGISTRY and not override:
        raise ValueError(f"env {id!r} is already registered; pass override=True to replace it")
    _REGISTRY[id] = Registration(id, entry_point, spec_entry_point, description, dict(kwargs))
    gymnasium.register(
        id=f"{GYM_NAMESPACE}/{id}",
        entry_point=_gym_entry,
        kwargs={"_skillgym_id": id},
        disable_env_checker=False,
    )


def _gym_entry(_skillgym_id: str, **kwargs: Any) -> SkillEnv:
    return make(_skillgym_id, **kwargs)


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        importlib.import_module("skillgym.envs")


def _split(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(spec factory kwargs, SkillEnv kwargs). ``sandbox`` is the env's when it is a running
    :class:`Sandbox`, and the spec's when it is settings (a dict or :class:`SandboxConfig`)."""

    def for_env(key: str, value: Any) -> bool:
        return key in ENV_KWARGS and not (key == "sandbox" and isinstance(value, (dict, SandboxConfig)))

    env_args = {k: v for k, v in kwargs.items() if for_env(k, v)}
    return {k: v for k, v in kwargs.items() if k not in env_args}, env_args


def _unknown(id: str) -> KeyError:
    known = ", ".join(sorted(_REGISTRY)) or "none"
    return KeyError(
        f"no environment {id!r} is registered; known environments: {known} "
        "(or use 'skill:NAME' for a library skill, 'module:function' for a factory)"
    )


def _factory_result(id: str, **kwargs: Any) -> EnvSpec | SkillEnv:
    """What the id's factory returns: a spec (spec factories) or an env (env factories)."""
    _load_builtins()
    spec_kwargs, env_args = _split(kwargs)
    if id.startswith("skill:"):
        return spec_from_library(id.removeprefix("skill:"), **spec_kwargs)
    reg = _REGISTRY.get(id)
    if reg is not None:
        if reg.spec_entry_point is not None:
            return reg.load()(**{**reg.kwargs, **spec_kwargs})
        return reg.load()(**{**reg.kwargs, **kwargs})
    module, sep, attr = id.partition(":")
    if not sep or ENV_ID_RE.match(id):
        raise _unknown(id)
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(
            f"env {id!r} is neither a registered id ({', '.join(sorted(_REGISTRY))}) nor an importable "
            f"'module:function' factory: {exc}"
        ) from None
    # A factory may take SkillEnv options itself (split, ...): give it those it declares.
    params = inspect.signature(factory).parameters
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    passed = {**spec_kwargs, **{k: v for k, v in env_args.items() if takes_all or k in params}}
    result = factory(**passed)
    if not isinstance(result, (EnvSpec, SkillEnv)):
        raise TypeError(f"env factory {id!r} returned {type(result).__name__}; it must return an EnvSpec or a SkillEnv")
    if isinstance(result, SkillEnv) and "split" in env_args:  # the split asked for, whatever the factory did
        result.split = env_args["split"]
    return result


def make_spec(id: str, **kwargs: Any) -> EnvSpec:
    """The :class:`EnvSpec` of env ``id``, without starting anything (no sandbox, no container).

    Args:
        id: ``name-vN`` (registered), ``skill:NAME`` (a library skill, see
            :func:`skillgym.compiler.spec_from_library`) or ``module:function`` (a factory).
        **kwargs: The factory's options (``codebase``, ``instruction_mode``, ``max_turns``,
            ...). Options of the :class:`SkillEnv` itself (``split``, ``sandbox``,
            ``render_mode``, ...) are accepted and ignored, so one set of options serves
            both ``make_spec`` and ``make``.

    Returns:
        The spec: skill, tools, sandbox config, task source, grader, budgets.
    """
    result = _factory_result(id, **kwargs)
    if isinstance(result, SkillEnv):  # an env factory: its constructor starts no sandbox
        spec = result.env_spec
        result.close()
        return spec
    return result


def make(id: str, **kwargs: Any) -> SkillEnv:
    """Build env ``id``: ``SkillEnv(make_spec(id, **spec_options), **env_options)``.

    Args:
        id: As for :func:`make_spec`.
        **kwargs: Spec options (as for :func:`make_spec`) and :class:`SkillEnv` options
            (``split``, ``sandbox``, ``sandbox_factory``, ``render_mode``, ``token_counter``).

    Returns:
        A new env; its sandbox starts on the first ``reset``.
    """
    result = _factory_result(id, **kwargs)
    if isinstance(result, SkillEnv):
        return result
    return SkillEnv(result, **_split(kwargs)[1])


def list_envs() -> list[Registration]:
    """Every registered env, by id."""
    _load_builtins()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]
