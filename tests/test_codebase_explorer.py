"""codebase-explorer-v0: task generation, splits, grader, expert and random floors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from gymnasium.utils.env_checker import check_env

import skillgym
from skillgym.envs.codebase_explorer import CodebaseGrader, CodebaseTasks, ExpertPolicy
from skillgym.envs.codebase_explorer.codebase import default_codebase, load_codebase
from skillgym.envs.codebase_explorer.tasks import QTYPES
from skillgym.episode import run_episode
from skillgym.policies import RandomPolicy
from skillgym.types import Task

N_EVAL = 100


@pytest.fixture(scope="module")
def stdlib_root() -> Path:
    return default_codebase()


@pytest.fixture(scope="module")
def source(stdlib_root: Path) -> CodebaseTasks:
    return CodebaseTasks(load_codebase(stdlib_root), seed=0)


@pytest.fixture(scope="module", params=["local", "docker"])
def env(request: pytest.FixtureRequest):
    # One env (one sandbox) serves every episode of a module: resets reuse it.
    if request.param == "docker":
        from conftest import require_docker

        require_docker()
    env = skillgym.make("codebase-explorer-v0", split="test", backend=request.param)
    yield env
    env.close()


def _mean_reward(env, policy, tasks: list[Task]) -> float:
    rewards = [run_episode(env, policy, seed=i, task_id=t.id).reward or 0.0 for i, t in enumerate(tasks)]
    return sum(rewards) / len(rewards)


# -- the acceptance floors ------------------------------------------------------------------
def test_expert_solves_test_tasks(env):
    tasks = env.env_spec.tasks.tasks("test")[:N_EVAL]
    assert {t.metadata["qtype"] for t in tasks} == set(QTYPES)  # the prefix mixes every type
    assert _mean_reward(env, ExpertPolicy(), tasks) >= 0.95


def test_random_policy_scores_near_zero(env):
    tasks = env.env_spec.tasks.tasks("test")[:N_EVAL]
    assert _mean_reward(env, RandomPolicy(seed=0), tasks) <= 0.05


def test_expert_is_short_and_uses_only_tools(env):
    task = env.env_spec.tasks.tasks("test")[0]
    traj = run_episode(env, ExpertPolicy(), task_id=task.id)
    assistant = [m for m in traj.messages if m["role"] == "assistant"]
    assert 2 <= len(assistant) <= 4
    assert all(len(m["tool_calls"]) == 1 and len(m["content"]) <= 80 for m in assistant)
    assert assistant[-1]["tool_calls"][0]["function"]["name"] == "submit"
    assert traj.policy_id == "expert" and traj.reward_components["correct"] == 1.0


def test_check_env(env):
    check_env(env, skip_render_check=True)


def test_env_records_codebase_and_skill(env):
    meta = env.env_spec.metadata
    assert meta["codebase_hash"].startswith("sha256:") and meta["codebase_files"] > 100
    obs, info = env.reset(seed=0)
    assert "Exploring a codebase" in obs[0]["content"] and "/workspace/repo" in obs[0]["content"]
    assert {t["function"]["name"] for t in info["tools"]} == {"grep", "glob", "read_file", "list_dir", "bash", "submit"}
    assert "answer" not in info["task_metadata"]


# -- task generation ----------------------------------------------------------------------------
def _symbols(task: Task) -> set[str]:
    meta = task.metadata
    if meta["qtype"] == "default":
        return {meta.get("class") or meta["function"]}
    if meta["qtype"] == "callers":
        return {meta["callee"]} | {n.split(".")[0] for n in task.reference["answer"].split(", ")}
    return {meta["symbol"]}


def test_thousands_of_tasks_in_both_splits(source: CodebaseTasks):
    counts = source.counts()
    assert len(source) >= 3000
    for split in ("train", "test"):
        assert set(counts[split]) == set(QTYPES), counts
        assert min(counts[split].values()) >= 40, counts
    assert sum(counts["test"].values()) >= N_EVAL


def test_splits_share_no_symbol(source: CodebaseTasks):
    train = set().union(*(_symbols(t) for t in source.tasks("train")))
    test = set().union(*(_symbols(t) for t in source.tasks("test")))
    assert train and test and not (train & test)


def test_seeded_and_deterministic(stdlib_root: Path, source: CodebaseTasks):
    again = CodebaseTasks(load_codebase(stdlib_root), seed=0)
    other = CodebaseTasks(load_codebase(stdlib_root), seed=1)
    for split in ("train", "test"):
        ids = [t.id for t in source.tasks(split)]
        assert ids == [t.id for t in again.tasks(split)]
        other_ids = [t.id for t in other.tasks(split)]
        assert other_ids != ids and sorted(other_ids) == sorted(ids)  # the seed orders, never re-splits


def test_metadata_holds_the_question_not_the_answer(source: CodebaseTasks):
    for task in source.tasks("test"):
        assert task.metadata["qtype"] == task.reference["qtype"]
        assert set(task.metadata) <= {"qtype", "symbol", "param", "function", "class", "module", "path", "callee"}
        if task.metadata["qtype"] in ("where", "constant"):  # elsewhere a name may be its own answer
            assert task.reference["answer"] not in [str(v) for v in task.metadata.values()]
        assert task.id.startswith(task.metadata["qtype"] + "-")


# -- grader -------------------------------------------------------------------------------------
def _task(qtype: str, answer: str, **meta: str) -> Task:
    return Task(
        id=f"{qtype}-x", prompt="?", reference={"qtype": qtype, "answer": answer}, metadata={"qtype": qtype, **meta}
    )


GRADER_CASES = [
    # (task, right answers, wrong answers)
    (
        _task("where", "email/utils.py", symbol="formatdate"),
        ["email/utils.py", "/workspace/repo/email/utils.py", "./email/utils.py", "`email/utils.py`"],
        ["email/_parseaddr.py", "utils.py", ""],
    ),
    (
        _task("default", "'utf-8'", symbol="f", param="encoding", function="f"),
        ["'utf-8'", '"utf-8"', "encoding='utf-8'", "`'utf-8'`"],
        ["utf-8x", "None", "'utf8'"],
    ),
    (_task("default", "(1, 2)", symbol="f", param="p", function="f"), ["(1,2)", "( 1, 2 )"], ["[1, 2]"]),
    (
        _task("callers", "FTP.makeport, ftpcp", module="ftplib", path="ftplib.py", callee="x"),
        ["ftpcp, FTP.makeport", "FTP.makeport\nftpcp", "- `ftpcp`\n- `FTP.makeport()`", "FTP.makeport ftpcp"],
        ["FTP.makeport", "makeport, ftpcp", "FTP.makeport, ftpcp, test"],
    ),
    (_task("methods", "12", symbol="C"), ["12", "12 methods", "12."], ["11", "12 or 13", "twelve"]),
    (
        _task("constant", "imaplib: 993", symbol="IMAP4_SSL_PORT"),
        ["imaplib: 993", "imaplib.py: 993", "imaplib.IMAP4_SSL_PORT = 993", "imaplib:993"],
        ["imaplib: 143", "poplib: 993", "993"],
    ),
    (
        _task("constant", "json.decoder: 'a:b'", symbol="K"),
        ['json.decoder: "a:b"', "json/decoder.py: 'a:b'"],
        ["json: 'a:b'"],
    ),
]


@pytest.mark.parametrize("task, rights, wrongs", GRADER_CASES, ids=[c[0].metadata["qtype"] for c in GRADER_CASES])
def test_grader_per_type(task: Task, rights: list[str], wrongs: list[str]):
    grader = CodebaseGrader()
    trace = [{"role": "tool", "content": "x" * 500}]
    for answer in rights:
        grade = grader.grade(task, answer, trace, None)
        assert grade.components["correct"] == 1.0, answer
        assert grade.score >= 0.9
    for answer in wrongs:
        grade = grader.grade(task, answer, trace, None)
        assert grade.score == 0.0 and grade.components["correct"] == 0.0, answer


def test_grader_penalizes_verbose_answers():
    grader = CodebaseGrader()
    trace = [{"role": "tool", "content": "x" * 2000}]
    task = _task("where", "email/utils.py", symbol="formatdate")
    bare = grader.grade(task, "email/utils.py", trace, None)
    verbose = grader.grade(
        task,
        "After searching the repository I found that `formatdate` is defined in "
        "the file email/utils.py, which is part of the email package.",
        trace,
        None,
    )
    assert bare.score == 1.0
    assert verbose.components["correct"] == 1.0 and 0.9 <= verbose.score < bare.score
    count = _task("methods", "7", symbol="C")
    assert (
        grader.grade(
            count, "The class C defines 7 methods in its body, not counting inherited ones.", trace, None
        ).score
        < 1.0
    )


# -- a user's own repository ----------------------------------------------------------------------
USER_FILES = {
    "shop/__init__.py": "VERSION = '1.2'\n",
    "shop/cart.py": """
        TAX_RATE = 0.2
        MAX_ITEMS = 50


        def price_with_tax(amount, rate=TAX_RATE, rounding=2):
            return round(amount * (1 + rate), rounding)


        class Cart:
            def __init__(self, owner, currency='EUR'):
                self.owner = owner
                self.items = []

            def add(self, item, quantity=1):
                self.items.append((item, quantity))

            def total(self):
                return price_with_tax(sum(i.price * q for i, q in self.items))

            def receipt(self, width=40):
                return format_receipt(self.items, width)


        def format_receipt(items, width=40):
            return "\\n".join(str(i) for i in items)


        def checkout(cart, pay_later=False):
            cart.total()
            return price_with_tax(cart.total(), rounding=0)
    """,
    "shop/util/money.py": """
        DEFAULT_CURRENCY = "EUR"


        class Money:
            def __init__(self, cents, currency=DEFAULT_CURRENCY):
                self.cents = cents

            def __add__(self, other):
                return Money(self.cents + other.cents)


        def parse_money(text, *, strict=True, sep='.'):
            return Money(int(text.replace(sep, "")))
    """,
}


def test_env_on_a_user_repository(tmp_path: Path):
    for rel, text in USER_FILES.items():
        path = tmp_path / "repo" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    root = tmp_path / "repo"
    # The sandbox may read the mount as an unprivileged user; pytest's tmp folders are private.
    for folder in [tmp_path, *[p for p in root.rglob("*") if p.is_dir()], root]:
        folder.chmod(0o755)
    env = skillgym.make("codebase-explorer-v0", codebase=root, backend="local")
    try:
        source = env.env_spec.tasks
        tasks = source.tasks("train") + source.tasks("test")
        assert len(tasks) >= 15 and {t.metadata["qtype"] for t in tasks} == set(QTYPES)
        golds = {
            (t.metadata["qtype"], t.metadata.get("symbol") or t.metadata.get("callee")): t.reference["answer"]
            for t in tasks
        }
        assert golds[("where", "Money")] == "shop/util/money.py"
        assert golds[("methods", "Cart")] == "4"
        assert golds[("constant", "MAX_ITEMS")] == "shop.cart: 50"
        assert golds[("callers", "price_with_tax")] == "Cart.total, checkout"
        assert env.env_spec.metadata["codebase_hash"] == load_codebase(root).content_hash
        assert env.env_spec.subject_dir == str(root.resolve())  # the documented field pipelines read
        expert = ExpertPolicy()
        for task in tasks:
            traj = run_episode(env, expert, task_id=task.id)
            assert traj.reward_components.get("correct") == 1.0, (task.prompt, task.reference, traj.final_answer)
    finally:
        env.close()


def test_ablation_records_no_skill_it_did_not_see(tmp_path: Path):
    spec = skillgym.make_spec("codebase-explorer-v0", instruction_mode="none", backend="local")
    assert spec.skill is None and spec.instruction_mode == "none"
    env = skillgym.make("codebase-explorer-v0", instruction_mode="none", backend="local", split="test")
    try:
        task = env.env_spec.tasks.tasks("test")[0]
        traj = run_episode(env, ExpertPolicy(), task_id=task.id)
        assert "Exploring a codebase" not in traj.messages[0]["content"], "the ablation showed the skill"
        assert traj.skill_hash is None and traj.reward == 1.0
    finally:
        env.close()
    with_skill = skillgym.make_spec("codebase-explorer-v0", backend="local")
    assert with_skill.skill is not None and with_skill.skill.name == "codebase-explorer"
    assert with_skill.skill.source_path.endswith("skill/SKILL.md")  # read by the core skills loader
    assert with_skill.skill.files == [] and with_skill.skill.allowed_tools == [
        "grep",
        "glob",
        "read_file",
        "list_dir",
        "bash",
        "submit",
    ]


def test_codebase_tasks_is_a_task_list(source: CodebaseTasks):
    from skillgym.tasks import TaskList

    assert isinstance(source, TaskList)
    first = source.tasks("test")[0]
    assert source.get(first.id) is first
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        source.tasks("validation")
    with pytest.raises(KeyError, match="codebase-explorer"):
        source.get("nope")
