"""Adapters that plug skillgym environments into other RL stacks (verifiers, ...).

Each adapter wraps a :class:`skillgym.SkillEnv`: the env stays the single source of truth
for tools, tasks and reward; an adapter only translates the peer's episode protocol.
"""
