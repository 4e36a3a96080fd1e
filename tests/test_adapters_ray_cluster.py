"""Ray scale-out: a rollout joins an existing two-node Ray cluster (``ray_address``, as
``skillgym rollout --ray-address`` / ``RAY_ADDRESS`` pass it), its actors spread over both nodes,
each running its episodes (and their sandboxes) where it lives, and the store is complete, also
after the driver is killed with ``kill -9`` and the same command runs again."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402

from skillgym.rollouts.store import shard_paths  # noqa: E402


def test_a_rollout_on_a_two_node_cluster_killed_with_kill_9_resumes_on_both_nodes_without_loss_or_duplicates(
    tmp_path,
):
    # One cluster for both halves (spread over the nodes, and resume after the driver dies):
    # starting a Ray cluster is most of the cost of either.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    out = tmp_path / "run"
    exe = shutil.which("skillgym")
    cli = [exe] if exe else [sys.executable, "-c", "from skillgym.pipeline.cli import app; app()"]
    argv = [
        *cli,
        "rollout",
        "codebase-explorer-v0",
        "--split",
        "test",
        "--tasks",
        "8",
        "--samples",
        "6",
        "--concurrency",
        "4",
        "--backend",
        "ray",
        "--actors",
        "2",
        "--ray-address",
        cluster.address,
        "--out",
        str(out),
        "--env-arg",
        "backend=local",
        "--json",
    ]

    def lines() -> list[bytes]:
        return [line for shard in shard_paths(out) for line in shard.read_bytes().splitlines(keepends=True)]

    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None and (not out.exists() or len(lines()) < 10):
            time.sleep(0.2)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}"
        os.killpg(proc.pid, signal.SIGKILL)  # the driver dies; Ray reaps the actors it owned
        proc.wait()
        before = len(lines())
        assert 10 <= before < 48
        done = subprocess.run(argv, capture_output=True, text=True, timeout=400)
        assert done.returncode == 0, done.stderr[-2000:]
        assert all(line.endswith(b"\n") for line in lines()), "a torn line survived the resume"
        records = [json.loads(line) for line in lines()]
        keys = [(r["task_id"], r["sample_index"]) for r in records]
        assert len(keys) == len(set(keys)) == 48  # every episode exactly once
        assert all(r["reward"] == 1.0 for r in records)  # the expert, as in-process
        # Which node each episode's worker process lived on, from Ray's own state API (dead
        # actors stay in the table). ray.util.state needs the dashboard, which this cluster
        # leaves out; the GCS table has the same facts.
        ray.init(address=cluster.address)
        actors = [a for a in ray._private.state.actors().values() if a["ActorClassName"].endswith("RolloutActor")]
        node_of_pid = {a["Pid"]: a["Address"]["NodeID"] for a in actors}
        assert len(set(node_of_pid.values())) == 2, "the actors did not spread over both nodes"
        nodes = {node_of_pid[int(r["metadata"]["rollout"]["worker"].rsplit(":", 1)[1])] for r in records}
        assert len(nodes) == 2, "episodes ran on one node only"
    finally:
        ray.shutdown()
        cluster.shutdown()
