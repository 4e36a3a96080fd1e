"""Part 2: an orchestrator that delegates to subagents through ``subagent(prompt, config)``.

    import skillgym
    env = skillgym.make("orchestrator-v0", roster="roster.yaml", tasks="codebase-explorer-v0")
    trajectory = skillgym.run_episode(env, env.env_spec.expert())   # the scripted router
    print(render_tree(trajectory, depth=1)); print(trajectory.metadata["rollup"])

* :mod:`.roster`: who the subagents are, who plays them, limits and prices (YAML + pydantic);
* :mod:`.runner`: one nested episode per call, through the core episode driver, never raising;
* :mod:`.env`: ``orchestrator-v0``, its tools and task sources;
* :mod:`.tree`: roll-ups of tokens, cost and time, routing accuracy, the indented transcript;
* :mod:`.router`: the scripted router policy.
"""

from .env import ENV_ID, OrchestratorEnv, PosedTasks, default_roster, make_env, make_spec
from .roster import Limits, Prices, Roster, RosterError, SubagentConfig, load_roster
from .router import ScriptedRouter, parse_subagent_reply
from .runner import SHARED_DIR, CallResult, SubagentRunner
from .tree import Rollup, render_tree, rollup, routing_accuracy

__all__ = [
    "ENV_ID",
    "SHARED_DIR",
    "CallResult",
    "Limits",
    "OrchestratorEnv",
    "PosedTasks",
    "Prices",
    "Rollup",
    "Roster",
    "RosterError",
    "ScriptedRouter",
    "SubagentConfig",
    "SubagentRunner",
    "default_roster",
    "load_roster",
    "make_env",
    "make_spec",
    "parse_subagent_reply",
    "render_tree",
    "rollup",
    "routing_accuracy",
]
