"""Option parsing shared by every ``skillgym`` command, core and stages alike.

``--env-arg key=value`` and ``--variant NAME:key=value,...`` read the same way wherever they
appear, and a config that fails validation becomes a usage error naming the option.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

__all__ = ["parse_env_args", "parse_key_values", "parse_variants", "validated"]


def parse_key_values(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs as a dict; a value is read as JSON when it parses (``3``, ``true``,
    ``["a"]``), else kept as text.

    Args:
        pairs: Strings of the form ``key=value``.

    Returns:
        The keyword arguments, in the order given (a later key wins).

    Raises:
        ValueError: A pair has no ``=`` or an empty key.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{pair!r}: expected key=value")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def parse_env_args(pairs: list[str], param_hint: str = "--env-arg") -> dict[str, Any]:
    """The ``--env-arg key=value`` options of a command, as env keyword arguments.

    Args:
        pairs: The option's values.
        param_hint: The option named in the usage error.

    Returns:
        The env keyword arguments (see :func:`parse_key_values`).

    Raises:
        typer.BadParameter: A pair is not ``key=value``.
    """
    try:
        return parse_key_values(pairs)
    except ValueError as exc:
        raise typer.BadParameter(f"{exc}, e.g. {param_hint} backend=local", param_hint=param_hint) from None


def parse_variants(items: list[str]) -> dict[str, dict[str, Any]]:
    """``--variant NAME:key=value[,key=value]`` options as ``{name: env overrides}``.

    Args:
        items: The option's values; none gives the single variant ``default`` without overrides.

    Returns:
        The variants, in the order given.

    Raises:
        typer.BadParameter: An item has no name or a malformed pair.
    """
    if not items:
        return {"default": {}}
    variants: dict[str, dict[str, Any]] = {}
    for item in items:
        name, sep, pairs = item.partition(":")
        if not name:
            raise typer.BadParameter(f"{item!r}: expected NAME:key=value[,key=value]", param_hint="--variant")
        variants[name] = parse_env_args([p for p in pairs.split(",") if p], "--variant") if sep else {}
    return variants


def validated(model: type[M], **fields: Any) -> M:
    """Build a config model, turning a validation error into a usage error that names the field.

    Args:
        model: The pydantic model to build.
        **fields: Its fields, as the command received them.

    Returns:
        The validated model.

    Raises:
        typer.BadParameter: The first validation problem, as ``field: message``.
    """
    try:
        return model(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise typer.BadParameter(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
