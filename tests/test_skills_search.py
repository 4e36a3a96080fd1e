"""The skill library: BM25 search over the real corpus, persistence, hybrid fusion, the CLI."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from skillgym.benchmarks.skill_search import find_corpus
from skillgym.skills.cli import app
from skillgym.skills.library import AmbiguousSkillName, SkillLibrary
from skillgym.skills.search import SearchError, reciprocal_rank_fusion

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
    _write(src / "csv-clean" / "SKILL.md", "---\nname: csv-clean\ndescription: Clean messy CSV files.\n---\nUse pandas.\n")
    _write(src / "agents" / "sql.md", "---\nname: sql\ndescription: Writes SQL queries.\ntools: Read\n---\nYou write SQL.\n")
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
    _write(src / "git-helper" / "SKILL.md", "---\nname: git-helper\ndescription: Rebase and cherry-pick commits.\n---\nGit.\n")
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
    assert json.loads(runner.invoke(app, ["show", "pdf-forms", "--path", str(src), "--json"]).stdout)["name"] == "pdf-forms"
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
