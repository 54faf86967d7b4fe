"""Occupancy of MIG GPUs as placements, and the rules that say which placement is valid.

A GPU's memory is cut into ``memory_slices_total`` slices (8 on A100/H100/H200/B200, 4 on A30, 12 on
RTX PRO 6000). A GPU instance of a profile occupies ``[start, start + size)`` where ``(start, size)``
is one of the profile's placements (NVML ``nvmlGpuInstancePlacement_t``). Placing one is valid when:

1. MIG mode is enabled on the GPU;
2. ``start`` is one of the profile's placements;
3. ``[start, start + size)`` overlaps no occupied slot;
4. fewer than ``max_instances`` instances of that profile exist on the GPU;
5. the compute slices of all instances stay within ``compute_slices_total``;
6. the number of GPU instances stays within ``max_gpu_instances``;
7. a ``+me.all`` instance (all media engines) shares the GPU only with ``-me`` instances (no media
   engine), both ways (RTX PRO 6000).

Values are immutable; ``place`` and ``remove`` return new states.

>>> from slurm_gpu.core.catalog import load_catalog
>>> h100 = load_catalog().model("H100-80GB")
>>> gpu = GpuState(0, h100).place(h100.profile("4g.40gb"), 0)
>>> gpu.free_starts(h100.profile("3g.40gb"))
(4,)
>>> gpu.free_starts(h100.profile("1g.10gb"))
(4, 5, 6)
>>> gpu.place(h100.profile("3g.40gb"), 4).free_starts(h100.profile("1g.10gb"))
()
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Iterable, Optional, Tuple, Union

from slurm_gpu.core.errors import BadInputError, NoFitError

if TYPE_CHECKING:  # pragma: no cover
    from slurm_gpu.core.catalog import GpuModel, Profile

__all__ = ["Slot", "GpuState", "NodeState", "ME_ALL", "NO_ME"]

ME_ALL = "+me.all"  # the instance takes every media engine of the GPU
NO_ME = "-me"  # the instance has no media engine, so it may share a GPU with a +me.all one


@dataclass(frozen=True, order=True)
class Slot:
    """An occupied placement: a GPU instance of ``profile_id`` at ``[start, start + size)``."""

    start: int
    size: int
    profile_id: int

    @property
    def mask(self) -> int:
        """The occupied memory slices as a bit mask (bit i = slice i)."""
        return ((1 << self.size) - 1) << self.start


def _mask(start: int, size: int) -> int:
    return ((1 << size) - 1) << start


@dataclass(frozen=True)
class GpuState:
    """One GPU: its model, its occupied slots (sorted by start) and whether MIG mode is on.

    The constructor checks the slots against the model (known profile ids, within the GPU, no
    overlap) and raises :class:`BadInputError` otherwise; per-profile limits are checked by
    :meth:`place` only, so a state read from a driver is always representable.
    """

    index: int
    model: GpuModel
    slots: Tuple[Slot, ...] = ()
    mig_enabled: bool = True
    _used_mask: int = field(default=0, init=False, repr=False, compare=False)
    _used_compute: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        slots = tuple(sorted(self.slots))
        object.__setattr__(self, "slots", slots)
        used = 0
        compute = 0
        total = self.model.memory_slices_total
        for slot in slots:
            profile = self.model.profile_by_id(slot.profile_id)
            if slot.size != profile.memory_slices or slot.start < 0 or slot.start + slot.size > total:
                raise BadInputError(
                    f"GPU {self.index}: slot {slot} does not fit {self.model.key} "
                    f"({profile.name} has {profile.memory_slices} slices of {total})",
                    part=str(slot.start),
                )
            if used & slot.mask:
                raise BadInputError(f"GPU {self.index}: slot {slot} overlaps another", part=str(slot.start))
            used |= slot.mask
            compute += profile.compute_slices
        object.__setattr__(self, "_used_mask", used)
        object.__setattr__(self, "_used_compute", compute)

    # -- queries -------------------------------------------------------------------------------
    @property
    def used_mask(self) -> int:
        """Occupied memory slices as a bit mask."""
        return self._used_mask

    @property
    def used_compute_slices(self) -> int:
        return self._used_compute

    @property
    def is_empty(self) -> bool:
        return not self.slots

    def count(self, profile: Union[Profile, str]) -> int:
        """Instances of ``profile`` on this GPU."""
        pid = self._profile(profile).profile_id
        return sum(1 for s in self.slots if s.profile_id == pid)

    def slot_at(self, start: int) -> Optional[Slot]:
        for slot in self.slots:
            if slot.start == start:
                return slot
        return None

    def why_not(self, profile: Union[Profile, str], start: int) -> Optional[str]:
        """Why ``profile`` cannot be placed at ``start`` now, or None when it can."""
        p = self._profile(profile)
        if not self.mig_enabled:
            return "MIG mode is disabled"
        size = _placement_size(p, start)
        if size is None:
            return f"{start} is not a placement of {p.name} (placements: {p.placement_starts})"
        if self._used_mask & _mask(start, size):
            return f"slices {start}-{start + size - 1} are occupied"
        pid = p.profile_id
        if sum(1 for s in self.slots if s.profile_id == pid) >= p.max_instances:
            return f"{p.name} already has its maximum of {p.max_instances} instances"
        if self._used_compute + p.compute_slices > self.model.compute_slices_total:
            return f"only {self.model.compute_slices_total - self._used_compute} compute slices are free"
        if len(self.slots) >= self.model.max_gpu_instances:
            return f"the GPU already has its maximum of {self.model.max_gpu_instances} GPU instances"
        if p.variant == ME_ALL:
            if any(self.model.profile_by_id(s.profile_id).variant != NO_ME for s in self.slots):
                return f"{p.name} takes all media engines and may share the GPU only with -me instances"
        elif p.variant != NO_ME:
            if any(self.model.profile_by_id(s.profile_id).variant == ME_ALL for s in self.slots):
                return f"a {ME_ALL} instance holds all media engines; only -me profiles may join it"
        return None

    def can_place(self, profile: Union[Profile, str], start: int) -> bool:
        return self.why_not(profile, start) is None

    def free_starts(self, profile: Union[Profile, str]) -> Tuple[int, ...]:
        """The starts at which ``profile`` can be placed now, ascending."""
        p = self._profile(profile)
        return tuple(start for start, _ in p.placements if self.why_not(p, start) is None)

    # -- changes -------------------------------------------------------------------------------
    def place(self, profile: Union[Profile, str], start: int) -> GpuState:
        """A new state with ``profile`` at ``start``; :class:`NoFitError` when that is not valid now
        (:class:`BadInputError` when ``start`` is no placement of the profile at all)."""
        p = self._profile(profile)
        reason = self.why_not(p, start)
        if reason is not None:
            if _placement_size(p, start) is None and self.mig_enabled:
                raise BadInputError(f"GPU {self.index}: {reason}", part=str(start))
            raise NoFitError(
                f"GPU {self.index} ({self.model.key}): cannot place {p.name} at {start}: {reason}"
            )
        return replace(self, slots=self.slots + (Slot(start, p.memory_slices, p.profile_id),))

    def remove(self, start: int) -> GpuState:
        """A new state without the instance that starts at ``start`` (:class:`BadInputError` if none)."""
        if self.slot_at(start) is None:
            raise BadInputError(f"GPU {self.index}: no GPU instance starts at slice {start}", part=str(start))
        return replace(self, slots=tuple(s for s in self.slots if s.start != start))

    def with_mig(self, enabled: bool) -> GpuState:
        return replace(self, mig_enabled=enabled)

    def _profile(self, profile: Union[Profile, str]) -> Profile:
        if isinstance(profile, str):
            return self.model.profile(profile)
        if not self.model.has_profile(profile.name) or self.model.profile(profile.name) != profile:
            raise BadInputError(
                f"profile {profile.name} (id {profile.profile_id}) is not a profile of {self.model.key}",
                part=profile.name,
            )
        return profile


def _placement_size(profile: Profile, start: int) -> Optional[int]:
    for s, size in profile.placements:
        if s == start:
            return size
    return None


@dataclass(frozen=True)
class NodeState:
    """All MIG GPUs of one node, in index order.

    >>> from slurm_gpu.core.catalog import load_catalog
    >>> node = NodeState.empty(load_catalog().model("A30-24GB"), 2)
    >>> node.place(1, "2g.12gb", 2).gpu(1).slots
    (Slot(start=2, size=2, profile_id=5),)
    """

    gpus: Tuple[GpuState, ...]

    def __post_init__(self) -> None:
        gpus = tuple(sorted(self.gpus, key=lambda g: g.index))
        indices = [g.index for g in gpus]
        if len(set(indices)) != len(indices):
            raise BadInputError(f"duplicate GPU index in {indices}", part=str(indices))
        object.__setattr__(self, "gpus", gpus)

    @classmethod
    def empty(cls, model: GpuModel, count: int) -> NodeState:
        """``count`` GPUs of ``model``, MIG on, no instances."""
        return cls(tuple(GpuState(i, model) for i in range(count)))

    @classmethod
    def of(cls, gpus: Iterable[GpuState]) -> NodeState:
        return cls(tuple(gpus))

    def gpu(self, index: int) -> GpuState:
        for g in self.gpus:
            if g.index == index:
                return g
        raise BadInputError(f"no GPU with index {index} on this node", part=str(index))

    def with_gpu(self, gpu: GpuState) -> NodeState:
        """A new node state with ``gpu`` replacing the GPU of the same index."""
        self.gpu(gpu.index)
        return NodeState(tuple(gpu if g.index == gpu.index else g for g in self.gpus))

    def place(self, gpu_index: int, profile: Union[Profile, str], start: int) -> NodeState:
        return self.with_gpu(self.gpu(gpu_index).place(profile, start))

    def remove(self, gpu_index: int, start: int) -> NodeState:
        return self.with_gpu(self.gpu(gpu_index).remove(start))
