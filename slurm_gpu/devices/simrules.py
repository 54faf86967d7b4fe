"""The MIG rules of the simulated driver: what a GPU accepts, and the ids and places it assigns.

A deliberate second opinion: these rules are written again here, from NVML's documented behaviour,
rather than imported from ``slurm_gpu.core.geometry`` / ``slurm_gpu.core.planner``, so that the
simulator can contradict the core. ``tests/simulate/test_sim_vs_planner.py`` checks that both give the
same verdict on random create/destroy sequences and that the planner's capacity is what the driver
accepts; recorded ``nvidia-smi`` output in ``tests/fixtures`` checks the catalog both start from.

Rules (see docs/devices.md): profiles, placements and ids from the catalog entry of each GPU's model
(or the state's ``profile_overrides``); INVALID_ARGUMENT for a placement the profile does not allow;
INSUFFICIENT_RESOURCES for overlap, a profile's ``max_instances``, the GPU's compute slices or
GPU-instance count exhausted, or a media-engine conflict (``+me.all`` shares a GPU only with ``-me``);
GI ids lowest free in 1..14, CI ids lowest free from 0; MIG device handle indices lowest free (sparse
after a destroy); a compute instance takes the first free contiguous range of its GI's slices.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Iterable, List, Optional, Tuple

from slurm_gpu.core.catalog import GpuModel, Profile, load_catalog
from slurm_gpu.devices.migminors import MAX_CI_ID, MAX_GI_ID
from slurm_gpu.devices.simhandles import fail, nvml

__all__ = [
    "MAX_GI_ID",
    "MAX_CI_ID",
    "model_of",
    "profile_by_id",
    "gi_fit_error",
    "first_fit_placement",
    "remaining_capacity",
    "ci_profile_slices",
    "ci_slice_start",
    "lowest_free",
]

# NVML_COMPUTE_INSTANCE_PROFILE_* index -> compute slices (the CI profile id equals the index)
_CI_SLICES = {0: 1, 1: 2, 2: 3, 3: 4, 4: 7, 5: 8, 6: 6, 7: 1, 8: 7}
_CI_REV1 = 7  # 1_SLICE_REV1: only on GIs whose catalog entry names it (1g double-memory on Hopper)
_CI_NAMED_ONLY = (5, 6, 8)  # 8-slice, 6-slice and NVL CI profiles exist only where the catalog names them

Entry = Dict[str, Any]


def model_of(gpu: Entry) -> GpuModel:
    """The GPU's profile table: the catalog's, unless the state gives this simulated driver its own.

    ``profile_overrides`` (``{"<profile_id>": {"placements": [[start, size], ...], "max_instances": n,
    "memory_mib": m} | null}``) stands for a driver whose table differs from the catalog file; null
    means the driver does not offer that profile.
    """
    model = load_catalog().model(gpu["model"])
    overrides = gpu.get("profile_overrides")
    if not overrides:
        return model
    profiles = []
    for p in model.profiles:
        if str(p.profile_id) not in overrides:
            profiles.append(p)
            continue
        change = overrides[str(p.profile_id)]
        if change is None:
            continue
        if "placements" in change:
            change = dict(change, placements=tuple((int(a), int(b)) for a, b in change["placements"]))
        profiles.append(dataclasses.replace(p, **change))
    return dataclasses.replace(model, profiles=tuple(profiles))


def profile_by_id(gpu: Entry, profile_id: int) -> Profile:
    """The GPU-instance profile ``profile_id`` of the GPU; INVALID_ARGUMENT where it has none."""
    for p in model_of(gpu).profiles:
        if p.profile_id == profile_id:
            return p
    fail(nvml().NVML_ERROR_INVALID_ARGUMENT)


def lowest_free(used: Iterable[int], first: int, last: int) -> Optional[int]:
    taken = set(used)
    return next((i for i in range(first, last + 1) if i not in taken), None)


def gi_fit_error(gpu: Entry, profile: Profile, start: int, size: int) -> Optional[int]:
    """Why a GPU instance of ``profile`` at (start, size) cannot be created now (an NVML code); None if
    it can."""
    nv = nvml()
    model = model_of(gpu)
    if (start, size) not in profile.placements:
        return int(nv.NVML_ERROR_INVALID_ARGUMENT)
    gis = gpu["gpu_instances"]
    if len(gis) >= model.max_gpu_instances:
        return int(nv.NVML_ERROR_INSUFFICIENT_RESOURCES)
    if sum(1 for g in gis if g["profile_id"] == profile.profile_id) >= profile.max_instances:
        return int(nv.NVML_ERROR_INSUFFICIENT_RESOURCES)
    if any(start < g["start"] + g["size"] and g["start"] < start + size for g in gis):
        return int(nv.NVML_ERROR_INSUFFICIENT_RESOURCES)
    others = [model.profile_by_id(g["profile_id"]) for g in gis]
    if sum(p.compute_slices for p in others) + profile.compute_slices > model.compute_slices_total:
        return int(nv.NVML_ERROR_INSUFFICIENT_RESOURCES)
    # "+me.all" takes every media engine: it shares the GPU only with "-me" instances.
    if profile.variant == "+me.all" and any(p.variant != "-me" for p in others):
        return int(nv.NVML_ERROR_INSUFFICIENT_RESOURCES)
    if profile.variant != "-me" and any(p.variant == "+me.all" for p in others):
        return int(nv.NVML_ERROR_INSUFFICIENT_RESOURCES)
    return None


def first_fit_placement(gpu: Entry, profile: Profile) -> Optional[Tuple[int, int]]:
    """The driver's own choice when no placement is given: the first placement that fits."""
    return next((pl for pl in profile.placements if gi_fit_error(gpu, profile, *pl) is None), None)


def remaining_capacity(gpu: Entry, profile: Profile) -> int:
    """How many more GPU instances of ``profile`` alone fit: greedy over the aligned placements, which
    is exact for one profile alone."""
    trial = dict(gpu, gpu_instances=list(gpu["gpu_instances"]))
    count = 0
    for start, size in profile.placements:
        if gi_fit_error(trial, profile, start, size) is None:
            trial["gpu_instances"].append({"profile_id": profile.profile_id, "start": start, "size": size})
            count += 1
    return count


def ci_profile_slices(gi_profile: Profile, ci_profile: int) -> Optional[int]:
    """Compute slices of CI profile ``ci_profile`` on a GI of ``gi_profile``; None if not supported there."""
    slices = _CI_SLICES.get(ci_profile)
    if slices is None or slices > gi_profile.compute_slices:
        return None
    if ci_profile == _CI_REV1 and gi_profile.ci_profile_index != _CI_REV1:
        return None
    if ci_profile in _CI_NAMED_ONLY and gi_profile.ci_profile_index != ci_profile:
        return None
    return slices


def ci_slice_start(gi_profile: Profile, cis: List[Entry], slices: int) -> Optional[int]:
    """First free contiguous range of ``slices`` compute slices inside a GI; None when none is left."""
    taken = {s for c in cis for s in range(c["start"], c["start"] + c["slices"])}
    return next(
        (
            s
            for s in range(0, gi_profile.compute_slices - slices + 1)
            if not taken.intersection(range(s, s + slices))
        ),
        None,
    )
