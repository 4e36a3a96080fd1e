"""The rollout engine and trajectory store: backends agree, kill -9 resumes exactly, failures
are recorded without stopping the run, and a run directory refuses another config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_rollouts_support import ENTRY, TESTS_DIR

from skillgym.rollouts import (
    ManifestMismatch,
    RolloutConfig,
    StoreError,
    TrajectoryStore,
    iter_trajectories,
    run_rollouts,
)
from skillgym.rollouts.store import repair_torn_tail, shard_paths


def _config(out: Path, **overrides) -> RolloutConfig:
    fields = dict(
        env=ENTRY, env_kwargs={"backend": "local"}, n_tasks=10, samples=1, concurrency=4, out=out, retry_backoff_s=0.0
    )
    fields.update(overrides)
    return RolloutConfig(**fields)


def _explorer_available() -> bool:
    try:
        import skillgym

        env = skillgym.make("codebase-explorer-v0", backend="local")
    except Exception:
        return False
    try:
        return env.env_spec.expert is not None
    finally:
        env.close()


def _records(out: Path) -> dict[tuple[str, int], dict]:
    lines = [line for shard in shard_paths(out) for line in shard.read_bytes().splitlines(keepends=True)]
    assert all(line.endswith(b"\n") for line in lines), "a torn line survived"
    records = [json.loads(line) for line in lines]
    keys = [(r["task_id"], r["sample_index"]) for r in records]
    assert len(keys) == len(set(keys)), "duplicate records"
    return dict(zip(keys, records))


def test_local_and_ray_backends_give_the_same_rewards(tmp_path):
    env = "codebase-explorer-v0" if _explorer_available() else ENTRY
    common = dict(env=env, n_tasks=12, samples=1, concurrency=4, seed=7)
    local = run_rollouts(_config(tmp_path / "local", **common))
    ray = run_rollouts(_config(tmp_path / "ray", backend="ray", num_actors=2, **common))
    assert local.records == ray.records == 12 and local.failed_records == ray.failed_records == 0
    assert local.rewards_by_task == ray.rewards_by_task and len(local.rewards_by_task) == 12
    a, b = _records(tmp_path / "local"), _records(tmp_path / "ray")
    assert a.keys() == b.keys()
    for key in a:  # deterministic expert: the same conversation, the same seed, the same grade
        assert a[key]["messages"] == b[key]["messages"]
        assert (a[key]["seed"], a[key]["reward"]) == (b[key]["seed"], b[key]["reward"])
    workers = {r["metadata"]["rollout"]["worker"] for r in b.values()}
    assert len(workers) == 2 and all(str(os.getpid()) not in w for w in workers), "ray episodes ran in the actors"


def test_kill_9_midway_then_resume_gives_exactly_every_record_once(tmp_path):
    out = tmp_path / "run"
    argv = [
        sys.executable,
        "-m",
        "skillgym.rollouts",
        "rollout",
        ENTRY,
        "--tasks",
        "10",
        "--samples",
        "20",
        "--concurrency",
        "4",
        "--out",
        str(out),
        "--env-arg",
        "backend=local",
        "--json",
    ]
    env = {**os.environ, "PYTHONPATH": TESTS_DIR + os.pathsep + os.environ.get("PYTHONPATH", "")}
    # Own session: kill -9 takes the run and its sandboxes' processes, as a crash would.
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if sum(len(s.read_bytes().splitlines()) for s in shard_paths(out)) >= 20:
            break
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _records(out)
    assert 20 <= len(before) < 200, f"the kill came too late to test anything ({len(before)} records)"
    # A crash in the middle of a write leaves half a record: the resume must not choke on it.
    with shard_paths(out)[-1].open("ab") as fh:
        fh.write(b'{"env_id": "number-finder-v0", "task_id": "t1", "sample_ind')

    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    after = _records(out)
    assert len(after) == 200 and summary["records"] == 200
    assert summary["already_done"] == len(before) and summary["completed"] == 200 - len(before)
    assert all(after[k] == v for k, v in before.items()), "a record written before the kill changed"
    assert {r["status"] for r in after.values()} == {"ok"}


def test_failing_policy_is_recorded_and_the_run_finishes(tmp_path):
    config = _config(tmp_path / "run", n_tasks=6, env_kwargs={"backend": "local", "expert": "flaky"}, max_attempts=2)
    summary = run_rollouts(config)
    records = {t.task_id: t for t in iter_trajectories(config.out)}
    assert summary.records == 6 and summary.failed == summary.failed_records == 1
    failed = records["t5"]
    assert failed.status == "failed" and "scripted policy failure on t5" in failed.error
    assert failed.metadata["rollout"]["attempts"] == 2 and failed.reward is None
    assert failed.messages[:2] and failed.messages[1]["role"] == "user", "the partial episode is kept"
    retried = records["t6"]  # failed once, then succeeded: one record, the good one
    assert retried.status == "ok" and retried.reward == 1.0 and retried.metadata["rollout"]["attempts"] == 2
    assert summary.retries >= 2 and "RuntimeError: scripted policy failure on t5" in summary.errors[0]
    # Failed records are final: re-running does not try them again (or duplicate them).
    again = run_rollouts(config)
    assert again.completed == again.failed == 0 and len(list(iter_trajectories(config.out))) == 6


def test_episode_timeout_is_a_failed_record(tmp_path):
    config = _config(
        tmp_path / "run",
        n_tasks=2,
        env_kwargs={"backend": "local", "expert": "slow"},
        episode_timeout_s=0.3,
        max_attempts=1,
    )
    summary = run_rollouts(config)
    assert summary.failed == 2
    for trajectory in iter_trajectories(config.out):
        assert trajectory.status == "failed" and trajectory.error.startswith("TimeoutError")


def test_blocking_env_work_does_not_stall_other_episodes(tmp_path):
    # Each episode's tool call blocks 0.4 s in the sandbox; 8 at once must overlap.
    config = _config(tmp_path / "run", n_tasks=8, concurrency=8, env_kwargs={"backend": "local", "expert": "slow"})
    summary = run_rollouts(config)
    assert summary.completed == 8
    assert summary.wall_s < 2.0, f"8 episodes of 0.4 s blocking work took {summary.wall_s} s: they ran one by one"


def test_resuming_with_another_config_is_refused(tmp_path):
    out = tmp_path / "run"
    run_rollouts(_config(out, n_tasks=2))
    for change in (
        {"policy": "random:1"},
        {"samples": 2},
        {"seed": 1},
        {"env_kwargs": {"backend": "local", "expert": "flaky"}},
    ):
        with pytest.raises(ManifestMismatch, match="pass --force"):
            run_rollouts(_config(out, n_tasks=2, **change))
    # Speed settings are not part of a run's identity.
    assert run_rollouts(_config(out, n_tasks=2, concurrency=1)).already_done == 2
    forced = run_rollouts(_config(out, n_tasks=2, samples=2), force=True)
    assert forced.records == 4 and forced.already_done == 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["identity"]["samples"] == 2 and manifest["history"][0]["identity"]["samples"] == 1
    assert manifest["env_id"] == "number-finder-v0" and manifest["packages"]["skillgym"]


def test_manifest_records_what_produced_the_run(tmp_path):
    out = tmp_path / "run"
    run_rollouts(_config(out, n_tasks=2, policy="random:3"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["policy"] == "random:3" and manifest["policy_config"]["seed"] == 3
    assert manifest["skill_hash"].startswith("sha256:") and manifest["task_ids"] == ["t1", "t2"]
    assert {"torch", "transformers", "trl"} <= set(manifest["packages"]) and "git_revision" in manifest
    assert not list(out.glob(".*.tmp")), "no temp file left behind"


def test_store_repairs_a_torn_tail_and_admits_one_writer(tmp_path):
    shard = tmp_path / "trajectories" / "shard-00000.jsonl"
    shard.parent.mkdir(parents=True)
    shard.write_bytes(b'{"task_id": "a", "sample_index": 0, "env_id": "x-v0", "env_version": 0}\n{"task_id": "b", "sam')
    assert repair_torn_tail(shard) == len(b'{"task_id": "b", "sam')
    with TrajectoryStore(tmp_path) as store:
        assert ("a", 0) in store and len(store) == 1
        with pytest.raises(StoreError, match="another process"):
            TrajectoryStore(tmp_path).open()
    with TrajectoryStore(tmp_path) as store:  # the lock is released on close
        assert len(store) == 1


def test_openai_policy_over_loopback_http_matches_the_in_process_expert(tmp_path):
    from test_rollouts_support import make_number_env

    from skillgym.testing.openai_server import ReplayResponder, ScriptedOpenAIServer

    env = make_number_env()
    with ScriptedOpenAIServer(ReplayResponder.for_env(env, mode="structured"), delay_s=0.01) as server:
        remote = run_rollouts(_config(tmp_path / "http", policy=f"openai:expert@{server.base_url}", concurrency=8))
        assert server.max_in_flight > 1, "episodes were not concurrent"
    env.close()
    local = run_rollouts(_config(tmp_path / "expert"))
    assert local.records == 10 and local.failed_records == 0
    assert remote.records == 10 and remote.failed_records == 0 and remote.tokens > 0
    a, b = _records(tmp_path / "http"), _records(tmp_path / "expert")
    for key in a:
        assert a[key]["messages"] == b[key]["messages"] and a[key]["reward"] == b[key]["reward"] == 1.0
    assert {r["policy_id"] for r in a.values()} == {"openai:expert"}


def test_worker_warms_slots_and_their_policies():
    import asyncio

    from test_rollouts_support import WARMED

    from skillgym.rollouts.config import EnvRef
    from skillgym.rollouts.worker import EpisodeWorker

    async def warm() -> int:
        worker = EpisodeWorker(EnvRef(env=ENTRY, env_kwargs={"backend": "local", "expert": "warm"}), "expert", size=3)
        try:
            return await worker.warm()
        finally:
            await worker.aclose()

    WARMED.clear()
    assert asyncio.run(warm()) == 3
    assert WARMED == [3, 3, 3], "each slot's policy is warmed once, told how many slots there are"
