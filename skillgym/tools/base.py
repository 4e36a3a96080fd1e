"""The tool abstraction: a pydantic argument model, an OpenAI schema, and a function that
runs against a sandbox and returns text for the model."""

from __future__ import annotations

import abc
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from skillgym.sandbox.base import Sandbox


class ToolArgs(BaseModel):
    """Base for argument models: unknown arguments are an error the model must hear about."""

    model_config = ConfigDict(extra="forbid")


class Tool(abc.ABC):
    """One tool the model may call. Subclasses set ``name``, ``description`` and ``Args``."""

    name: ClassVar[str]
    description: ClassVar[str]
    Args: ClassVar[type[ToolArgs]]
    ends_episode: ClassVar[bool] = False

    @abc.abstractmethod
    def __call__(self, sandbox: Sandbox, args: Any) -> str:
        """Run the call and return the text the model reads. Raise OpError on a bad request."""

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
