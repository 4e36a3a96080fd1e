"""frontend-design-v0: briefs and split, the grader's arithmetic, and (with Docker) the real
browser: check_env, an expert episode, and one page per defect losing exactly its points.

The Docker tests share one env and one sandbox and render ~8 pages in all (about 20 s).
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from gymnasium.utils.env_checker import check_env

import skillgym
from skillgym.envs.frontend_design import (
    WEIGHTS,
    DesignBriefs,
    DesignGrader,
    ExpertPolicy,
    components_from_probe,
    compose_page,
    format_report,
    score_of,
)
from skillgym.envs.frontend_design.expert import on_colour
from skillgym.envs.frontend_design.grader import answer_path, is_generic_font
from skillgym.envs.frontend_design.tasks import SEED

OTHER_SKILL = Path("/work/shared/skills-corpus/anthropics-skills/frontend-design")


# -- no browser ------------------------------------------------------------------------------
def test_briefs_split_by_subject_and_state_their_constraints():
    tasks = DesignBriefs(seed=0)
    counts = tasks.counts()
    assert counts["train"] + counts["test"] == 8 * len(SEED) >= 300  # 2 themes x (seed + 3) brand colours
    assert counts["test"] >= 50
    assert sum(DesignBriefs(brand_variants=0).counts().values()) == 2 * len(SEED)
    by_subject: dict[str, set[str]] = {}
    for split in ("train", "test"):
        for task in tasks.tasks(split):
            by_subject.setdefault(task.metadata["subject_id"], set()).add(split)
            for text in task.reference["texts"]:
                assert f'"{text}"' in task.prompt
            assert task.reference["brand"] in task.prompt and "375 px" in task.prompt
    assert all(len(splits) == 1 for splits in by_subject.values())  # both themes on one side
    assert [t.id for t in DesignBriefs(seed=0).tasks("test")] == [t.id for t in tasks.tasks("test")]
    assert [t.id for t in DesignBriefs(seed=1).tasks("test")] != [t.id for t in tasks.tasks("test")]


def _page(**over):
    page = {
        "width": 1280,
        "selector_counts": {"h1": 1},
        "body_text": "Hello Tidewater",
        "contrast_checked": 10,
        "contrast_failure_count": 0,
        "colors": {"#0e7c86": 3, "#111111": 5},
        "page_background_luminance": 0.9,
        "page_weight_bytes": 5_000,
        "fonts": {"EB Garamond": 300, "DejaVu Sans": 2},
        "screenshot": {"nonzero_share": 0.05},
        "overflow_px": 0,
        "console_error_count": 0,
        "failed_request_count": 0,
        "external_request_count": 0,
    }
    page.update(over)
    return page


REF = {
    "selectors": [{"selector": "h1", "min": 1, "label": "h1"}],
    "texts": ["Tidewater"],
    "brand": "#0e7c86",
    "theme": "light",
    "max_weight_kb": 10,
}


def test_components_each_defect_costs_its_own_weight():
    good = {"renders": [_page(), _page(width=375)]}
    parts, _ = components_from_probe(good, REF)
    parts["compactness"] = 1.0
    assert score_of(parts) == pytest.approx(1.0)
    cases = {
        "console": {"console_error_count": 1},
        "requests": {"external_request_count": 1},
        "not_blank": {"screenshot": {"nonzero_share": 0.0}},
        "no_overflow_1280": {"overflow_px": 40},
        "brand_colour": {"colors": {"#ff0000": 1}},
        "theme": {"page_background_luminance": 0.05},
        "weight": {"page_weight_bytes": 50_000},
        "typography": {"fonts": {"Inter": 300, "EB Garamond": 10}},
    }
    for name, over in cases.items():
        parts, _ = components_from_probe({"renders": [_page(**over), _page(width=375)]}, REF)
        parts["compactness"] = 1.0
        assert parts[name] == 0.0, name
        assert score_of(parts) == pytest.approx(1.0 - WEIGHTS[name]), name
    parts, _ = components_from_probe({"renders": [_page(), _page(width=375, overflow_px=200)]}, REF)
    assert parts["no_overflow_375"] == 0.0
    parts, details = components_from_probe({"renders": [_page(body_text="nothing"), _page(width=375)]}, REF)
    assert parts["requirements"] == 0.5 and details["missing"] == ['text "Tidewater"']
    parts, _ = components_from_probe({"renders": [_page(contrast_failure_count=4), _page(width=375)]}, REF)
    assert parts["contrast"] == pytest.approx(0.6)
    parts, details = components_from_probe({"error": "no file at /workspace/x.html"}, REF)
    assert not any(parts.values()) and "no file" in details["error"]


def test_small_helpers():
    assert (
        answer_path("`index.html`\n") == "index.html" and answer_path("file:///workspace/a.html") == "/workspace/a.html"
    )
    assert (
        is_generic_font("Inter Display") and is_generic_font("Liberation Sans") and not is_generic_font("EB Garamond")
    )
    assert on_colour("#ffff00") == "#000000" and on_colour("#1e40af") == "#ffffff"
    text = format_report(
        {
            "path": "/workspace/i.html",
            "file_bytes": 10,
            "renders": [
                {
                    **_page(
                        width=375, overflow_px=300, scroll_width=675, wide_elements=[{"tag": "div.w", "right": 675}]
                    ),
                    "console_errors": ["boom"],
                    "console_error_count": 1,
                }
            ],
        }
    )
    assert "HORIZONTAL OVERFLOW" in text and "div.w" in text and "boom" in text


def test_random_policy_can_call_render_page():
    from skillgym.envs.frontend_design import RenderPage
    from skillgym.policies.random import RandomPolicy

    # render_page's width has minimum 320: the random policy once drew from [320, 51) and crashed.
    policy = RandomPolicy(seed=0, max_turns=100)
    policy.reset([], {})
    info = {"tools": [RenderPage().schema()]}
    widths = []
    for _ in range(60):
        action = policy.act([], info)
        for call in action.get("tool_calls", []) if isinstance(action, dict) else []:
            args = json.loads(call["function"]["arguments"])
            if "width" in args:  # optional: drawn about a third of the time
                widths.append(args["width"])
    assert widths and all(320 <= w <= 2560 for w in widths)


def test_skill_variants():
    spec = skillgym.make_spec("frontend-design-v0", build_image=False)
    assert spec.skill is not None and spec.skill.name == "frontend-design" and "render_page" in spec.skill.instructions
    assert skillgym.make_spec("frontend-design-v0", build_image=False, instruction_mode="none").skill is None
    if OTHER_SKILL.is_dir():
        other = skillgym.make_spec("frontend-design-v0", build_image=False, skill=str(OTHER_SKILL))
        assert other.skill is not None and other.skill.instructions != spec.skill.instructions
        assert other.metadata["skill_source"] == str(OTHER_SKILL)


def test_expert_rewrites_when_a_report_flags_overflow():
    tasks = DesignBriefs()
    task = tasks.tasks("test")[0]
    policy = ExpertPolicy(tasks)
    obs = [{"role": "system", "content": ""}, {"role": "user", "content": task.prompt}]
    policy.reset(obs, {"task_id": task.id})
    names = []
    # Each report is what the previous action's tool printed (the write_file result is not a report).
    reports = [
        "",
        "wrote",
        "[375px] ...\n  HORIZONTAL OVERFLOW: content is 600px wide",
        "wrote",
        "[375px] ok",
        "[1280px] ok",
    ]
    for report in reports:
        action = policy.act([*obs, {"role": "tool", "name": "render_page", "content": report}], {})
        names.append(action)
    assert "write_file" in names[0] and '"width": 375' in names[1]
    assert "write_file" in names[2] and "overflow-wrap: anywhere" in names[2]  # the fix pass
    assert '"width": 375' in names[3] and '"width": 1280' in names[4] and "submit" in names[5]


# -- the real browser ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def env():
    from conftest import require_docker

    require_docker()
    env = skillgym.make("frontend-design-v0")
    yield env
    env.close()


@pytest.mark.docker
def test_check_env(env):
    check_env(env, skip_render_check=True)


@pytest.mark.docker
def test_expert_episode_through_the_tools(env):
    task = env.env_spec.tasks.tasks("test")[0]
    policy = env.env_spec.expert()
    obs, info = env.reset(options={"task_id": task.id})
    policy.reset(obs, info)
    done, reward = False, 0.0
    while not done:
        obs, reward, term, trunc, info = env.step(policy.act(obs, info))
        done = term or trunc
    assert reward >= 0.85, info.get("reward_components")
    reports = [m["content"] for m in obs if m.get("role") == "tool" and m.get("name") == "render_page"]
    assert len(reports) == 2 and "[375px]" in reports[0] and "[1280px]" in reports[1]
    assert "horizontal overflow: none" in reports[0] and "console errors: 0" in reports[0]
    assert set(WEIGHTS) == set(info["reward_components"])
    # The screenshot comes back as an image part beside the report: bytes in the observation,
    # only the reference in the record.
    shots = [m["images"] for m in obs if m.get("role") == "tool" and m.get("name") == "render_page"]
    assert [len(s) for s in shots] == [1, 1]
    for images, width in zip(shots, (375, 1280), strict=True):
        raw = base64.b64decode(images[0]["data"])
        assert raw.startswith(b"\x89PNG") and images[0]["width"] == width
        assert images[0]["sha256"] == "sha256:" + hashlib.sha256(raw).hexdigest()
        assert images[0]["path"] == f"/workspace/.render/index-{width}.png"
    stored = [m for m in env.trajectory.messages if m.get("images")]
    assert [m["images"][0]["sha256"] for m in stored] == [s[0]["sha256"] for s in shots]
    assert all("data" not in m["images"][0] for m in stored)
    assert len(env.trajectory.model_dump_json()) < 40_000  # the pages' HTML, not megabytes of base64


@pytest.mark.docker
def test_multimodal_teacher_sees_the_screenshots(env):
    """``--teacher openai:MODEL?images=true``: the expert replayed by a loopback OpenAI-compatible
    server solves a brief, and the requests carry each render's PNG as an ``image_url`` part."""
    from skillgym.episode import run_episode
    from skillgym.policies.spec import make_policy
    from skillgym.testing import ReplayResponder, ScriptedOpenAIServer

    task = env.env_spec.tasks.tasks("test")[1]
    with ScriptedOpenAIServer(ReplayResponder.for_env(env, mode="structured")) as server:
        trajectory = run_episode(env, make_policy(f"openai:vision@{server.base_url}?images=true", env), task_id=task.id)
        requests = list(server.requests)
    assert trajectory.reward == 1.0, trajectory.reward_components
    urls = [
        part["image_url"]["url"]
        for message in requests[-1]["messages"]
        if isinstance(message["content"], list)
        for part in message["content"]
        if part["type"] == "image_url"
    ]
    assert len(urls) == 2 and all(base64.b64decode(u.partition(",")[2]).startswith(b"\x89PNG") for u in urls)
    stored = [i for m in trajectory.messages for i in m.get("images") or []]
    assert len(stored) == 2 and all("data" not in i for i in stored)


@pytest.mark.docker
def test_each_broken_page_loses_exactly_its_points(env):
    from skillgym.sandbox.factory import make_sandbox

    task = env.env_spec.tasks.get("tidewater-light")
    good = compose_page(task.reference, task.id)
    pages = {
        "good": (good, set()),
        "blank": (
            "<!doctype html><html><head><meta name='viewport' content='width=device-width'></head>"
            "<body style='background:#f5efe3'></body></html>",
            {"not_blank", "requirements", "brand_colour", "typography"},
        ),
        "console": (good.replace("</body>", "<script>missingFunction()</script></body>"), {"console"}),
        "overflow": (
            good.replace("</main>", "<div style='width:900px;height:10px'></div></main>"),
            {"no_overflow_375"},
        ),
        "contrast": (
            good.replace("--text: #1d1a16", "--text: #d8d0c0").replace("--muted: #4a443c", "--muted: #d8d0c0"),
            {"contrast"},
        ),
        # The sandbox has no network: an external image is a failed (and external) request.
        "external": (
            good.replace("</main>", "<img src='https://example.com/x.png' alt='' width='1' height='1'></main>"),
            {"requests"},
        ),
    }
    grader = DesignGrader()
    with make_sandbox(env.env_spec.sandbox) as sandbox:
        for name, (html, lost) in pages.items():
            sandbox.write_file(f"{name}.html", html)
            grade = grader.grade(task, f"{name}.html", [], sandbox)
            below = {k for k, v in grade.components.items() if v < 1.0}
            assert below == lost, (name, grade.components, grade.details)
            expected = 1.0 - sum(WEIGHTS[k] * (1.0 - grade.components[k]) for k in lost)
            assert grade.score == pytest.approx(expected), name
        missing = grader.grade(task, "nope.html", [], sandbox)
        assert missing.score == 0.0 and "no file" in missing.details["error"]
