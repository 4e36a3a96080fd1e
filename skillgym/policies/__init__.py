"""Policies: what produces the assistant turns of an episode.

Every CLI command names a policy with one spec string (see :mod:`skillgym.policies.spec`):
``expert``, ``random[:SEED]``, ``hf:PATH``, ``openai:MODEL[@URL]``.
"""

from skillgym.policies.base import Action, Policy
from skillgym.policies.random import RandomPolicy
from skillgym.policies.spec import PolicySpec, make_policy, parse_policy_spec


def __getattr__(name: str):
    # The model-backed policies pull in httpx or torch: import them only when asked for.
    if name == "OpenAIPolicy":
        from skillgym.policies.openai_policy import OpenAIPolicy

        return OpenAIPolicy
    if name == "HFPolicy":
        from skillgym.policies.hf_policy import HFPolicy

        return HFPolicy
    raise AttributeError(name)


__all__ = [
    "Action",
    "HFPolicy",
    "OpenAIPolicy",
    "Policy",
    "PolicySpec",
    "RandomPolicy",
    "make_policy",
    "parse_policy_spec",
]
