"""The teacher-forcing report (skillgym.training.trace_loss): a tiny Qwen3 scores the number
env's expert episodes; each turn's log-probability is checked against token-by-token forwards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_rollouts_support import ENTRY

from skillgym.chat_template import qwen3_template, student_template
from skillgym.rollouts import RolloutConfig, iter_trajectories, run_rollouts
from skillgym.rollouts.export import sft_messages
from skillgym.training.trace_loss import main, score_episode, turn_spans
from tests.test_chat_template import tiny_tokenizer
from tests.test_hf_batching import qwen3


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> Path:
    """A tiny random Qwen3, saved with the template students are served with."""
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = student_template()
    folder = tmp_path_factory.mktemp("trace-loss") / "student"
    qwen3(vocab_size=len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trace-loss") / "teacher"
    run_rollouts(RolloutConfig(env=ENTRY, env_kwargs={"backend": "local"}, n_tasks=3, concurrency=3, out=out))
    return out


def _conversation(run: Path) -> tuple[list[dict], list[dict]]:
    trajectory = next(iter_trajectories(run))
    return sft_messages(trajectory), trajectory.tools


def test_each_turn_scores_what_the_student_would_generate(student, teacher_run):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = AutoModelForCausalLM.from_pretrained(student), AutoTokenizer.from_pretrained(student)
    messages, tools = _conversation(teacher_run)
    ids, spans = turn_spans(tokenizer, tokenizer.chat_template, messages, tools)
    assert [index for index, _, _ in spans] == [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    assert len(spans) == 2
    assert "read_file" in tokenizer.decode(ids[spans[0][1] : spans[0][2]])
    assert "submit" in tokenizer.decode(ids[spans[1][1] : spans[1][2]])

    turns = score_episode(model, tokenizer, tokenizer.chat_template, messages, tools, worst=2)
    for turn, (_, start, end) in zip(turns, spans):
        expected, exact = 0.0, True
        with torch.no_grad():  # one forward per token, over its prefix only
            for position in range(start, end):
                logprobs = torch.log_softmax(model(torch.tensor([ids[:position]])).logits[0, -1].float(), -1)
                expected += float(logprobs[ids[position]])
                exact &= int(logprobs.argmax()) == ids[position]
        assert turn["tokens"] == end - start
        assert turn["logprob"] == pytest.approx(expected, abs=1e-3)
        assert turn["greedy_exact"] == exact
        assert len(turn["worst"]) == 2 and turn["worst"][0]["logprob"] <= turn["worst"][1]["logprob"]


def test_a_template_that_rewrites_earlier_turns_is_refused(student, teacher_run):
    """Qwen3's inference template drops earlier turns' <think> blocks: the served prompt of turn 2
    is then not a prefix of the conversation, and scoring it would score another text."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(student)
    messages, tools = _conversation(teacher_run)
    with pytest.raises(ValueError, match="not a prefix"):
        turn_spans(tokenizer, qwen3_template(training=False), messages, tools)


def test_command_line_report(student, teacher_run, capsys):
    """Groups are task ids up to their first '-' (the number env's ids have none: one group each)."""
    report = main([str(student), str(teacher_run), "--per-group", "1", "--worst", "1", "--json"])
    assert json.loads(capsys.readouterr().out) == report
    assert sorted(report["groups"]) == sorted(t.task_id for t in iter_trajectories(teacher_run))
    for group in report["groups"].values():
        assert group["episodes"] == 1 and group["turns"] == 2 and group["mean_turn_logprob"] < 0
        assert 0 <= group["greedy_exact"] <= 1
    assert all(len(turn["worst"]) == 1 for episode in report["episodes"] for turn in episode["turns"])


def test_command_line_summary(student, teacher_run, capsys):
    main([str(student), str(teacher_run), "--per-group", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert sum("greedy reproduces" in line and "of 2 turns" in line for line in lines) == 3
    assert sum("student writes" in line for line in lines) == 3
