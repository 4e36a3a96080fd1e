"""web-research-v0 on small corpora the tests write: grader, tools and their errors, the host
tool mechanism, folder corpora, the SearxNG adapter on a loopback server, the expert.

The real HotpotQA data (downloaded once, then cached) is exercised in test_web_research_data.py.
"""

from __future__ import annotations

import json
import pickle
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

import skillgym
from skillgym.env import spec_tools
from skillgym.envs.web_research import ExpertPolicy, LocalIndex, make_spec, url_for
from skillgym.envs.web_research.grader import (
    ResearchGrader,
    citation_f1,
    exact_match,
    f1_score,
    normalize_answer,
    split_answer,
)
from skillgym.envs.web_research.tools import MAX_K, PAGE_CHARS, WebFetchArgs, WebSearch
from skillgym.episode import run_episode
from skillgym.policies import RandomPolicy
from skillgym.sandbox.ops import OpError
from skillgym.tools.base import Tool, ToolArgs
from skillgym.types import Task

# -- a tiny HotpotQA-format file ------------------------------------------------------------
LONG = " ".join(f"Filler sentence number {i} about the lighthouse keepers of Varnholm." for i in range(80))
QUESTIONS = [
    {
        "_id": "q-bridge-1",
        "type": "bridge",
        "level": "hard",
        "question": "Which river flows through the city where the painter Elsa Marrow was born?",
        "answer": "the Quillon",
        "supporting_facts": [["Elsa Marrow", 0], ["Dunmere", 1]],
        "context": [
            ["Elsa Marrow", ["Elsa Marrow (1901-1977) was a painter born in Dunmere.", " She painted harbours."]],
            ["Dunmere", ["Dunmere is a city in the north.", " The Quillon flows through Dunmere."]],
            ["Harbour painting", ["Harbour painting is a genre.", " Many painters tried it."]],
        ],
    },
    {
        "_id": "q-comp-1",
        "type": "comparison",
        "level": "hard",
        "question": "Are Varnholm Lighthouse and Ostby Lighthouse in the same country?",
        "answer": "no",
        "supporting_facts": [["Varnholm Lighthouse", 0], ["Ostby Lighthouse", 0]],
        "context": [
            ["Varnholm Lighthouse", ["Varnholm Lighthouse is a lighthouse in Norway.", " " + LONG]],
            ["Ostby Lighthouse", ["Ostby Lighthouse is a lighthouse in Sweden."]],
            ["Dunmere", ["Dunmere is a city in the north.", " The Quillon flows through Dunmere."]],
        ],
    },
    {
        "_id": "q-comp-2",
        "type": "comparison",
        "level": "hard",
        "question": "Who was born first, Elsa Marrow or Tomas Quill?",
        "answer": "Elsa Marrow",
        "supporting_facts": [["Elsa Marrow", 0], ["Tomas Quill", 0]],
        "context": [
            ["Tomas Quill", ["Tomas Quill (1920-1990) was a sculptor."]],
            ["Elsa Marrow", ["Elsa Marrow (1901-1977) was a painter born in Dunmere.", " She painted harbours."]],
        ],
    },
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SKILLGYM_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def questions_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hotpot") / "mini.json"
    path.write_text(json.dumps(QUESTIONS), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def spec(cache: Path, questions_file: Path):
    # Test fraction 0.2 of three questions may leave a split empty; the tests name tasks by id.
    return make_spec(questions=questions_file, backend="local")


@pytest.fixture(scope="module")
def env(spec):
    env = skillgym.SkillEnv(spec)
    yield env
    env.close()


def _tool(spec, name: str) -> Tool:
    return next(t for t in spec_tools(spec) if t.name == name)


# -- grader -----------------------------------------------------------------------------------
def test_normalization_and_scores_follow_hotpotqa():
    assert normalize_answer("The  Quillon!") == "quillon"
    assert normalize_answer("An apple, a day") == "apple day"
    assert exact_match("the Quillon.", "Quillon") == 1.0
    assert f1_score("the river Quillon", "the Quillon") == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert f1_score("yes", "no") == 0.0 and f1_score("no", "no") == 1.0
    assert f1_score("no way", "no") == 0.0  # yes/no answers must match exactly
    assert f1_score("", "Quillon") == 0.0


def test_answer_and_citations_are_split():
    short, urls = split_answer("Ed Wood\nSources: https://wiki.local/Ed_Wood_(film), https://wiki.local/Guns_N'_Roses.")
    assert short == "Ed Wood"
    assert urls == ["https://wiki.local/Ed_Wood_(film)", "https://wiki.local/Guns_N'_Roses"]
    gold = [url_for("Ed Wood (film)"), url_for("Scott Derrickson")]
    assert citation_f1(["https://wiki.local/Ed Wood (film)"], gold) == pytest.approx(2 / 3)
    assert citation_f1(gold + ["https://wiki.local/Other"], gold) == pytest.approx(0.8)
    assert citation_f1([], gold) == 0.0


def test_grade_has_every_component():
    task = Task(id="t", prompt="q", reference={"answer": "the Quillon", "sources": [url_for("Dunmere")]})
    grader = ResearchGrader()
    good = grader.grade(task, f"the Quillon\nSources: {url_for('Dunmere')}", [], None)
    assert set(good.components) == {"exact_match", "f1", "citation", "compactness"}
    assert good.score == 1.0
    uncited = grader.grade(task, "Quillon", [], None)
    assert uncited.components["f1"] == 1.0 and uncited.score == pytest.approx(0.9)
    wrong = grader.grade(task, f"the Rhine\nSources: {url_for('Dunmere')}", [], None)
    assert wrong.score == 0.0 and wrong.components["citation"] == 1.0
    rambling = grader.grade(task, "the Quillon " + "because " * 200, [], None)
    assert rambling.components["compactness"] < 0.5 and rambling.score < 0.9


# -- tools ------------------------------------------------------------------------------------
def test_tools_run_on_the_host_before_submit(spec):
    names = [t.name for t in spec_tools(spec)]
    assert names[-1] == "submit" and names[-3:-1] == ["web_search", "web_fetch"]
    assert "bash" not in names  # nothing a tool call runs in the sandbox reaches the index or a network
    assert not spec.sandbox.network


def test_host_tool_name_clash_is_an_error(spec):
    class Fake(Tool):
        name, description, Args = "submit", "clash", ToolArgs

        def __call__(self, sandbox, args):
            return ""

    with pytest.raises(ValueError, match="clash"):
        spec_tools(spec.model_copy(update={"host_tools": [Fake()]}))


def test_search_ranks_the_entity_page_first(spec):
    text = _tool(spec, "web_search")(None, WebSearch.Args(query="Elsa Marrow painter", k=2))
    lines = text.splitlines()
    assert lines[0] == "1. Elsa Marrow" and lines[1].strip() == "https://wiki.local/Elsa_Marrow"
    assert "born in Dunmere" in lines[2] and text.count("\n") == 5  # two results, three lines each
    assert "No results" in _tool(spec, "web_search")(None, WebSearch.Args(query="zzzqqq"))


def test_tool_errors_are_precise(env):
    env.reset(options={"task_id": "q-bridge-1"})
    call = '<tool_call>{"name": "%s", "arguments": %s}</tool_call>'
    cases = {
        ("web_search", json.dumps({"query": "  "})): "query is empty",
        ("web_search", json.dumps({"query": "x", "k": 10_000})): f"less than or equal to {MAX_K}",
        ("web_fetch", json.dumps({"url": "https://wiki.local/Nowhere"})): "no page at 'https://wiki.local/Nowhere'",
        ("web_fetch", json.dumps({"url": url_for("Dunmere"), "offset": 10_000})): "past the end",
    }
    for (name, args), expected in cases.items():
        obs, _, terminated, _, info = env.step(call % (name, args))
        assert expected in obs[-1]["content"] and info["tool_errors"], (name, obs[-1]["content"])
        assert not terminated


def test_long_pages_are_paginated(spec):
    fetch = _tool(spec, "web_fetch")
    url = url_for("Varnholm Lighthouse")
    first = fetch(None, WebFetchArgs(url=url))
    total = -(-len(LONG + "Varnholm Lighthouse is a lighthouse in Norway. ") // PAGE_CHARS)
    assert f"[page 1 of {total}; next offset {PAGE_CHARS}]" in first
    second = fetch(None, WebFetchArgs(url=url.replace("_", " "), offset=PAGE_CHARS))  # spaces work too
    assert f"[page 2 of {total}" in second
    body = "".join(
        fetch(None, WebFetchArgs(url=url, offset=o)).split("\n", 3)[3] for o in range(0, total * PAGE_CHARS, PAGE_CHARS)
    )
    assert body == "Varnholm Lighthouse is a lighthouse in Norway. " + LONG
    assert "end of page]" in fetch(None, WebFetchArgs(url=url, offset=(total - 1) * PAGE_CHARS))


def test_index_is_shared_and_pickles_without_its_arrays(spec, cache):
    index = _tool(spec, "web_search").backend
    assert isinstance(index, LocalIndex) and str(cache) in str(index.folder)
    assert len(index) == 6  # one page per distinct title across the questions
    clone = pickle.loads(pickle.dumps(index))
    assert len(pickle.dumps(index)) < 500 and clone.search("Dunmere", 1)[0].title == "Dunmere"
    assert clone._index() is index._index()  # one open (memory-mapped) copy per process
    again = make_spec(questions=spec.metadata["corpus"], backend="local")  # cached: not rebuilt
    assert again.metadata["index"] == spec.metadata["index"]


# -- episodes ----------------------------------------------------------------------------------
def _seen_before(traj, turn_index: int) -> str:
    return "\n".join(m.get("content") or "" for m in traj.messages[:turn_index])


@pytest.mark.parametrize("task_id", [q["_id"] for q in QUESTIONS])
def test_expert_answers_with_sources_copied_from_what_it_saw(env, spec, task_id):
    traj = run_episode(env, spec.expert(), task_id=task_id)
    assert traj.reward_components["f1"] == 1.0 and traj.reward_components["citation"] == 1.0, traj.final_answer
    assert traj.reward == 1.0
    for i, message in enumerate(traj.messages):
        for call in message.get("tool_calls") or []:
            args = json.loads(call["function"]["arguments"])
            seen = _seen_before(traj, i)
            strings = [args.get("query"), args.get("url")]
            if call["function"]["name"] == "submit":
                strings = [line for text in args["answer"].split("\n") for line in text.split(" ") if line]
            for s in strings:
                assert s is None or s in seen, f"{s!r} was written before anything showed it"


def test_random_policy_scores_nothing(env, spec):
    rewards = [run_episode(env, RandomPolicy(seed=i), task_id=q["_id"]).reward or 0.0 for i, q in enumerate(QUESTIONS)]
    assert sum(rewards) / len(rewards) <= 0.05


def test_expert_policy_spec_and_split(spec):
    assert isinstance(spec.expert(), ExpertPolicy)
    tasks = spec.tasks.tasks("train") + spec.tasks.tasks("test")
    assert sorted(t.id for t in tasks) == sorted(q["_id"] for q in QUESTIONS)
    assert [t.split for t in make_spec(questions=spec.metadata["corpus"], backend="local").tasks.tasks("train")] == [
        t.split for t in spec.tasks.tasks("train")
    ]
    other = make_spec(questions=spec.metadata["corpus"], backend="local", seed=1)
    assert other.metadata["task_counts"]["train"] + other.metadata["task_counts"]["test"] == 3


# -- a user's own documents --------------------------------------------------------------------
def test_folder_of_documents_is_the_corpus(cache, tmp_path):
    docs = tmp_path / "docs"
    (docs / "guides").mkdir(parents=True)
    (docs / "guides" / "deploy.md").write_text(
        "# Deploying Frobnicator\n\nRun `frob deploy --region eu-west` to ship.\n"
    )
    (docs / "faq.txt").write_text("The Frobnicator license is MIT.\n")
    (docs / "about.html").write_text(
        "<html><head><title>About us</title><style>p{}</style></head>"
        "<body><p>Founded in 2011 in Ghent.</p><script>var x=1;</script></body></html>"
    )
    (docs / ".hidden").mkdir()
    (docs / ".hidden" / "secret.md").write_text("# Secret\n")
    tasks = [
        {
            "id": "d1",
            "prompt": "Which region does the deploy guide use?",
            "reference": {"answer": "eu-west", "sources": ["https://docs.local/guides/deploy.md"]},
        }
    ]
    spec = make_spec(corpus=docs, tasks=tasks, backend="local")
    search, fetch = _tool(spec, "web_search"), _tool(spec, "web_fetch")
    hits = search(None, WebSearch.Args(query="deploy region", k=3))
    assert hits.startswith("1. Deploying Frobnicator\n   https://docs.local/guides/deploy.md")
    assert "Secret" not in search(None, WebSearch.Args(query="secret", k=5))
    about = fetch(None, WebFetchArgs(url="https://docs.local/about.html"))
    assert about.startswith("About us\n") and "Founded in 2011 in Ghent." in about and "var x" not in about
    env = skillgym.SkillEnv(spec)
    try:
        env.reset(options={"task_id": "d1"})
        answer = '<tool_call>{"name": "submit", "arguments": {"answer": "eu-west\\nSources: https://docs.local/guides/deploy.md"}}</tool_call>'
        _, reward, terminated, _, info = env.step(answer)
    finally:
        env.close()
    assert terminated and reward == 1.0 and info["reward_components"]["citation"] == 1.0
    (docs / "faq.txt").write_text("The Frobnicator license is Apache-2.0.\n")  # a changed file: a new index
    assert make_spec(corpus=docs, tasks=tasks, backend="local").metadata["index"] != spec.metadata["index"]


def test_folder_corpus_errors_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        make_spec(corpus=tmp_path / "missing", backend="local")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.bin").write_bytes(b"\0")
    with pytest.raises(ValueError, match="no .md"):
        make_spec(corpus=tmp_path / "empty", backend="local")


# -- a live provider (SearxNG's JSON API) on loopback -----------------------------------------
class _FakeSearx(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/search":
            query = parse_qs(url.query)
            assert query["format"] == ["json"]
            body = json.dumps(
                {
                    "query": query["q"][0],
                    "results": [
                        {
                            "title": f"Result {i} for {query['q'][0]}",
                            "url": f"http://{self.headers['Host']}/page/{i}",
                            "content": f"Snippet {i}.",
                        }
                        for i in range(8)
                    ],
                }
            ).encode()
            kind = "application/json"
        elif url.path.startswith("/page/"):
            body = f"<html><head><title>Page {url.path[6:]}</title></head><body><h1>Hello</h1><p>Body text.</p></body></html>".encode()
            kind = "text/html; charset=utf-8"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def searx():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeSearx)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_searxng_adapter_searches_and_fetches(spec, questions_file, searx):
    live = make_spec(questions=questions_file, search="searxng", searxng_url=searx, backend="local")
    search, fetch = _tool(live, "web_search"), _tool(live, "web_fetch")
    text = search(None, WebSearch.Args(query="lighthouse", k=3))
    assert text.splitlines()[0] == "1. Result 0 for lighthouse" and text.count("\n") == 8
    page = fetch(None, WebFetchArgs(url=f"{searx}/page/2"))
    assert page.startswith("Page 2\n") and "Hello\nBody text." in page
    with pytest.raises(OpError, match="no page at"):
        fetch(None, WebFetchArgs(url=f"{searx}/missing"))
    with pytest.raises(OpError, match="no page at"):
        fetch(None, WebFetchArgs(url="file:///etc/passwd"))


def test_searxng_down_is_a_tool_error(questions_file):
    live = make_spec(questions=questions_file, search="searxng", searxng_url="http://127.0.0.1:9", backend="local")
    with pytest.raises(OpError, match="search provider http://127.0.0.1:9 failed"):
        _tool(live, "web_search")(None, WebSearch.Args(query="x"))


def test_search_options_are_checked(questions_file):
    with pytest.raises(ValueError, match="searxng_url"):
        make_spec(questions=questions_file, search="searxng")
    with pytest.raises(ValueError, match="'local'"):
        make_spec(questions=questions_file, search="google")


def test_expert_without_gold_reads_the_best_results(env, spec):
    # An orchestrator may pose a question the task source does not hold: the expert still
    # searches, reads the two best results and reports a sentence it read, with its sources.
    task = Task(
        id="call-unknown",
        prompt="Where was the painter Elsa Marrow born?",
        split="test",
        reference={"answer": "Dunmere", "sources": [url_for("Elsa Marrow")]},
    )
    traj = run_episode(env, spec.expert(), task=task)
    calls = [c["function"]["name"] for m in traj.messages for c in m.get("tool_calls") or []]
    assert calls == ["web_search", "web_fetch", "web_fetch", "submit"]
    assert traj.final_answer.startswith(
        "Elsa Marrow (1901-1977) was a painter born in Dunmere.\nSources: https://wiki.local/Elsa_Marrow"
    )
    assert 0 < traj.reward_components["f1"] < 0.5 and traj.reward_components["citation"] > 0


def test_grader_names_a_missing_reference():
    with pytest.raises(ValueError, match="no reference answer"):
        ResearchGrader().grade(Task(id="x", prompt="q"), "a", [], None)
