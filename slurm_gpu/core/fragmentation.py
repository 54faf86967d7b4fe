"""How fragmented one MIG GPU is: free memory slices, those no profile can use, the largest placeable one.

A GPU's free slices are not all alike: on an H100 with seven 1g.10gb instances, slice 7 is free but no
profile starts there, and two free 2-slice holes cannot host a 3g.40gb. ``fragmentation(gpu)`` says so in
numbers a monitor can plot. Pure: geometry only, no I/O.

>>> from slurm_gpu.core.catalog import load_catalog
>>> from slurm_gpu.core.geometry import GpuState
>>> h100 = load_catalog().model("H100-80GB")
>>> gpu = GpuState(0, h100)
>>> for start in range(7):
...     gpu = gpu.place("1g.10gb", start)
>>> f = fragmentation(gpu)
>>> f.free_slices, f.stranded_slices, f.largest_profile, f.largest_slices, f.ratio
(1, 1, '', 0, 1.0)
>>> fragmentation(GpuState(0, h100)).largest_profile
'7g.80gb'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

from slurm_gpu.core.catalog import GpuModel
from slurm_gpu.core.geometry import GpuState, Slot

__all__ = ["Fragmentation", "fragmentation", "spare_compute"]


@dataclass(frozen=True)
class Fragmentation:
    """``free_slices``: memory slices no instance holds; ``stranded_slices``: free slices that no
    placeable profile covers right now; ``largest_profile``/``largest_slices``: the placeable profile with
    the most memory slices ('' and 0 when none fits); ``ratio``: 1 - largest/free (0 on a full or empty GPU
    whose free space is one usable block, 1 when free slices exist but nothing fits)."""

    total_slices: int
    free_slices: int
    stranded_slices: int
    largest_profile: str
    largest_slices: int

    @property
    def ratio(self) -> float:
        if self.free_slices == 0:
            return 0.0
        return 1.0 - self.largest_slices / self.free_slices


def fragmentation(gpu: GpuState) -> Fragmentation:
    """The fragmentation of ``gpu`` (a GPU not in MIG mode counts every slice as free but stranded)."""
    total = gpu.model.memory_slices_total
    used = gpu.used_mask
    free = sum(1 for s in range(total) if not used >> s & 1)
    usable = 0
    best = ("", 0, 0)  # (name, memory slices, compute slices): the largest placeable profile
    if gpu.mig_enabled:
        for profile in gpu.model.profiles:
            starts = set(gpu.free_starts(profile))
            if not starts:
                continue
            for start, size in profile.placements:
                if start in starts:
                    usable |= ((1 << size) - 1) << start
            key = (profile.memory_slices, profile.compute_slices)
            if key > best[1:] or (key == best[1:] and profile.name < best[0]):
                best = (profile.name, profile.memory_slices, profile.compute_slices)
    stranded = sum(1 for s in range(total) if not used >> s & 1 and not usable >> s & 1)
    return Fragmentation(total, free, stranded, best[0], best[1])


Slots = Tuple[Tuple[int, int, int], ...]  # (start, size, profile_id), sorted: the planner's plain slots
_spare: Dict[Tuple[str, Slots], int] = {}
_SPARE_LIMIT = 1 << 16


def spare_compute(model: GpuModel, slots: Slots) -> int:
    """The most compute slices further instances could take on one MIG GPU holding ``slots``: an exact
    search over every free placement of every profile, by the rules of ``slurm_gpu.core.geometry``,
    memoised per state. Free compute slices beyond it are *stranded*: no instance can use them while the
    present ones stay (two 3g.40gb on an H100 strand its 7th compute slice).

    >>> from slurm_gpu.core.catalog import load_catalog
    >>> h100 = load_catalog().model("H100-80GB")
    >>> g3 = h100.profile("3g.40gb")
    >>> spare_compute(h100, ()), spare_compute(h100, ((0, 4, g3.profile_id), (4, 4, g3.profile_id)))
    (7, 0)
    """
    key = (model.key, tuple(sorted(slots)))
    found = _spare.get(key)
    if found is None:
        gpu = GpuState(0, model, slots=tuple(Slot(s, z, pid) for s, z, pid in key[1]))
        free = model.compute_slices_total - sum(model.profile_by_id(pid).compute_slices for *_, pid in key[1])
        found = 0
        for p in model.profiles:
            for start in gpu.free_starts(p):
                if found == free:
                    break  # every free compute slice is usable: nothing can do better
                after = key[1] + ((start, p.memory_slices, p.profile_id),)
                found = max(found, p.compute_slices + spare_compute(model, after))
        if len(_spare) >= _SPARE_LIMIT:
            _spare.clear()
        _spare[key] = found
    return found
