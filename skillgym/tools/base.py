"""The tool abstraction: a pydantic argument model, an OpenAI schema, and a function that
runs against a sandbox and returns text (and optionally images) for the model."""

from __future__ import annotations

import abc
import types
import typing
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from skillgym.sandbox.base import Sandbox
from skillgym.types import ToolOutput


class ToolArgs(BaseModel):
    """Base for argument models: unknown arguments are an error the model must hear about, and
    so is a boolean given for a number (JSON ``true`` is not the number 1, whatever pydantic's
    lax mode would make of it)."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name and _is_number(cls.model_fields[info.field_name].annotation):
            raise PydanticCustomError("number_type", "Input should be a number, not a boolean")
        return value


def _is_number(annotation: Any) -> bool:
    """Whether a field's type is a number (``int``, ``float``, optionally ``| None``), not ``bool``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        return bool not in options and any(o in (int, float) for o in options)
    return annotation in (int, float)


class Tool(abc.ABC):
    """One tool the model may call. Subclasses set ``name``, ``description`` and ``Args``."""

    name: ClassVar[str]
    description: ClassVar[str]
    Args: ClassVar[type[ToolArgs]]
    ends_episode: ClassVar[bool] = False

    @abc.abstractmethod
    def __call__(self, sandbox: Sandbox, args: Any) -> str | ToolOutput:
        """Run the call and return what the model reads: its text, or a
        :class:`~skillgym.types.ToolOutput` (text plus images, e.g. a screenshot, which multimodal
        policies receive and text-only ones never see). Raise OpError on a bad request."""

    def schema(self) -> dict[str, Any]:
        """The OpenAI function-tool schema, derived from ``Args``."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": clean_schema(self.Args.model_json_schema()),
            },
        }


def clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Drop pydantic's ``title`` noise and inline ``anyOf [X, null]`` optionals so the schema
    reads like a hand-written one (small models copy what they see)."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            node = {k: walk(v) for k, v in node.items() if k != "title"}
            any_of = node.get("anyOf")
            if isinstance(any_of, list) and len(any_of) == 2 and {"type": "null"} in any_of:
                other = next(s for s in any_of if s != {"type": "null"})
                node.pop("anyOf")
                node = {**other, **node}
            if node.get("default", 0) is None:
                node.pop("default")
            return node
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    cleaned = walk(schema)
    cleaned["additionalProperties"] = False
    cleaned.setdefault("properties", {})
    return cleaned
