"""Policy specs: one string syntax, used by every CLI command, that names a policy.

    expert                          the env's scripted expert
    random                          random tool calls (a floor)
    random:SEED                     the same, seeded
"""

from __future__ import annotations

from skillgym.env import SkillEnv
from skillgym.policies.base import Policy
from skillgym.policies.random import RandomPolicy


def make_policy(spec: str, env: SkillEnv) -> Policy:
    kind, _, rest = spec.partition(":")
    if kind == "expert":
        if env.env_spec.expert is None:
            raise ValueError(f"{env.env_spec.id} has no scripted expert; pick another policy spec")
        return env.env_spec.expert()
    if kind == "random":
        return RandomPolicy(seed=int(rest) if rest else None)
    raise ValueError(f"unknown policy spec {spec!r}; expected one of: expert, random[:SEED]")
