"""frontend-design-v0: a designer subagent writes a page from a brief and checks it in a real browser.

The sandbox runs ``skillgym/frontend`` (the base image plus Debian's Chromium and fonts,
``docker/frontend``; still no network). The policy gets the file tools, ``bash`` and
``render_page`` (:mod:`.browser`: Chromium inside the sandbox, a text report and a PNG
screenshot under ``/workspace/.render``), and submits the page's path. Briefs come from a
hand-written seed of 40 subjects grown into light and dark themes and
several brand colours (:mod:`.tasks`); the grader loads
the page in the same browser at 1280 and 375 px (:mod:`.grader`). :class:`ExpertPolicy`
composes pages from a small design system through the tools.

The skill is the project's own (``skill/SKILL.md``); ``skill=PATH`` swaps in any other skill
folder (e.g. another frontend-design skill) and ``instruction_mode="none"`` drops it, so the
with/without/other ablation is three ``--variant``s of ``skillgym eval``.

``render_page`` returns its screenshot as an image part beside the text report
(:class:`~skillgym.types.ToolOutput`): a multimodal teacher sees it with ``?images=true``,
a text-only one reads the report. Distilling into the tiny CPU student (recipe
``training/frontend-design-tiny.yaml`` and a 2,048-token turn cap, both picked by
``skillgym distill`` for this env)::

    skillgym distill frontend-design-v0 --teacher expert --student tiny --train-tasks 64 \
        --test-tasks 16 --concurrency 4 --env-arg max_turns=6 --out runs/distill-frontend

and with a real multimodal model as the teacher (any OpenAI-compatible endpoint)::

    OPENAI_BASE_URL=https://HOST/v1 OPENAI_API_KEY=... skillgym distill frontend-design-v0 \
        --teacher "openai:MODEL?images=true&temperature=0.7" --student tiny --train-tasks 64 \
        --min-reward 0.85 --out runs/distill-frontend-openai

The acceptance benchmark: ``python -m skillgym.envs.frontend_design.measure --json``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from skillgym.sandbox.base import SandboxConfig
from skillgym.skills.loader import load_skill as _load_skill_file
from skillgym.spec import EnvSpec, InstructionMode
from skillgym.types import SkillSpec

from .browser import FLAT_SHARE, ProbeError, RenderPage, format_report, probe
from .expert import ExpertPolicy, compose_page
from .grader import WEIGHTS, DesignGrader, components_from_probe, score_of
from .tasks import DesignBriefs, brief_rows

__all__ = [
    "ENV_ID",
    "FLAT_SHARE",
    "DesignBriefs",
    "DesignGrader",
    "ExpertPolicy",
    "IMAGE",
    "ProbeError",
    "RenderPage",
    "WEIGHTS",
    "brief_rows",
    "components_from_probe",
    "compose_page",
    "format_report",
    "load_skill",
    "make_spec",
    "probe",
    "score_of",
]

ENV_ID = "frontend-design-v0"
IMAGE = "skillgym/frontend:1"
TOOLS = ["bash", "read_file", "write_file", "edit_file", "list_dir", "submit"]
SKILL_PATH = Path(__file__).with_name("skill") / "SKILL.md"
ENV_NOTES = (
    "Write the page as one self-contained HTML file in /workspace; the sandbox has no network. "
    "render_page(path, width) shows you what a real browser makes of it. When the page is done, call "
    "submit with its path alone (e.g. index.html)."
)


def load_skill(path: str | Path = SKILL_PATH) -> SkillSpec:
    """A skill through the core skills loader: the project's own by default, or any skill folder."""
    return _load_skill_file(path)


def _ensure_image() -> None:
    # Built once by scripts/setup_docker.sh; a missing image is built here rather than failing
    # at the first sandbox start. No engine at all: the sandbox factory reports that itself.
    from docker.errors import DockerException

    from skillgym.sandbox.images import ensure_derived_image

    try:
        ensure_derived_image("frontend")
    except DockerException:
        pass


def make_spec(
    skill: str | Path | None = None,
    seed: int = 0,
    brand_variants: int = 3,
    instruction_mode: InstructionMode = "system",
    backend: str = "auto",
    build_image: bool = True,
    **spec_kwargs: Any,
) -> EnvSpec:
    """The EnvSpec of frontend-design-v0 (registered as its spec factory).

    Args:
        skill: A skill folder (or its SKILL.md) to use instead of the project's own.
        seed: Picks the train/test split of the briefs (by subject).
        brand_variants: Extra brand colours each subject is asked in (0: the 80 seed briefs; 3: 320).
        instruction_mode: ``system``, ``load_skill`` or ``none`` (no skill at all).
        backend: The sandbox backend; the page is rendered by the Chromium of ``skillgym/frontend``,
            so ``local`` works only on a host with ``chromium`` installed.
        build_image: Build ``skillgym/frontend`` now if it is missing (about 2 minutes, once).
        **spec_kwargs: Other :class:`EnvSpec` fields (``max_turns``, ...).

    Returns:
        The spec; ``metadata`` records the skill's source, the image and the task counts.
    """
    if build_image and backend != "local":
        _ensure_image()
    tasks = DesignBriefs(seed=seed, brand_variants=brand_variants)
    options: dict[str, Any] = {"max_turns": 12, "max_tokens": 32_768, "max_tool_output": 4_000}
    options.update(spec_kwargs)
    skill_source = str(Path(skill).expanduser().resolve()) if skill is not None else "project"
    return EnvSpec(
        id=ENV_ID,
        description="Design a self-contained web page from a brief, check it in headless Chromium, submit its path.",
        skill=None if instruction_mode == "none" else load_skill(skill if skill is not None else SKILL_PATH),
        tools=list(TOOLS),
        host_tools=[RenderPage()],
        # Chromium needs more memory and many more threads than the base sandbox allows.
        sandbox=SandboxConfig(backend=backend, image=IMAGE, memory_mb=2048, pids_limit=1024, default_timeout=60.0),
        tasks=tasks,
        grader=DesignGrader(),
        system_prompt=ENV_NOTES,
        instruction_mode=instruction_mode,
        expert=functools.partial(ExpertPolicy, tasks),
        metadata={
            "skill_source": skill_source,
            "image": IMAGE,
            "task_counts": tasks.counts(),
            "seed": seed,
            "brand_variants": brand_variants,
        },
        **options,
    )
