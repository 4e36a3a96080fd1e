"""``python -m skillgym.rollouts rollout|export ...``: the two commands without the main CLI."""

from skillgym.rollouts.cli import app

app()
