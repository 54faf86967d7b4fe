"""Static MIG layouts of a test cluster: the same profiles made on every GPU, placed by the planner.

The placements come from ``slurm_gpu.core.planner`` on the occupancy the driver reports, so a static
node is laid out by the same rules and scoring as a dynamic one; the instances are then created in the
layout's order, so GPU-instance ids follow the layout (the first profile gets the lowest free id).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

from slurm_gpu.core.catalog import Catalog, GpuModel, load_catalog
from slurm_gpu.core.errors import BadInputError, NoFitError, UnknownModelError
from slurm_gpu.core.geometry import GpuState, NodeState, Slot
from slurm_gpu.core.planner import PlannedInstance, plan_request
from slurm_gpu.core.requests import GresRequest
from slurm_gpu.devices.api import Driver, GpuInfo, MigInstance

__all__ = ["layout_profiles", "gpu_state", "plan_layout", "apply_layout"]


def layout_profiles(layout: str) -> List[str]:
    """The profile names of a comma-separated layout, in order (``"3g.40gb, 1g.10gb"``)."""
    return [x.strip() for x in layout.split(",") if x.strip()]


def _model(driver: Driver, gpu: GpuInfo, catalog: Catalog) -> GpuModel:
    """The GPU's model with the profile table its driver reports (NVML wins over the catalog file)."""
    if gpu.model is None:
        raise UnknownModelError(f"GPU {gpu.index} ({gpu.name}, {gpu.pci_device_id}) is not in the catalog",
                                part=gpu.name)
    model = catalog.model(gpu.model)
    offered = driver.read_profiles(gpu.index) if gpu.mig_current else []
    return model.with_driver_profiles(offered) if offered else model


def gpu_state(driver: Driver, gpu: GpuInfo, model: GpuModel) -> GpuState:
    """The planner's view of one GPU: the instances the driver reports, and whether MIG is on."""
    # one slot per GPU instance: a GI with several compute instances is listed once per CI
    slots = {i.start: Slot(i.start, i.size, i.profile_id) for i in driver.instances(gpu.index)}
    return GpuState(gpu.index, model, tuple(slots.values()), mig_enabled=gpu.mig_current)


def plan_layout(gpu: GpuState, names: Sequence[str]) -> List[PlannedInstance]:
    """Placements of every profile of ``names`` on ``gpu``, returned in the order of ``names``.

    Raises UnknownProfileError for a name the model lacks and BadInputError when they do not all fit.
    """
    profiles = [gpu.model.profile(name) for name in names]
    requests = [GresRequest("gpu", p.name, 1, None, p.name) for p in profiles]
    try:
        planned = list(plan_request(NodeState((gpu,)), requests))
    except NoFitError as exc:
        raise BadInputError(f"layout {','.join(names)!r} does not fit on GPU {gpu.index} ({gpu.model.key}): "
                            f"{exc}", part=",".join(names)) from exc
    # The planner returns the largest profiles first; hand them back in the layout's order.
    by_profile: Dict[int, List[PlannedInstance]] = {}
    for inst in planned:
        by_profile.setdefault(inst.profile_id, []).append(inst)
    return [by_profile[p.profile_id].pop(0) for p in profiles]


def apply_layout(driver: Driver, layout: str, catalog: Optional[Catalog] = None) -> List[MigInstance]:
    """Create the profiles of ``layout`` (comma list) on every GPU through the driver, as planned."""
    catalog = catalog or load_catalog()
    names = layout_profiles(layout)
    made = []
    for gpu in driver.gpus():
        state = gpu_state(driver, gpu, _model(driver, gpu, catalog))
        for planned in plan_layout(state, names):
            made.append(driver.create(gpu.index, planned.profile_id, planned.start))
    return made
