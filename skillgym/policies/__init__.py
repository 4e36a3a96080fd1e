"""Policies: what produces the assistant turns of an episode."""

from skillgym.policies.base import Action, Policy
from skillgym.policies.random import RandomPolicy

__all__ = ["Action", "Policy", "RandomPolicy"]
