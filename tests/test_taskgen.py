"""Task generation against a real loopback OpenAI-compatible server with scripted replies."""

from __future__ import annotations

import json
import re
import threading

import pytest
from typer.testing import CliRunner

from skillgym.taskgen import (
    ChatClient,
    GenerationConfig,
    LLMError,
    NearDuplicateFilter,
    dedupe_texts,
    extract_json,
    filter_learnable,
    generate_tasks,
    learnability,
    score_rewards,
)
from skillgym.taskgen.cli import app
from skillgym.tasks import load_tasks_jsonl
from skillgym.testing import ErrorReply, ScriptedOpenAIServer
from skillgym.types import SkillSpec, Task

SKILL = SkillSpec(
    name="csv-cleaner",
    description="Cleans messy CSV files: fixes headers, dates and duplicates.",
    instructions="Inspect the file first. Normalize headers to snake_case. Parse dates as ISO 8601. Drop exact duplicates.",
)
WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
    "quebec romeo sierra tango uniform victor whiskey xray yankee zulu"
).split()


class TeacherScript:
    """Answers topic and task requests like a (sometimes sloppy) teacher.

    The first topic request gets malformed JSON, the first task batch breaks the schema,
    and one batch in four repeats an earlier prompt with a word added (a near duplicate).
    """

    def __init__(self, fail_after: int | None = None):
        self.lock = threading.Lock()
        self.calls = 0
        self.batches = 0
        self.fail_after = fail_after
        self.first_prompts: list[str] = []

    def __call__(self, request: dict):
        with self.lock:
            self.calls += 1
            if self.fail_after is not None and self.calls > self.fail_after:
                return ErrorReply(400, "the scripted teacher stops here (simulated interruption)")
            first = request["messages"][1]["content"]
            repairing = len(request["messages"]) > 2
            if "distinct areas" in first:
                if not repairing:
                    return _say('{"topics": [{"name": "headers", "description": "x"},')  # truncated JSON
                return _say(json.dumps({"topics": [{"name": "headers"}, {"name": "dates"}]}))
            if "narrower" in first:
                parent = re.search(r"Within the area '([^']+)'", first).group(1)
                return _say(json.dumps({"topics": [{"name": f"{parent} {k}"} for k in ("basics", "edge cases")]}))
            batch = int(re.search(r"Batch (\d+):", first).group(1))
            if batch == 1 and not repairing:
                return _say(json.dumps({"tasks": [{"prompt": "too short", "rubric": []}]}))
            return _say(json.dumps({"tasks": self.batch(batch, "NEGATIVE" in first)}))

    def batch(self, batch: int, negative: bool) -> list[dict]:
        tasks = []
        for j in range(3):
            words = " ".join(WORDS[(batch * 7 + j * 3 + k) % len(WORDS)] for k in range(8))
            prompt = f"Please clean the file data/{batch}_{j}.csv with columns {words} and report the row count"
            if negative:
                prompt = f"Explain in general terms why {words} matters; no file is involved at all here"
            tasks.append(
                {
                    "prompt": prompt,
                    "rubric": ["Reports the row count", "Keeps the original file"],
                    "files": {f"data/{batch}_{j}.csv": "a,b\n1,2\n"},
                    "answer": "1" if j == 0 else None,
                }
            )
        if batch % 4 == 0 and self.first_prompts:
            tasks.append({"prompt": self.first_prompts[0] + " please", "rubric": ["Reports"]})
        if not self.first_prompts:
            self.first_prompts.append(tasks[0]["prompt"])
        return tasks


def _say(content: str) -> dict:
    return {"role": "assistant", "content": content}


CONFIG = GenerationConfig(n=24, breadth=2, fanout=2, batch_size=3, negative_fraction=0.25, seed=3)


def test_generation_repairs_dedupes_and_builds_tasks(tmp_path):
    script = TeacherScript()
    with ScriptedOpenAIServer(script) as server:
        client = ChatClient.from_spec(f"openai:teacher@{server.base_url}", cache_dir=tmp_path / "cache")
        result = generate_tasks(SKILL, client, CONFIG)
        requests = list(server.requests)
    tasks = result.tasks
    assert len(tasks) == 24 and len({t.id for t in tasks}) == 24
    # topic graph: root -> 2 topics -> 2 subtopics each
    assert [n.name for n in result.topics.leaves()] == [
        "headers basics",
        "headers edge cases",
        "dates basics",
        "dates edge cases",
    ]
    # repairs: the malformed topic reply and the schema-invalid batch were shown back with their errors
    repairs = [r["messages"][-1]["content"] for r in requests if len(r["messages"]) > 2]
    assert any("not valid JSON" in text for text in repairs)
    assert any("field tasks.0.prompt" in text and "field tasks.0.rubric" in text for text in repairs)
    assert result.duplicates >= 1 and not result.failed_calls
    # diversity axes and negatives are recorded; negatives say the skill does not apply
    assert {t.metadata["style"] for t in tasks} == {"precise", "vague"}
    assert len({t.metadata["persona"] for t in tasks}) >= 3
    negatives = [t for t in tasks if t.metadata["negative"]]
    assert negatives and all(t.reference["skill_applies"] is False for t in negatives)
    assert all(t.reference["rubric"] for t in tasks)
    assert any(t.reference.get("answer") == "1" for t in tasks)
    assert {t.split for t in tasks} <= {"train", "validation", "test"}
    assert all(t.metadata["teacher"] == "teacher" and t.metadata["skill_hash"] == SKILL.content_hash for t in tasks)


def test_resume_after_interruption_replays_from_cache(tmp_path):
    # The uninterrupted run, for reference.
    with ScriptedOpenAIServer(TeacherScript()) as server:
        full = generate_tasks(
            SKILL, ChatClient.from_spec(f"openai:teacher@{server.base_url}", cache_dir=tmp_path / "a"), CONFIG
        )
        total_requests = server.request_count
    # Interrupted after 6 requests, then run again with the same cache.
    cache = tmp_path / "b"
    with ScriptedOpenAIServer(TeacherScript(fail_after=6)) as server:
        with pytest.raises(LLMError, match="HTTP 400"):
            generate_tasks(SKILL, ChatClient.from_spec(f"openai:teacher@{server.base_url}", cache_dir=cache), CONFIG)
    with ScriptedOpenAIServer(TeacherScript()) as server:
        client = ChatClient.from_spec(f"openai:teacher@{server.base_url}", cache_dir=cache)
        resumed = generate_tasks(SKILL, client, CONFIG)
        assert server.request_count == total_requests - 6  # nothing asked twice
        assert client.cache_hits == 6
    assert [t.id for t in resumed.tasks] == [t.id for t in full.tasks]
    # A third run is served entirely from disk.
    with ScriptedOpenAIServer(TeacherScript(fail_after=0)) as server:
        again = generate_tasks(
            SKILL, ChatClient.from_spec(f"openai:teacher@{server.base_url}", cache_dir=cache), CONFIG
        )
        assert server.request_count == 0
    assert [t.model_dump() for t in again.tasks] == [t.model_dump() for t in resumed.tasks]


def test_cli_generate_writes_a_loadable_task_file(tmp_path):
    out = tmp_path / "tasks.jsonl"
    skill_dir = tmp_path / "csv-cleaner"
    skill_dir.mkdir()
    (skill_dir / "SKILL.md").write_text(
        f"---\nname: {SKILL.name}\ndescription: {SKILL.description}\n---\n{SKILL.instructions}\n", encoding="utf-8"
    )
    with ScriptedOpenAIServer(TeacherScript()) as server:
        result = CliRunner().invoke(
            app,
            [
                "generate",
                str(skill_dir),
                "--teacher",
                f"openai:teacher@{server.base_url}",
                "--n",
                "10",
                "--out",
                str(out),
                "--breadth",
                "2",
                "--fanout",
                "2",
                "--batch-size",
                "3",
                "--json",
            ],
        )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["tasks"] == 10 and summary["out"] == str(out)
    assert len(load_tasks_jsonl(out)) == 10
    assert (tmp_path / "tasks.jsonl.cache").is_dir() and (tmp_path / "tasks.jsonl.topics.json").is_file()


def test_extract_json_tolerates_fences_and_prose():
    assert extract_json('```json\n{"a": 1}\n```') == {"a": 1}
    assert extract_json('Here you go: {"a": [1, 2]} hope it helps') == {"a": [1, 2]}
    with pytest.raises(json.JSONDecodeError):
        extract_json("no json here {")


def test_near_duplicates_are_removed():
    base = "write a function that parses iso 8601 dates and returns utc datetimes with tests"
    items = [
        ("a", base),
        ("b", base.replace("write", "please write")),
        ("c", "summarize the quarterly sales report by region"),
        ("d", base + " quickly"),
        ("e", "draw an svg logo for a bakery"),
    ]
    assert dedupe_texts(items, threshold=0.7) == ["a", "c", "e"]
    flt = NearDuplicateFilter()
    assert flt.add("x", base) and not flt.add("x", "something else entirely")  # same key twice
    assert flt.rejected == [("x", "x")]


def test_learnability_math():
    assert learnability(0.5) == 1.0
    assert learnability(0.0) == 0.0 and learnability(1.0) == 0.0
    assert learnability(0.25) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        learnability(1.5)
    result = score_rewards("t", [1.0, 0.0, 0.6, 0.2], success=0.5, threshold=0.5)
    assert result.pass_rate == 0.5 and result.score == 1.0 and result.kept
    assert not score_rewards("t", [1.0, 1.0, 1.0], threshold=0.0).kept
    assert not score_rewards("t", [0.0, 0.0], threshold=0.0).kept


def test_learnability_filter_runs_episodes_in_an_env():
    from skillgym.compiler import from_skill
    from skillgym.policies.base import Policy

    class Alternating(Policy):
        """Right on every other attempt of task 'mixed', always right on 'easy', never on 'hard'."""

        def __init__(self):
            self.attempts: dict[str, int] = {}

        def act(self, observation, info):
            tid = info["task_id"]
            self.attempts[tid] = self.attempts.get(tid, 0) + 1
            right = {"easy": True, "hard": False}.get(tid, self.attempts[tid] % 2 == 0)
            return {"role": "assistant", "content": "4" if right else "5"}

    tasks = [Task(id=i, prompt="2+2?", reference={"answer": "4"}) for i in ("easy", "mixed", "hard")]
    env = from_skill(SKILL, tasks=tasks, backend="local")
    try:
        kept, results = filter_learnable(tasks, env, Alternating(), k=4)
    finally:
        env.close()
    assert [t.id for t in kept] == ["mixed"]
    assert kept[0].metadata == {"learnability": 1.0, "teacher_pass_rate": 0.5}
    assert [r.pass_rate for r in results] == [1.0, 0.5, 0.0]
