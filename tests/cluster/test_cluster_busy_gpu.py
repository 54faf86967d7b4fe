"""On a real local cluster: a GPU held by another client (as hwloc/PMIx or DCGM hold /dev/nvidia*) makes
the Prolog's creation fail IN_USE; the job is requeued with a clear reason, no node drains, nothing leaks."""

from __future__ import annotations

import subprocess

import pytest
from test_integration_hooks import (
    _with_outdir,
    assert_clean,
    drained,
    history,
    instances,
    node_dir,
    sjob,
    submit,
    wait_for,
)

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def cl():
    from conftest import running_cluster

    with running_cluster(prefix="sg-test-busy-") as cluster:
        yield _with_outdir(cluster)
        assert_clean(cluster)


def test_held_gpus_requeue_the_job_with_the_reason_and_drain_nothing(cl):
    from slurm_gpu.devices.open import open_driver
    from slurm_gpu.devices.simprocs import hold_gpu, release_gpu

    holder = subprocess.Popen(["sleep", "300"])
    states = [str(node_dir(cl, n) / "gpus.json") for n in cl.nodes]
    try:
        for state in states:
            for g in open_driver("sim", sim_state=state).gpus():
                hold_gpu(state, g.index, holder.pid, "hwloc")
        j = submit(cl, "--gres=gpu:1g.10gb", wrap="true")
        events = wait_for(lambda: [e for n in cl.nodes for e in history(cl, n)
                                   if e.get("job_id") == j and e.get("event") == "requeued"],
                          120, "the job requeued by its prolog")
        assert "in use by another client" in events[0]["reason"], events
        assert "slurm-gpu-requeued:" in sjob(cl, j).admin_comment
        assert drained(cl) == {}
        assert all(not instances(cl, n) for n in cl.nodes)
        cl.run(["scancel", j], check=True)
    finally:
        for state in states:
            for g in open_driver("sim", sim_state=state).gpus():
                release_gpu(state, g.index)
        holder.kill()
        holder.wait()
