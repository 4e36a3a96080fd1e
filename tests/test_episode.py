"""The one episode driver: async and sync faces give the same record, the env assembles it,
policy time lands on its own turn, and a failed episode has one constructor."""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path

import pytest

from skillgym.episode import EpisodeState, arun_episode, run_episode
from skillgym.types import Trajectory

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_rollouts_support import NumberExpert, make_number_env  # noqa: E402


class MeteredExpert(NumberExpert):
    """NumberExpert that reports usage and token ids, and takes longer on its second turn."""

    def act(self, observation, info):
        turn = sum(1 for m in observation if m["role"] == "assistant")
        action = super().act(observation, info)
        if isinstance(action, str):
            action = {"role": "assistant", "content": action}
        threading.Event().wait(0.05 * turn)  # turn 0: instant; turn 1: 50 ms
        return {
            **action,
            "usage": {"prompt_tokens": 10, "completion_tokens": turn + 1},
            "token_ids": [turn] * 3,
            "logprobs": [-0.5] * 3,
        }


@pytest.fixture
def env():
    env = make_number_env()
    yield env
    env.close()


def _comparable(trajectory: Trajectory) -> dict:
    return trajectory.model_dump(exclude={"timings"})


def test_sync_and_async_drivers_give_the_same_record(env):
    sync = run_episode(env, MeteredExpert(), task_id="t3", seed=5)
    asynchronous = asyncio.run(arun_episode(env, MeteredExpert(), task_id="t3", seed=5))
    assert _comparable(sync) == _comparable(asynchronous)
    assert sync.reward == 1.0 and sync.policy_id == "number-expert" and sync.seed == 5
    assert sync.usage.prompt_tokens == 20 and sync.usage.completion_tokens == 3
    assert sync.token_ids == [[0, 0, 0], [1, 1, 1]] and sync.logprobs == [[-0.5] * 3] * 2
    # Policy time lands on the turn it belongs to (the slow one is the second).
    assert [t.turn for t in sync.timings] == [1, 2]
    assert sync.timings[0].policy_seconds < 0.04 <= sync.timings[1].policy_seconds


def test_sync_driver_runs_inside_a_running_loop_and_in_threads(env):
    async def nested() -> Trajectory:
        # e.g. a subagent episode run by a tool call of an episode on this loop
        return run_episode(env, NumberExpert(), task_id="t2")

    assert asyncio.run(nested()).reward == 1.0
    results: list[Trajectory] = []
    envs = [make_number_env() for _ in range(3)]
    try:
        threads = [
            threading.Thread(target=lambda e=e: results.append(run_episode(e, NumberExpert(), task_id="t1")))
            for e in envs
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for e in envs:
            e.close()
    assert [r.reward for r in results] == [1.0, 1.0, 1.0]


def test_task_or_task_id_and_step_limit(env):
    from skillgym.types import Task

    task = Task(
        id="own",
        prompt="What number is written in notes/n9.txt?",
        files={"notes/n9.txt": "the number is 5"},
        reference={"answer": "5"},
    )
    assert run_episode(env, NumberExpert(), task=task).reward == 1.0
    state = EpisodeState()
    cut = run_episode(env, NumberExpert(), task_id="t1", max_steps=1, state=state)
    assert cut.truncated and not cut.terminated and cut.num_turns == 1 and state.turns == 1 and state.reset_done
    assert "step limit of 1" in cut.metadata["truncation_reason"]
    with pytest.raises(RuntimeError, match="reset"):
        env.step("more")  # the driver's limit ended the episode in the env too


def test_policy_turn_is_recorded_by_the_env_only_after_a_step(env):
    with pytest.raises(RuntimeError, match="no turn to record"):
        env.record_policy_turn(0.1)  # no episode yet
    env.reset(options={"task_id": "t1"})
    with pytest.raises(RuntimeError, match="no turn to record"):
        env.record_policy_turn(0.1)  # no turn yet
    env.step("Let me think.")
    env.record_policy_turn(0.25, usage={"prompt_tokens": 4, "completion_tokens": 2})
    record = env.trajectory
    assert record.timings[0].turn == 1 and record.timings[0].policy_seconds == 0.25 and record.usage.total_tokens == 6


def test_failed_record_keeps_the_partial_episode_or_builds_a_header(env):
    header = Trajectory.failed(
        "RuntimeError: boom",
        env_id="x-v0",
        env_version=0,
        task_id="t",
        skill_hash="sha256:1",
        policy_id="p",
        seed=3,
        sample_index=2,
        metadata={"traceback": "..."},
    )
    assert (header.status, header.error, header.reward, header.sample_index) == (
        "failed",
        "RuntimeError: boom",
        None,
        2,
    )
    assert header.metadata == {"traceback": "..."} and header.skill_hash == "sha256:1" and header.policy_id == "p"
    env.reset(options={"task_id": "t1", "policy_id": "number-expert"})
    env.step("I will look.")  # ends it: a plain answer
    partial = env.trajectory
    failed = Trajectory.failed(
        "TimeoutError: late", env_id="ignored-v0", env_version=9, task_id="ignored", partial=partial, sample_index=1
    )
    assert failed.env_id == "number-finder-v0" and failed.task_id == "t1" and failed.messages == partial.messages
    assert failed.status == "failed" and failed.reward is None and failed.policy_id == "number-expert"
    assert partial.status == "ok" and partial.reward == 0.0, "the partial record itself is not changed"
