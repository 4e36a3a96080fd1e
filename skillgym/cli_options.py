"""Option parsing shared by every ``skillgym`` command, core and stages alike.

``--env-arg key=value`` and ``--variant NAME:key=value,...`` read the same way wherever they
appear, and a config that fails validation becomes a usage error naming the option.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

__all__ = [
    "check_out_dir",
    "check_policy_specs",
    "error_message",
    "fail",
    "parse_env_args",
    "parse_key_values",
    "parse_variants",
    "user_errors",
    "validated",
]


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


# -- user errors: one line on stderr, never a traceback ------------------------------------------
USER_ERRORS: tuple[type[BaseException], ...] = (KeyError, ValueError, OSError)
"""What a wrong input raises from the library (an unknown env, task or split is a KeyError or
ValueError, a bad config a pydantic ValidationError, a missing model folder an OSError)."""


def error_message(exc: BaseException) -> str:
    """The text of a user error, on one line where the library wrote one.

    Args:
        exc: The exception.

    Returns:
        A ``KeyError``'s message without the quotes ``str()`` adds; a pydantic error as
        ``Model.field: message (got value)``; otherwise ``str(exc)`` or the exception's type.
    """
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join([exc.title, *map(str, first["loc"])])
        return f"{where}: {first['msg']} (got {first.get('input')!r})"
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc) or type(exc).__name__


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` on stderr, unwrapped, and exit with ``code``.

    Args:
        message: What was wrong and what to do.
        code: The exit status (2: a usage error; 1: the work itself failed).

    Raises:
        typer.Exit: Always.
    """
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def user_errors(*extra: type[BaseException], code: int = 2) -> Iterator[None]:
    """Turn the library's errors about the user's input into :func:`fail` (no traceback).

    ``SKILLGYM_TRACEBACK=1`` re-raises instead, for a bug report.

    Args:
        *extra: More exception types to treat as user errors.
        code: The exit status.
    """
    try:
        yield
    except (*USER_ERRORS, *extra) as exc:
        if os.environ.get("SKILLGYM_TRACEBACK"):
            raise
        fail(error_message(exc), code)


def check_policy_specs(specs: list[str], option: str = "--policy") -> None:
    """Reject a policy spec that cannot name a policy before any work starts.

    Args:
        specs: The option's values.
        option: The option named in the error.

    Raises:
        typer.BadParameter: The spec does not parse, or an ``hf:`` spec names a local path
            (``/...``, ``./...``, ``~/...``) that does not exist.
    """
    from skillgym.policies.spec import parse_policy_spec

    for spec in specs:
        try:
            parsed = parse_policy_spec(spec)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint=option) from None
        path = parsed.path or ""
        if parsed.kind == "hf" and path.startswith(("/", ".", "~")) and not Path(path).expanduser().exists():
            raise typer.BadParameter(
                f"{spec!r}: no model folder at {path} (hf: takes a folder with config.json, or a hub id)",
                param_hint=option,
            )


def check_out_dir(out: Path, option: str = "--out") -> None:
    """Reject an output path that exists but is not a folder.

    Raises:
        typer.BadParameter: ``out`` is a file (or another non-folder).
    """
    if out.exists() and not out.is_dir():
        raise typer.BadParameter(f"{out} exists and is not a folder; a run directory is a folder", param_hint=option)
