"""The simulated driver's faults seen on real nodes: another client holding the GPU, latency per call and
per MIG-handle walk, an Ampere mode change that needs an idle GPU."""

from __future__ import annotations

import time

import pytest

from slurm_gpu.core.errors import BadInputError, DriverError
from slurm_gpu.devices import simstate
from slurm_gpu.devices.faults import FaultPlan, parse_faults
from slurm_gpu.devices.open import open_driver
from slurm_gpu.devices.simprocs import hold_gpu, release_gpu, reset_gpu

IN_USE = 19


def sim(tmp_path, model="H100-80GB", mig=True, faults=None):
    state = str(tmp_path / "sim.json")
    simstate.init_state(state, [(model, 2)], mig_enabled=mig)
    return state, open_driver("sim", sim_state=state, sim_faults=faults)


def test_a_holder_makes_creation_fail_in_use_until_it_exits(tmp_path, holder):
    state, drv = sim(tmp_path)
    hold_gpu(state, 0, holder.pid, "hwloc")
    with pytest.raises(DriverError) as err:
        drv.create(0, 19, 0)
    assert err.value.nvml_code == IN_USE and "nvmlDeviceCreateGpuInstanceWithPlacement" in str(err.value)
    assert drv.instances() == []  # nothing half-made
    assert drv.create(1, 19, 0).gpu_index == 1  # the other GPU is not held
    holder.kill()
    holder.wait()
    assert drv.create(0, 19, 0).gpu_index == 0  # a holder that exited is forgotten


def test_release_and_bad_pid(tmp_path, holder):
    state, drv = sim(tmp_path)
    hold_gpu(state, 0, holder.pid)
    assert release_gpu(state, 0, holder.pid) == 1
    drv.create(0, 19, 0)
    with pytest.raises(BadInputError):
        hold_gpu(state, 0, 999999999)


def test_mode_change_needs_no_other_client(tmp_path, holder):
    state, drv = sim(tmp_path, mig=False)
    hold_gpu(state, 0, holder.pid, "dcgm")
    with pytest.raises(DriverError) as err:
        drv.set_mig_mode(0, True)
    assert err.value.nvml_code == IN_USE
    assert drv.set_mig_mode(1, True)[0] is True  # Hopper switches at once when idle


def test_ampere_mode_change_needs_an_idle_gpu_and_a_reset(tmp_path, holder):
    state, drv = sim(tmp_path, model="A100-40GB", mig=False)
    assert drv.set_mig_mode(0, True)[:2] == (False, True)  # pending until the reset
    hold_gpu(state, 0, holder.pid, "monitor")
    with pytest.raises(Exception) as err:
        reset_gpu(state, 0)
    assert "In use" in str(err.value) or "19" in str(err.value)
    release_gpu(state, 0)
    assert reset_gpu(state, 0) == (1, 1)


def test_latency_per_call_and_per_walk(tmp_path):
    _, fast = sim(tmp_path)
    fast.create(0, 19, 0)
    t0 = time.monotonic()
    fast.instances()
    base = time.monotonic() - t0
    slow = open_driver("sim", sim_state=str(tmp_path / "sim.json"), sim_faults="walk=delay:0.2")
    t0 = time.monotonic()
    assert len(slow.instances()) == 1
    assert time.monotonic() - t0 >= 0.2 > base  # at least one walk


def test_every_call_rule_counts_all_functions():
    plan = FaultPlan(parse_faults("*@3=IN_USE;*=delay:0"))
    assert [plan.before_call(f) for f in ("a", "b", "c", "d")] == [None, None, IN_USE, None]
    (rule,) = parse_faults("walk=delay:0.5")
    assert rule.function == "nvmlDeviceGetMaxMigDeviceCount" and rule.delay_s == 0.5
