"""The node read once: GPUs, MIG instances, profile tables and journal records, taken under the node lock.

Every decision of a hook (plan, what to destroy, what to publish) is made from one ``NodeSnapshot``
rather than from repeated driver reads: the driver is slow (NVML walks every GPU instance of every
profile), and one view keeps the decisions consistent with each other. What a change does to the node
is applied to the snapshot (``with_placed``, ``without``), not read back.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, AbstractSet, Dict, Iterable, List, Mapping, Optional, Tuple

from slurm_gpu.core.geometry import GpuState, NodeState, Slot
from slurm_gpu.core.vocab import InstanceState

if TYPE_CHECKING:
    from slurm_gpu.core.catalog import Catalog, GpuModel
    from slurm_gpu.core.planner import PlannedInstance
    from slurm_gpu.devices.api import Driver, GpuInfo, MigInstance
    from slurm_gpu.state.api import JournalStore
    from slurm_gpu.state.records import JobRecord, Problem

__all__ = ["NodeSnapshot", "read_gpus", "read_snapshot"]


@dataclass(frozen=True)
class NodeSnapshot:
    """What one hook knows of its node. ``gpus``: the GPUs of known MIG-capable models (others are not
    ours to manage); ``models``: each GPU's model with the profile table its driver reports (NVML wins
    over the catalog); ``mig_enabled``: MIG on, or switchable on without a reset (Hopper and newer)."""

    gpus: Tuple[GpuInfo, ...]
    instances: Tuple[MigInstance, ...]
    records: Tuple[JobRecord, ...]
    problems: Tuple[Problem, ...]
    models: Mapping[int, GpuModel]
    mig_enabled: Mapping[int, bool]
    placed: Tuple[PlannedInstance, ...] = ()  # planned here but not yet created (``with_placed``)

    def gpu(self, index: int) -> Optional[GpuInfo]:
        return next((g for g in self.gpus if g.index == index), None)

    def state(self) -> NodeState:
        """The node's occupancy: the driver's instances, plus placements journalled but not yet seen (an
        interrupted or running prolog) and those placed on this snapshot, so nothing is planned on top."""
        slots: Dict[int, Dict[int, Slot]] = {g.index: {} for g in self.gpus}
        for inst in self.instances:
            if inst.gpu_index in slots:
                slots[inst.gpu_index][inst.start] = Slot(inst.start, inst.size, inst.profile_id)
        claims: List[Tuple[int, int, int, int]] = [
            (p.gpu_index, p.start, p.size, p.profile_id) for p in self.placed]
        for rec in self.records:
            claims.extend((i.planned.gpu_index, i.planned.start, i.planned.size, i.planned.profile_id)
                          for i in rec.instances if i.state != InstanceState.RELEASED)
        for gpu_index, start, size, profile_id in claims:
            if gpu_index in slots and start not in slots[gpu_index]:
                slots[gpu_index][start] = Slot(start, size, profile_id)
        return NodeState(tuple(
            GpuState(g.index, self.models[g.index], tuple(slots[g.index].values()),
                     mig_enabled=self.mig_enabled[g.index])
            for g in self.gpus))

    def with_placed(self, planned: Iterable[PlannedInstance]) -> NodeSnapshot:
        """The node once ``planned`` exists (its journal record claims it from now on)."""
        return replace(self, placed=self.placed + tuple(planned))

    def without(self, job_id: str, gone: AbstractSet[Tuple[int, int]], closed: bool) -> NodeSnapshot:
        """The node once the GPU instances ``gone`` (``(gpu_index, gi_id)``) are destroyed and, if
        ``closed``, job ``job_id``'s record is removed."""
        return replace(
            self,
            instances=tuple(i for i in self.instances if (i.gpu_index, i.gi_id) not in gone),
            records=tuple(r for r in self.records if not (closed and r.job_id == job_id)),
        )


def read_snapshot(driver: Driver, journal: JournalStore, catalog: Catalog, enable_mig_mode: bool,
                  profile_cache: Optional[Dict[str, GpuModel]] = None) -> NodeSnapshot:
    """Read the node: one walk of the GPUs, one of the instances, one profile table per GPU model (kept in
    ``profile_cache`` across snapshots of one process), one scan of the journal."""
    gpus, models = read_gpus(driver, catalog, profile_cache)
    enabled = {g.index: bool(g.mig_current)
               or (enable_mig_mode and not models[g.index].mode_change_requires_reset) for g in gpus}
    instances = tuple(driver.instances()) if gpus else ()
    records, problems = journal.scan()
    return NodeSnapshot(gpus, instances, tuple(records), tuple(problems), models, enabled)


def read_gpus(driver: Driver, catalog: Catalog, profile_cache: Optional[Dict[str, GpuModel]] = None
              ) -> Tuple[Tuple[GpuInfo, ...], Dict[int, GpuModel]]:
    """The GPUs of known models and each one's model with its driver's profile table (read once per model
    into ``profile_cache``). Most of it cannot change while the driver stays open (a driver caches names,
    UUIDs, minors), so a first call also readies the node read that follows."""
    cache: Dict[str, GpuModel] = {} if profile_cache is None else profile_cache
    gpus = tuple(g for g in driver.gpus() if g.model is not None)
    models: Dict[int, GpuModel] = {}
    for g in gpus:
        assert g.model is not None
        model = catalog.model(g.model)
        if g.model not in cache:
            offered = driver.read_profiles(g.index)
            if offered or g.mig_current:
                cache[g.model] = model.with_driver_profiles(offered)
            # else a driver that answers the table only in MIG mode: the catalog's stands in until then
        models[g.index] = cache.get(g.model, model)
    return gpus, models
