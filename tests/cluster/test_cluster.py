"""The local cluster against the real Slurm daemons: up, a job on every node, down leaves nothing."""

from __future__ import annotations

import os

import pytest
from conftest import running_cluster

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(scope="module")
def own_cluster():
    with running_cluster(nodes=2, gpus="A30-24GB:2", prefix="sg-test-own-") as cluster:
        yield cluster


def test_nodes_idle_with_generated_gres_and_features(slurm_cluster):
    for node in slurm_cluster.nodes:
        out = slurm_cluster.run(["scontrol", "-o", "show", "node", node], check=True).stdout
        assert "State=IDLE" in out
        assert "Gres=mig:32" in out  # 4 H100 x 8 memory slices
        assert "mig.7g.80gb.4" in out and "mig.7g.80gb.5" not in out


def test_plain_job_runs_on_each_node(slurm_cluster):
    for node in slurm_cluster.nodes:
        proc = slurm_cluster.sbatch("-w", node, wrap="echo $SLURMD_NODENAME")
        assert proc.returncode == 0, proc.stderr
        info = slurm_cluster.wait_job(proc.stdout.strip())
        assert info["JobState"] == "COMPLETED"
        assert info["NodeList"] == node


def test_status_lists_daemons(slurm_cluster):
    from slurm_gpu.testbed import local

    st = local.status(slurm_cluster.spec)
    assert set(st["processes"]) >= {"slurmctld"} | {f"slurmd:{n}" for n in slurm_cluster.nodes}
    assert set(st["nodes"]) == set(slurm_cluster.nodes)


def test_second_cluster_side_by_side_then_down_leaves_no_process(slurm_cluster, own_cluster):
    from slurm_gpu.testbed import local

    assert own_cluster.spec.port_base != slurm_cluster.spec.port_base
    out = own_cluster.run(["scontrol", "-o", "show", "node", own_cluster.nodes[0]], check=True).stdout
    assert "Gres=mig:8" in out  # 2 A30 x 4 slices
    # A running job must be cleaned up by down too.
    proc = own_cluster.sbatch(wrap="sleep 300")
    assert proc.returncode == 0, proc.stderr
    own_cluster.wait_job(proc.stdout.strip(), states=("RUNNING",))
    pids = list(local.processes(own_cluster.spec).values())
    result = local.down(own_cluster.spec)
    assert result["stopped"]
    assert local.processes(own_cluster.spec) == {}
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}/status") or "zombie" in open(f"/proc/{pid}/status").read()
    assert local.down(own_cluster.spec)["stopped"] == []  # idempotent
    # The session cluster is untouched.
    assert all(s == "idle" for s in local.node_states(slurm_cluster.spec).values())
