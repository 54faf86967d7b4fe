"""Every maximal MIG layout of A100 and H100 can be built through NvmlDriver on the simulator, and
nothing more fits once it is built. The layouts are enumerated here by brute force from the catalog's
placements (independently of the simulator's own checks): 19 with the base profiles, 78 when the
double-memory 1g profile (NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV2) is added."""

from __future__ import annotations

from typing import FrozenSet, List, Set, Tuple

import pynvml
import pytest

from slurm_gpu.core.catalog import load_catalog
from slurm_gpu.core.errors import DriverError
from slurm_gpu.devices.open import open_driver
from slurm_gpu.devices.simstate import init_state, reset_state

Layout = FrozenSet[Tuple[int, int]]  # {(profile_id, start)}


def _fits(model, layout: List[Tuple[object, int, int]], profile, start: int, size: int) -> bool:
    if len(layout) >= model.max_gpu_instances:
        return False
    if sum(1 for p, _, _ in layout if p.profile_id == profile.profile_id) >= profile.max_instances:
        return False
    if any(start < s + z and s < start + size for _, s, z in layout):
        return False
    return sum(p.compute_slices for p, _, _ in layout) + profile.compute_slices <= model.compute_slices_total


def maximal_layouts(model, profiles) -> Set[Layout]:
    items = [(p, s, z) for p in profiles for s, z in p.placements]
    found: Set[Layout] = set()

    def extend(layout, first):
        if not any(_fits(model, layout, *item) for item in items):
            found.add(frozenset((p.profile_id, s) for p, s, _ in layout))
            return
        for k in range(first, len(items)):
            if _fits(model, layout, *items[k]):
                extend(layout + [items[k]], k + 1)

    extend([], 0)
    return found


def profile_sets(model):
    base = [
        p
        for p in model.base_profiles()
        if p.nvml_profile_index != pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV2
    ]
    return {"base": base, "with-double-memory-1g": list(model.base_profiles())}


@pytest.mark.parametrize("model_key", ["A100-40GB", "H100-80GB"])
@pytest.mark.parametrize("which, expected", [("base", 19), ("with-double-memory-1g", 78)])
def test_every_maximal_layout_builds_and_is_full(tmp_path, model_key, which, expected):
    model = load_catalog().model(model_key)
    profiles = profile_sets(model)[which]
    layouts = maximal_layouts(model, profiles)
    assert len(layouts) == expected
    path = str(tmp_path / "sim.json")
    init_state(path, [(model_key, 1)])
    drv = open_driver("sim", path)
    for layout in sorted(layouts, key=sorted):
        reset_state(path)
        for profile_id, start in sorted(layout, key=lambda x: x[1]):
            drv.create(0, profile_id, start)
        built = {(i.profile_id, i.start) for i in drv.instances(0)}
        assert built == set(layout)
        assert all(i.mig_uuid and i.ci_id == 0 for i in drv.instances(0))
        for p in profiles:
            for start, _ in p.placements:
                with pytest.raises(DriverError) as err:
                    drv.create(0, p.profile_id, start)
                assert err.value.nvml_code == pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES, (
                    sorted(layout),
                    p.name,
                    start,
                )
    drv.close()
