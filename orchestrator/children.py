"""The subagent calls orchestrators made, as training data: see :mod:`skillgym.rollouts.children`.

Kept as a name of the orchestrator stage so ``skillgym.orchestrator.children`` reads naturally
next to the tree and roll-up modules; the code lives with the export, which reads it.
"""

from skillgym.rollouts.children import child_records, read_trajectories, write_child_run

__all__ = ["child_records", "read_trajectories", "write_child_run"]
