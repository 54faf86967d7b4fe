"""On a real local cluster, what real nodes do to the Prolog: a GPU held by another client (as hwloc/PMIx
or DCGM hold /dev/nvidia*) makes creation fail IN_USE; a loaded driver answers slowly and walks its MIG
handles slowly; an Ampere GPU out of MIG mode needs a reset no hook may do. Each job gets a clear
outcome, no node drains, nothing leaks."""

from __future__ import annotations

import subprocess

import pytest
from test_integration_hooks import (
    _with_outdir,
    assert_clean,
    assert_nothing_drained,
    history,
    instances,
    node_dir,
    output,
    set_sim_faults,
    sjob,
    submit,
    wait,
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
        assert_nothing_drained(cl)
        assert all(not instances(cl, n) for n in cl.nodes)
        cl.run(["scancel", j], check=True)
    finally:
        for state in states:
            for g in open_driver("sim", sim_state=state).gpus():
                release_gpu(state, g.index)
        holder.kill()
        holder.wait()


def test_a_slow_driver_and_slow_handle_walks_still_give_each_job_its_instances(cl):
    # 50 ms on every NVML call, 1 s on every walk of a GPU's MIG handles: a driver under load.
    set_sim_faults(cl, "*=delay:0.05;walk=delay:1")
    try:
        jobs = [submit(cl, "--gres=gpu:1g.10gb:2", wrap="echo $CUDA_VISIBLE_DEVICES $SLURM_GPU_MIG_DEVICES")
                for _ in range(2)]
        done = wait(cl, jobs, timeout=240)
    finally:
        set_sim_faults(cl, None)
    for j in jobs:
        assert done[j]["JobState"] == "COMPLETED", done[j]
        visible, mine = output(cl, j).split()
        assert visible.startswith("MIG-") and len(mine.split(",")) == 2
    assert_nothing_drained(cl)
    assert_clean(cl)


@pytest.fixture(scope="module")
def ampere():
    from conftest import running_cluster

    with running_cluster(prefix="sg-test-ampere-", nodes=1, gpus="A100-40GB:2") as cluster:
        yield _with_outdir(cluster)
        assert_clean(cluster)


def test_an_ampere_gpu_out_of_mig_mode_is_named_and_never_switched_by_a_hook(ampere):
    from slurm_gpu.devices.simstate import locked_state

    (node,) = ampere.nodes
    state = str(node_dir(ampere, node) / "gpus.json")
    with locked_state(state) as body:  # an admin turned MIG off behind the agent's back
        for gpu in body["gpus"]:
            gpu["mig_current"] = gpu["mig_pending"] = 0
    j = submit(ampere, "--gres=gpu:1g.5gb", wrap="true")
    events = wait_for(lambda: [e for e in history(ampere, node)
                               if e.get("job_id") == j and e.get("event") == "requeued"],
                      120, "the job requeued by its prolog")
    assert "needs a GPU reset" in events[0]["detail"], events
    assert_nothing_drained(ampere)
    with locked_state(state) as body:
        assert all(g["mig_current"] == 0 for g in body["gpus"])  # the hook switched nothing
    ampere.run(["scancel", j], check=True)
