"""A GPU model as the simulator sees it: request keys, and the planner's answers on plain slot tuples.

A GPU's occupancy is a sorted tuple of ``(start, size, profile_id)`` slots (the fields of
``slurm_gpu.core.geometry.Slot``, what ``slurm_gpu.core.slotplan.plan_slots`` takes). The MIG rules are not
stated here: capacity and placement come from ``slurm_gpu.core.planner`` (the node agent's code), so the
replay places exactly as the agent would. This module only maps request keys to profiles, memoises the
planner's capacity per GPU state and keeps the books of placed slots.

Requests are *keys* shared by the whole cluster (a profile name such as ``3g.40gb``, or ``gpu`` for a whole
GPU); each model maps a key to its own profile, so mixed clusters need no special case.
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Sequence, Tuple

from slurm_gpu.core import planner, slotplan
from slurm_gpu.core.catalog import GpuModel, Profile
from slurm_gpu.core.errors import NoFitError
from slurm_gpu.core.fragmentation import spare_compute

__all__ = ["GpuSlots", "ModelTable", "WHOLE_GPU", "Placement", "is_model_type", "names_model",
           "slurm_type_names"]

GpuSlots = planner.Slots
WHOLE_GPU = "gpu"  # request key of a whole-GPU request: the model's full profile
Placement = List[Tuple[int, int, GpuSlots]]  # per instance: (gpu, start, the GPU's slots after it)


def _tokens(text: str) -> List[str]:
    return [t for t in re.split(r"[-_ ]+", text.lower()) if t]


def is_model_type(gpu_type: str, model_key: str) -> bool:
    """Whether a Slurm gpu type names GPUs of ``model_key``: ``a100`` and ``A100-80GB``, Slurm's
    autodetected ``nvidia_h100_80gb_hbm3`` and ``H100-80GB`` (one name's words begin the other's)."""
    mine, theirs = _tokens(model_key), _tokens(gpu_type)
    if theirs[:1] == ["nvidia"]:
        theirs = theirs[1:]
    n = min(len(mine), len(theirs))
    return n > 0 and mine[:n] == theirs[:n]


def slurm_type_names(model: GpuModel) -> Tuple[str, ...]:
    """The gpu type names Slurm's AutoDetect=nvml gives ``model``'s GPUs: each NVML device name in lower
    case, spaces as underscores (``NVIDIA A100-SXM4-80GB`` -> ``nvidia_a100-sxm4-80gb``)."""
    return tuple(re.sub(r"\s+", "_", n.strip().lower()) for n in model.nvml_names)


def names_model(gpu_type: str, model: GpuModel) -> bool:
    """Whether a Slurm gpu type names GPUs of ``model``: Slurm's autodetected name of one of its NVML
    names, or a short site name (:func:`is_model_type`)."""
    return gpu_type.lower() in slurm_type_names(model) or is_model_type(gpu_type, model.key)


class ModelTable:
    """One GPU model with memoised planner answers, indexed by cluster-wide request keys."""

    def __init__(self, model: GpuModel, keys: Sequence[str]):
        self.model = model
        self.keys = tuple(keys)
        self.total_slices = model.memory_slices_total
        self.profiles: List[Optional[Profile]] = [self._resolve(k) for k in self.keys]
        self._cap: Dict[GpuSlots, Tuple[int, ...]] = {}
        self._spare: Dict[GpuSlots, Tuple[int, int, int, int]] = {}

    def _resolve(self, key: str) -> Optional[Profile]:
        if key == WHOLE_GPU:
            return self.model.full_profile()
        if self.model.has_profile(key):
            return self.model.profile(key)
        if key.endswith("gb") and key[:-2].isdigit():  # memory-sized: the request module's rule
            from slurm_gpu.core.errors import RequestError
            from slurm_gpu.core.requests import parse_gres, resolve

            try:
                return resolve(parse_gres(f"gpu:{key}")[0], self.model)
            except RequestError:
                return None  # no profile of this model holds it
        if names_model(key, self.model):  # a GPU type (gpu:a100:2, Slurm's autodetected name): whole GPUs
            return self.model.full_profile()
        return None

    # -- the planner's answers ------------------------------------------------------------------------
    def capacity(self, slots: GpuSlots) -> Tuple[int, ...]:
        """For each request key: how many more instances of it alone fit on this GPU now (the planner's
        ``capacity``, what the agent publishes as fit features)."""
        found = self._cap.get(slots)
        if found is None:
            caps = slotplan.slot_capacity(self.model, slots)
            found = tuple(0 if p is None else caps[p.name] for p in self.profiles)
            self._cap[slots] = found
        return found

    def spare(self, slots: GpuSlots) -> Tuple[int, int, int, int]:
        """``(free compute, stranded compute, free memory, lost memory)`` slices of one GPU: stranded
        are the free compute slices no further instance could use (``core.fragmentation.spare_compute``,
        by the geometry rules the planner is checked against); lost
        are the free memory slices beyond the largest profile the planner could still place."""
        found = self._spare.get(slots)
        if found is None:
            model = self.model
            free_c = model.compute_slices_total - sum(model.profile_by_id(pid).compute_slices
                                                      for _, _, pid in slots)
            free_m = self.total_slices - self.used_slices(slots)
            caps = slotplan.slot_capacity(model, slots)
            largest = max((p.memory_slices for p in model.profiles if caps[p.name]), default=0)
            found = (free_c, free_c - spare_compute(model, slots), free_m, free_m - largest)
            self._spare[slots] = found
        return found

    def plan(self, gpus: Sequence[Tuple[int, GpuSlots]], key: int, count: int) -> Optional[Placement]:
        """Where the node agent puts ``count`` instances of request ``key`` on ``gpus`` (``(index, slots)``
        in index order): ``slurm_gpu.core.slotplan.plan_slots``; None when they do not all fit now."""
        profile = self.profiles[key]
        if profile is None:
            return None
        try:
            planned = slotplan.plan_slots(self.model, gpus, profile.name, count)
        except NoFitError:
            return None
        slots = dict(gpus)
        out: Placement = []
        for inst in planned:
            after = slots[inst.gpu_index] = self.add(slots[inst.gpu_index], inst.start, profile)
            out.append((inst.gpu_index, inst.start, after))
        return out

    # -- books ------------------------------------------------------------------------------------------
    @staticmethod
    def add(slots: GpuSlots, start: int, profile: Profile) -> GpuSlots:
        return tuple(sorted(slots + ((start, profile.memory_slices, profile.profile_id),)))

    @staticmethod
    def remove(slots: GpuSlots, start: int) -> GpuSlots:
        return tuple(s for s in slots if s[0] != start)

    @staticmethod
    def used_slices(slots: GpuSlots) -> int:
        return sum(z for _, z, _ in slots)
