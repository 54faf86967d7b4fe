"""The simulated driver and the pure core agree on what fits.

Two independent statements of the MIG rules: the simulated NVML (``slurm_gpu.devices.simnvml``, reached
through the real ``NvmlDriver``) and ``slurm_gpu.core.geometry`` / ``slurm_gpu.core.planner``. Random
create and destroy sequences must get the same verdict from both at every step, and the planner's
capacity of the node the driver reports must be exactly what the driver then accepts, instance by
instance.
"""

from __future__ import annotations

import os
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slurm_gpu.core.catalog import load_catalog
from slurm_gpu.core.errors import DriverError, NoFitError
from slurm_gpu.core.geometry import GpuState, NodeState, Slot
from slurm_gpu.core.planner import capacity, plan
from slurm_gpu.devices import simstate
from slurm_gpu.devices.open import open_driver

CATALOG = load_catalog()
MODELS = ["H100-80GB", "A100-40GB", "A30-24GB"]

# (is_create, gpu, profile pick, start pick / victim pick): picks are reduced modulo what exists
OPS = st.lists(
    st.tuples(st.booleans(), st.integers(0, 1), st.integers(0, 20), st.integers(0, 20)),
    min_size=1,
    max_size=14,
)


def _node(driver, models) -> NodeState:
    """The pure core's view of what the driver reports."""
    slots = {g: [] for g in range(len(models))}
    for inst in driver.instances():
        slots[inst.gpu_index].append(Slot(inst.start, inst.size, inst.profile_id))
    return NodeState(tuple(GpuState(g, models[g], tuple(sorted(slots[g]))) for g in range(len(models))))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model_key=st.sampled_from(MODELS), gpus=st.integers(1, 2), ops=OPS)
def test_driver_and_geometry_agree_on_every_step(model_key, gpus, ops):
    model = CATALOG.model(model_key)
    models = [model] * gpus
    with tempfile.TemporaryDirectory(prefix="sg-agree-") as tmp:
        path = os.path.join(tmp, "gpus.json")
        simstate.init_state(path, [(model_key, gpus)], allow_unprivileged=True)
        driver = open_driver("sim", sim_state=path)
        try:
            for is_create, gpu, pick, where in ops:
                gpu %= gpus
                node = _node(driver, models)
                live = [i for i in driver.instances() if i.gpu_index == gpu]
                if is_create or not live:
                    profile = model.profiles[pick % len(model.profiles)]
                    # a start from the profile's placements, or an odd one the driver must refuse
                    starts = list(profile.placement_starts) + [model.memory_slices_total - 1]
                    start = starts[where % len(starts)]
                    expected = node.gpus[gpu].can_place(profile, start)
                    try:
                        inst = driver.create(gpu, profile.profile_id, start)
                    except DriverError as exc:
                        assert not expected, f"driver refused {profile.name}@{start}: {exc}"
                    else:
                        assert expected, f"driver accepted {profile.name}@{start}: {node.gpus[gpu].slots}"
                        assert (inst.start, inst.size) == (start, dict(profile.placements)[start])
                else:
                    victim = live[where % len(live)]
                    driver.destroy(victim.gpu_index, victim.gi_id)
            _capacity_is_what_the_driver_accepts(driver, models)
        finally:
            driver.close()


def _capacity_is_what_the_driver_accepts(driver, models) -> None:
    """For each profile alone: the planner's count of what still fits, placed one by one through the
    driver, is accepted every time, and then nothing more fits by either account."""
    for profile in models[0].profiles:
        node = _node(driver, models)
        expected = capacity(node)[profile.name]
        made = []
        try:
            for _ in range(expected):
                [p] = plan(_node(driver, models), profile.name, 1)
                made.append(driver.create(p.gpu_index, p.profile_id, p.start))
            node = _node(driver, models)
            assert capacity(node)[profile.name] == 0
            try:
                plan(node, profile.name, 1)
            except NoFitError:
                pass
            else:
                raise AssertionError(f"planner still places {profile.name} after {expected}")
            for g in range(len(models)):
                for start in profile.placement_starts:
                    assert not node.gpus[g].can_place(profile, start), (profile.name, start, node.gpus[g])
                    try:
                        extra = driver.create(g, profile.profile_id, start)
                    except DriverError:
                        continue
                    made.append(extra)
                    raise AssertionError(f"driver accepts {profile.name}@{start} on GPU {g} beyond capacity")
        finally:
            for inst in made:
                driver.destroy(inst.gpu_index, inst.gi_id)
