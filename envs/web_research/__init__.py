"""web-research-v0: the research subagent: search and read the web, return a short sourced answer.

Questions are HotpotQA's distractor dev set (bridge and comparison, 7,405; CC BY-SA 4.0),
downloaded on first use (:mod:`.data`). The "web" is the pool of every context paragraph of
every question, one page per title at ``https://wiki.local/<Title>`` (66,581 pages), so each
question's two gold pages hide among tens of thousands; ``web_search`` is BM25 over it and
``web_fetch`` reads a page (:mod:`.search`, :mod:`.tools`, host side: the sandbox keeps no
network). ``corpus=PATH`` searches a folder of your own documents instead, and
``search="searxng"`` a live SearxNG instance. Answers are graded by HotpotQA's EM/F1,
citations and compactness (:mod:`.grader`); :class:`ExpertPolicy` solves tasks through the tools.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from skillgym.cache import cache_root
from skillgym.sandbox.base import SandboxConfig
from skillgym.skills.loader import load_skill as _load_skill_file
from skillgym.spec import EnvSpec, InstructionMode
from skillgym.tasks import TaskList, load_tasks_jsonl
from skillgym.types import SkillSpec, Task

from .corpus import Page, pages_from_folder, pages_from_questions, url_for
from .data import LICENSE, MD5, load_questions, md5_of
from .expert import ExpertPolicy
from .grader import ResearchGrader, exact_match, f1_score
from .search import (
    INDEX_VERSION,
    LocalIndex,
    SearchBackend,
    SearchResult,
    SearxngBackend,
    UnknownURL,
    build_index,
    folder_fingerprint,
)
from .tasks import ResearchTasks, task_rows
from .tools import WebFetch, WebSearch

__all__ = [
    "ENV_ID",
    "ExpertPolicy",
    "LocalIndex",
    "Page",
    "ResearchGrader",
    "ResearchTasks",
    "SearchBackend",
    "SearchResult",
    "SearxngBackend",
    "UnknownURL",
    "WebFetch",
    "WebSearch",
    "exact_match",
    "f1_score",
    "hotpotqa_index",
    "load_skill",
    "make_spec",
    "url_for",
]

ENV_ID = "web-research-v0"
# The file tools stay, as in the other envs (notes, a shared workspace under an orchestrator).
TOOLS = ["read_file", "write_file", "edit_file", "glob", "grep", "list_dir", "submit"]
SKILL_PATH = Path(__file__).with_name("skill") / "SKILL.md"
ENV_NOTES = (
    "Use web_search and web_fetch to research the question. Then call submit with the answer alone on the "
    "first line (for a yes/no question: yes or no) and, on a second line, Sources: followed by the URLs of "
    "the pages you used."
)
TASKS_FILE = "tasks.json"


def load_skill(path: Path = SKILL_PATH) -> SkillSpec:
    """The project-written skill text, read with the core skills loader."""
    return _load_skill_file(path)


def index_root() -> Path:
    return cache_root() / "web_research"


def hotpotqa_index(questions: str | Path | None = None, progress: bool | None = None) -> Path:
    """The built index folder for HotpotQA-format questions (default: the dev set), building it
    (and downloading the data) on first use. Its ``tasks.json`` holds the questions' task rows.

    Args:
        questions: A HotpotQA-format JSON file; None: the dev set from the cache.
        progress: Progress bars on stderr (download, indexing); None: when stderr is a terminal.

    Returns:
        The index folder (for :class:`LocalIndex`).
    """
    key = MD5 if questions is None else md5_of(Path(questions))
    folder = index_root() / f"hotpotqa-{key[:12]}-v{INDEX_VERSION}"
    if (folder / "manifest.json").is_file():
        return folder
    import sys

    show = sys.stderr.isatty() if progress is None else progress
    parsed = load_questions(questions, progress=show)
    return build_index(pages_from_questions(parsed), folder, extra={TASKS_FILE: task_rows(parsed)}, progress=show)


def folder_index(corpus: str | Path, progress: bool = False) -> Path:
    """The built index folder of a user's document folder (rebuilt when a file changes)."""
    root = Path(corpus).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"corpus={corpus!s}: not a folder (give a folder of .md, .txt or .html files)")
    folder = index_root() / f"folder-{folder_fingerprint(root)}-v{INDEX_VERSION}"
    if (folder / "manifest.json").is_file():
        return folder
    return build_index(pages_from_folder(root), folder, progress=progress)


def _user_tasks(tasks: Any) -> TaskList:
    if tasks is None:
        return TaskList([], name="web-research (no tasks given)", splits=("train", "test"))
    if isinstance(tasks, (str, Path)):
        return load_tasks_jsonl(tasks)
    return TaskList([t if isinstance(t, Task) else Task.model_validate(t) for t in tasks], name="web-research tasks")


def make_spec(
    corpus: str | Path | None = None,
    tasks: Any = None,
    questions: str | Path | None = None,
    search: str = "local",
    searxng_url: str | None = None,
    seed: int = 0,
    instruction_mode: InstructionMode = "system",
    backend: str = "auto",
    progress: bool | None = None,
    **spec_kwargs: Any,
) -> EnvSpec:
    """The EnvSpec of web-research-v0 (registered as its spec factory).

    Args:
        corpus: A folder of Markdown, text or HTML documents to search instead of the HotpotQA
            pages (then give ``tasks``).
        tasks: With ``corpus``: a JSONL task file or a list of tasks, each ``reference`` holding
            ``answer`` and optionally ``sources`` (URLs ``https://docs.local/<relative path>``).
        questions: A HotpotQA-format JSON file to use instead of the dev set (tests, subsets).
        search: ``local`` (BM25 over the corpus) or ``searxng`` (a live instance at ``searxng_url``).
        searxng_url: The SearxNG instance's base URL.
        seed: Picks the train/test split of the HotpotQA questions.
        instruction_mode: ``system``, ``load_skill`` or ``none``.
        backend: The sandbox backend (the file tools and ``submit`` run there; it has no network).
        progress: Progress bars on stderr while downloading and indexing.
        **spec_kwargs: Other :class:`EnvSpec` fields (``max_turns``, ...).

    Returns:
        The spec; ``metadata`` records the corpus, index folder and task counts.
    """
    if corpus is not None:
        folder = folder_index(corpus, progress=bool(progress))
        source: TaskList = _user_tasks(tasks)
        corpus_name = str(Path(corpus).expanduser().resolve())
    else:
        folder = hotpotqa_index(questions, progress=progress)
        rows = json.loads((folder / TASKS_FILE).read_text(encoding="utf-8"))
        source = ResearchTasks(rows, seed=seed)
        corpus_name = "hotpotqa-distractor-dev" if questions is None else str(questions)
    if search == "local":
        engine: SearchBackend = LocalIndex(folder)
    elif search == "searxng":
        if not searxng_url:
            raise ValueError(
                "search='searxng' needs searxng_url='http://HOST:PORT' (a SearxNG instance with JSON output)"
            )
        engine = SearxngBackend(searxng_url)
    else:
        raise ValueError(f"search={search!r}: use 'local' (the default) or 'searxng'")
    options: dict[str, Any] = {"max_turns": 10, "max_tokens": 16_384}
    options.update(spec_kwargs)
    counts = {s: len(source.tasks(s)) for s in ("train", "test")}
    return EnvSpec(
        id=ENV_ID,
        description="Research a question with web_search and web_fetch; return a short answer with its sources.",
        skill=None if instruction_mode == "none" else load_skill(),
        tools=list(TOOLS),
        host_tools=[WebSearch(engine), WebFetch(engine)],
        sandbox=SandboxConfig(backend=backend),
        tasks=source,
        grader=ResearchGrader(),
        system_prompt=ENV_NOTES,
        instruction_mode=instruction_mode,
        expert=functools.partial(ExpertPolicy, source),
        metadata={
            "corpus": corpus_name,
            "index": str(folder),
            "search": search,
            "task_counts": counts,
            "seed": seed,
            "data_license": LICENSE if corpus is None else None,
        },
        **options,
    )
