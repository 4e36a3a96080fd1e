"""Test and benchmark helpers: a real OpenAI-compatible server on loopback, answered by a script."""

from skillgym.testing.openai_server import (
    ErrorReply,
    ReplayResponder,
    ScriptedOpenAIServer,
    approx_usage,
    assistant_message,
    chat_completion,
    tool_call,
)

__all__ = [
    "ErrorReply",
    "ReplayResponder",
    "ScriptedOpenAIServer",
    "approx_usage",
    "assistant_message",
    "chat_completion",
    "tool_call",
]
