"""The compiler: real corpus skills become envs that pass check_env and complete graded episodes."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest
from gymnasium.utils.env_checker import check_env

import skillgym
from skillgym.compiler import SKILL_DIR, CompileError, detect_dependencies, from_skill, spec_from_library
from skillgym.episode import run_episode
from skillgym.policies.base import Policy
from skillgym.skills import load_any
from skillgym.tasks import save_tasks_jsonl
from skillgym.testing import ScriptedOpenAIServer
from skillgym.toolcalls import render_tool_call_text as call
from skillgym.tools.mapping import DEFAULT_TOOLS, map_tools
from skillgym.types import Task

CORPUS = Path(os.environ.get("SKILLGYM_CORPUS", Path(__file__).resolve().parents[2] / "shared" / "skills-corpus"))
needs_corpus = pytest.mark.skipif(
    not CORPUS.is_dir(), reason=f"skills corpus not found at {CORPUS} (set SKILLGYM_CORPUS)"
)


class Scripted(Policy):
    """Plays a fixed list of turns (tool-call markup or a final answer)."""

    policy_id = "scripted"

    def __init__(self, turns: list[str]):
        self.turns = turns
        self.i = 0

    def reset(self, observation, info):
        self.i = 0

    def act(self, observation, info):
        turn = self.turns[min(self.i, len(self.turns) - 1)]
        self.i += 1
        return turn


BUGGY = "def mean(xs):\n    return sum(xs) / (len(xs) - 1)\n\nprint(mean([2, 4, 6]))\n"
ORDERS_SQL = (
    "import sqlite3\ndb = sqlite3.connect(':memory:')\n"
    'db.executescript("create table orders(id int, total real); insert into orders values (1, 10), (2, 32.5), (3, 7.5);")\n'
    "print(db.execute(open('query.sql').read()).fetchone()[0])\n"
)

# Five corpus skills of different kinds, each with a small task, a scripted solution and a
# grader that runs programmatic checks and/or answer matching (the research agent's is the
# rubric judge, over a loopback HTTP server).
CASES = {
    "design": dict(
        path="anthropics-skills/frontend-design",
        task=Task(
            id="landing",
            prompt="Build a distinctive landing page for a tea shop in index.html.",
            reference={
                "checks": ["test -f index.html", {"command": "cat index.html", "output_regex": "<h1[^>]*>Leaf"}]
            },
        ),
        turns=[
            call("write_file", {"path": "index.html", "content": "<!doctype html><h1 class='hero'>Leaf & Kettle</h1>"}),
            call("submit", {"answer": "index.html written"}),
        ],
    ),
    "debugging": dict(
        path="obra-superpowers/systematic-debugging",
        task=Task(
            id="mean",
            prompt="stats.py prints the wrong mean. Find the root cause and fix it.",
            files={"stats.py": BUGGY},
            reference={
                "answer": "denominator",
                "match": "regex",
                "checks": [{"command": "python3 stats.py", "output_regex": r"^4\.0$"}],
            },
        ),
        turns=[
            call("bash", {"command": "python3 stats.py"}),
            call("edit_file", {"path": "stats.py", "old_string": "(len(xs) - 1)", "new_string": "len(xs)"}),
            call("bash", {"command": "python3 stats.py"}),
            "Root cause: the denominator was len(xs) - 1; it is now len(xs).",
        ],
    ),
    "review": dict(
        path="voltagent-subagents/agents/code-reviewer.md",
        task=Task(
            id="sqli",
            prompt="Review app.py and name the most serious problem.",
            files={
                "app.py": "def find(db, name):\n    return db.execute(f\"select * from users where name = '{name}'\")\n"
            },
            reference={"answer": r"sql injection", "match": "regex"},
        ),
        turns=[
            call("read_file", {"path": "app.py"}),
            call("submit", {"answer": "SQL injection: the query interpolates name."}),
        ],
    ),
    "sql": dict(
        path="voltagent-subagents/agents/sql-pro.md",
        task=Task(
            id="revenue",
            prompt="Write query.sql computing total revenue from orders, run it with run.py, report it.",
            files={"run.py": ORDERS_SQL},
            reference={
                "grader": {
                    "type": "composite",
                    "parts": [
                        {"type": "match", "mode": "numeric", "weight": 2},
                        {"type": "check", "command": "python3 run.py", "output_regex": "50.0"},
                    ],
                },
                "answer": "50",
            },
        ),
        turns=[
            call("write_file", {"path": "query.sql", "content": "select sum(total) from orders"}),
            call("bash", {"command": "python3 run.py"}),
            call("submit", {"answer": "50.0"}),
        ],
    ),
    "research": dict(
        path="voltagent-subagents/agents/research-analyst.md",
        task=Task(
            id="market",
            prompt="From the notes in notes/, which region grew fastest? Cite the note.",
            files={"notes/q1.md": "EMEA grew 4%.", "notes/q2.md": "APAC grew 11%, the fastest of all regions."},
            reference={"rubric": ["Names APAC", "Cites notes/q2.md"]},
        ),
        turns=[
            call("grep", {"pattern": "fastest", "path": "notes"}),
            call("submit", {"answer": "APAC (notes/q2.md)."}),
        ],
    ),
}


def _judge_reply(request):
    rubric = request["messages"][-1]["content"].split("## Rubric\n", 1)[1]
    ids = [line[2:].split(":", 1)[0] for line in rubric.splitlines() if line.startswith("- ")]
    return {
        "role": "assistant",
        "content": json.dumps({"scores": [{"id": i, "score": 1, "reason": "ok"} for i in ids]}),
    }


@needs_corpus
@pytest.mark.parametrize("kind", sorted(CASES))
def test_corpus_skill_compiles_checks_and_completes_a_graded_episode(kind, tmp_path):
    case = CASES[kind]
    task_file = tmp_path / "tasks.jsonl"
    save_tasks_jsonl([case["task"]], task_file)
    with ScriptedOpenAIServer(_judge_reply) as judge, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the research agent's web tools are reported
        env = from_skill(
            CORPUS / case["path"], tasks=task_file, backend="local", judge=f"openai:judge@{judge.base_url}"
        )
        try:
            check_env(env, skip_render_check=True)
            traj = run_episode(env, Scripted(case["turns"]), task_id=case["task"].id)
        finally:
            env.close()
    assert traj.terminated and not traj.tool_errors, traj.tool_errors
    assert traj.reward == 1.0, traj.grade_details
    assert traj.skill_hash == load_any(CORPUS / case["path"]).content_hash
    if kind == "research":
        assert traj.grade_details["judge_model"] == "judge"
        assert [c["text"] for c in traj.grade_details["rubric"] if c["source"] == "task"] == [
            "Names APAC",
            "Cites notes/q2.md",
        ]
        assert env.env_spec.metadata["unmapped_tools"] == ["WebFetch", "WebSearch"]
        assert env.env_spec.tools == ["read_file", "glob", "grep", "submit"]


def test_tool_mapping():
    m = map_tools(
        [
            "Read",
            "Write",
            "MultiEdit",
            "Bash(git diff:*)",
            "Glob",
            "Grep",
            "LS",
            "WebFetch",
            "mcp__github__create_issue",
            "Task",
            "TodoWrite",
            "WebSearch",
        ]
    )
    assert m.tools == ["bash", "read_file", "write_file", "edit_file", "glob", "grep", "list_dir", "submit"]
    assert m.unmapped == ["WebFetch", "mcp__github__create_issue", "Task", "TodoWrite", "WebSearch"]
    assert m.mapped["Bash(git diff:*)"] == ["bash"] and m.restrictions == {"bash": ["git diff:*"]}
    assert map_tools(["Bash(*)"]).restrictions == {}
    assert map_tools(["read_file", "shell"]).tools == ["bash", "read_file", "submit"]
    default = map_tools(None)
    assert default.defaulted and default.tools == [*DEFAULT_TOOLS, "submit"]
    assert map_tools([]).tools == default.tools


def test_unmapped_tools_are_reported_not_dropped(tmp_path):
    agent = tmp_path / "web-helper.md"
    agent.write_text(
        "---\nname: web-helper\ndescription: Looks things up.\ntools: Read, WebSearch, mcp__db__query\n---\nBe brief.\n"
    )
    with pytest.warns(UserWarning, match=r"\['WebSearch', 'mcp__db__query'\] have no built-in equivalent"):
        env = from_skill(agent, tasks=[Task(id="a", prompt="hi", reference={"answer": "x"})], backend="local")
    assert env.env_spec.metadata["unmapped_tools"] == ["WebSearch", "mcp__db__query"]
    assert env.env_spec.tools == ["read_file", "submit"]
    assert env.env_spec.sandbox.mounts == []  # an agent file's folder holds other agents: never mounted
    env.close()


@needs_corpus
def test_three_instruction_modes_share_tasks_and_differ_only_in_the_skill():
    skill = load_any(CORPUS / "obra-superpowers/systematic-debugging")
    tasks = [Task(id="a", prompt="Why does it crash?", reference={"answer": "x"})]
    envs = {
        mode: from_skill(skill, tasks=tasks, instruction_mode=mode, backend="local")
        for mode in ("system", "load_skill", "none")
    }
    try:
        system, lazy, none = (envs[m] for m in ("system", "load_skill", "none"))
        body = skill.instructions.strip()[:200]
        assert body in system.system_prompt() and SKILL_DIR in system.system_prompt()
        assert body not in lazy.system_prompt() and skill.description in lazy.system_prompt()
        assert "load_skill" in lazy.tools and "load_skill" not in system.tools
        assert none.env_spec.skill is None and none.env_spec.sandbox.mounts == []
        assert body not in none.system_prompt() and skill.name not in none.system_prompt()
        assert none.tools.keys() == system.tools.keys()
        assert all(e.env_spec.tasks.tasks("train") == tasks for e in envs.values())
        lazy.reset(options={"task_id": "a"})
        obs, *_ = lazy.step(call("load_skill", {}))
        assert body in obs[-1]["content"]
        for mode, env in envs.items():
            env.reset(options={"task_id": "a"})
            _, reward, terminated, _, _ = env.step("x")
            assert terminated and reward == 1.0
            assert env.trajectory.metadata["instruction_mode"] == mode
    finally:
        for env in envs.values():
            env.close()
    with pytest.raises(CompileError, match="instruction_mode 'hidden'"):
        from_skill(skill, tasks=tasks, instruction_mode="hidden", backend="local")


@needs_corpus
def test_make_skill_name_from_the_library(monkeypatch, tmp_path):
    tasks = tmp_path / "t.jsonl"
    save_tasks_jsonl([Task(id="a", prompt="p", reference={"answer": "x"})], tasks)
    monkeypatch.delenv("SKILLGYM_SKILLS_PATH", raising=False)
    with pytest.raises(CompileError, match="SKILLGYM_SKILLS_PATH"):
        skillgym.make("skill:sql-pro", tasks=str(tasks))
    monkeypatch.setenv("SKILLGYM_SKILLS_PATH", str(CORPUS))
    env = skillgym.make(
        "skill:voltagent-subagents/sql-pro", tasks=str(tasks), backend="local", instruction_mode="none", max_turns="4"
    )  # string kwargs, as from --env-arg
    assert env.env_spec.id == "sql-pro-v0" and env.env_spec.max_turns == 4 and env.env_spec.instruction_mode == "none"
    env.close()
    with pytest.raises(LookupError, match="qualify it"):
        skillgym.make_spec("skill:sql-pro", tasks=str(tasks))
    monkeypatch.setenv("SKILLGYM_TASKS_DIR", str(tmp_path / "none-here"))
    with pytest.raises(CompileError, match="has no tasks.*skillgym tasks generate"):
        skillgym.make("skill:systematic-debugging", library_paths=[CORPUS])
    with pytest.raises(CompileError, match=r"unknown option\(s\) \['max_turn'\]"):
        spec_from_library("systematic-debugging", library_paths=[CORPUS], tasks=str(tasks), max_turn=3)


def test_dependency_detection(tmp_path):
    skill = tmp_path / "chart-maker"
    (skill / "scripts" / "lib").mkdir(parents=True)
    (skill / "SKILL.md").write_text("---\nname: chart-maker\ndescription: Makes charts.\n---\nRun scripts/plot.py.\n")
    (skill / "scripts" / "plot.py").write_text(
        "#!/usr/bin/env python3\nimport os, json\nimport yaml\nfrom PIL import Image\nfrom lib import helpers\n"
        "import helpers2\nfrom . import sibling\n"
    )
    (skill / "scripts" / "helpers2.py").write_text("import numpy as np\n")
    (skill / "scripts" / "lib" / "__init__.py").write_text("")
    (skill / "scripts" / "render.js").write_text("#!/usr/bin/env node\nconsole.log(1)\n")
    (skill / "scripts" / "broken.py").write_text("def (:\n")
    (skill / "requirements.txt").write_text("# pinned\nnumpy==1.26.4\n-r other.txt\nrequests>=2  # http\n")
    deps = detect_dependencies(load_any(skill))
    assert deps.pip == ["numpy==1.26.4", "pillow", "pyyaml", "requests>=2"]
    assert deps.apt == ["nodejs"]
    assert deps.sources["pyyaml"] == ["scripts/plot.py"]


def _script_skill(root: Path, name: str, script: str, code: str) -> Path:
    """A skill folder with one bundled script (fixed text, so its hash and image tag are stable)."""
    skill = root / name
    (skill / "scripts").mkdir(parents=True)
    (skill / "SKILL.md").write_text(f"---\nname: {name}\ndescription: Runs {script}.\n---\nRun scripts/{script}.\n")
    (skill / "scripts" / script).write_text(code)
    return skill


@pytest.mark.docker
def test_skill_folder_is_mounted_read_only_in_docker(docker_base_image, tmp_path):
    skill = _script_skill(tmp_path, "greeter", "greet.py", "import sys\nprint('hello', sys.argv[1])\n")
    env = from_skill(
        skill, tasks=[Task(id="a", prompt="greet bob", reference={"answer": "hello bob"})], backend="docker"
    )
    try:
        assert env.env_spec.sandbox.image == docker_base_image.split(":")[0] + ":latest"  # no deps: the base image
        traj = run_episode(
            env,
            Scripted(
                [
                    call("bash", {"command": "python3 .skill/scripts/greet.py bob && touch .skill/x; echo rc=$?"}),
                    call("submit", {"answer": "hello bob"}),
                ]
            ),
        )
    finally:
        env.close()
    out = traj.messages[3]["content"]
    assert "hello bob" in out and "Read-only file system" in out and traj.reward == 1.0


@pytest.mark.docker
@pytest.mark.slow
def test_bundled_script_with_a_pypi_import_runs_in_a_derived_image(docker_base_image, tmp_path):
    """First run builds skillgym/skill-<hash> (apt python3-pip + pip tabulate, ~1 min); later runs reuse it."""
    skill = _script_skill(
        tmp_path,
        "table-maker",
        "table.py",
        "from tabulate import tabulate\nprint(tabulate([[1, 2]], headers=['a', 'b']))\n",
    )
    env = from_skill(
        skill,
        tasks=[Task(id="a", prompt="make a table", reference={"checks": ["python3 .skill/scripts/table.py"]})],
        backend="docker",
    )
    try:
        image = env.env_spec.metadata["image"]
        assert image["derived"] and image["tag"].startswith("skillgym/skill-")
        assert env.env_spec.metadata["dependencies"]["pip"] == ["tabulate"]
        traj = run_episode(env, Scripted([call("bash", {"command": "python3 .skill/scripts/table.py"}), "done"]))
    finally:
        env.close()
    assert "a    b" in traj.messages[3]["content"] and traj.reward == 1.0


def test_rubric_only_tasks_without_a_judge_warn_at_compile_time(monkeypatch):
    monkeypatch.delenv("SKILLGYM_JUDGE", raising=False)
    skill = skillgym.SkillSpec(name="s", description="d", instructions="i")
    with pytest.warns(UserWarning, match="graded only by a rubric, and no judge is configured"):
        from_skill(skill, tasks=[Task(id="g1", prompt="p", reference={"rubric": ["clear"]})], backend="local").close()
