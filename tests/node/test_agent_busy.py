"""The agent on what admins hit on real nodes: another client holding the GPU (IN_USE at create or at a
mode change), a slow driver, an Ampere GPU whose mode change needs an idle GPU and a reset.

Every case ends with a clear outcome for the job, no drain, and nothing left on the GPU or in the journal.
"""

from __future__ import annotations

import os
import threading

import pytest
from fakes import FakeSlurm

from slurm_gpu.devices import simstate
from slurm_gpu.devices.open import open_driver
from slurm_gpu.devices.simprocs import hold_gpu, release_gpu
from slurm_gpu.node.agent import NodeAgent
from slurm_gpu.node.context import AgentPolicy, JobContext
from slurm_gpu.state.journal import Journal


def make(tmp_path, models=(("H100-80GB", 1),), mig=True, faults=None, wait_s=0.3):
    state = str(tmp_path / "sim.json")
    simstate.init_state(state, list(models), mig_enabled=mig, sandbox=str(tmp_path / "sb"))
    agent = NodeAgent("n1", open_driver("sim", sim_state=state, sim_faults=faults),
                      Journal(str(tmp_path / "state"), boot_id="b"), FakeSlurm("n1"),
                      AgentPolicy(admission="features",
                                  release_wait_s=0.3, release_poll_s=0.05, create_busy_wait_s=wait_s,
                                  create_busy_poll_s=0.05, caps_dir=str(tmp_path / "sb/dev/nvidia-caps"),
                                  cgroup_root=None))
    agent.state_path = state
    return agent


def ctx(job_id):
    return JobContext(str(job_id), os.getuid(), os.getgid())


def assert_clean(agent, job_id):
    assert agent.driver.instances() == []
    assert agent.journal.get(str(job_id)) is None
    assert [c for c in agent.slurm.calls if c[0] == "drain"] == []


def test_gpu_held_by_another_client_requeues_with_a_clear_reason(tmp_path, holder):
    agent = make(tmp_path)
    hold_gpu(agent.state_path, 0, holder.pid, "hwloc")
    agent.slurm.add(30, "1g.10gb", 1, slices=1)
    out = agent.prepare(ctx(30))
    assert out.action == "requeued"
    (call,) = [c for c in agent.slurm.calls if c[0] == "requeue"]
    assert "in use by another client" in call[2] and "HWLOC_COMPONENTS=-opencl" in call[2]
    assert_clean(agent, 30)
    # the features still say what fits: the held GPU is not counted out of service
    assert "mig.1g.10gb.7" in agent.publish_features()


def test_a_brief_hold_is_waited_out(tmp_path, holder):
    agent = make(tmp_path, wait_s=5.0)
    hold_gpu(agent.state_path, 0, holder.pid, "monitor")
    threading.Timer(0.4, release_gpu, (agent.state_path, 0)).start()
    agent.slurm.add(31, "3g.40gb", 1, slices=4)
    out = agent.prepare(ctx(31))
    assert out.action == "created", out
    assert [c for c in agent.slurm.calls if c[0] in ("requeue", "drain")] == []


def test_mode_change_refused_by_a_holder_requeues_without_drain(tmp_path, holder):
    agent = make(tmp_path, mig=False)
    hold_gpu(agent.state_path, 0, holder.pid, "dcgm")
    agent.slurm.add(32, "1g.10gb", 1, slices=1)
    out = agent.prepare(ctx(32))
    assert out.action == "requeued"
    assert "cannot enable MIG mode" in out.message and "in use by another client" in out.message
    assert_clean(agent, 32)
    assert not agent.driver.gpus()[0].mig_current


def test_ampere_off_needs_an_admin_and_says_how(tmp_path):
    agent = make(tmp_path, models=(("A100-40GB", 1),), mig=False)
    agent.slurm.add(33, "1g.5gb", 1, slices=1)
    out = agent.prepare(ctx(33))
    assert out.action == "requeued" and "needs a GPU reset" in out.message
    assert_clean(agent, 33)
    assert agent.driver.gpus()[0].mig_pending is False  # a hook never asks for the mode


@pytest.mark.parametrize("faults", ["*=delay:0.01", "walk=delay:0.3",
                                    "nvmlDeviceCreateGpuInstanceWithPlacement=delay:0.5"])
def test_a_slow_driver_only_delays_the_job(tmp_path, faults):
    agent = make(tmp_path, faults=faults)
    agent.slurm.add(34, "2g.20gb", 1, slices=2)
    out = agent.prepare(ctx(34))
    assert out.action == "created", out
    assert agent.release(ctx(34)).action == "released"
    assert_clean(agent, 34)
