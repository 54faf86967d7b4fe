"""How the profile table a driver reports differs from the catalog entry of the GPU's model.

Where they differ NVML wins (``GpuModel.with_driver_profiles``); the differences are reported so that
the catalog file can be corrected (``slurm-gpu inventory --check-catalog``).
"""

from __future__ import annotations

from typing import Any, Iterable, List, Optional

from slurm_gpu.core.catalog import MEMORY_DRIFT, GpuModel
from slurm_gpu.devices.api import CatalogDifference, NvmlProfile

__all__ = ["catalog_differences"]


def catalog_differences(
    gpu_index: int, model: GpuModel, offered: Iterable[NvmlProfile]
) -> List[CatalogDifference]:
    """Every field in which the driver's profiles ``offered`` disagree with ``model``'s, and every profile
    only one of them has."""
    diffs: List[CatalogDifference] = []

    def diff(profile_id: Optional[int], field: str, catalog: Any, nvml: Any) -> None:
        diffs.append(CatalogDifference(gpu_index, model.key, profile_id, field, catalog, nvml))

    nvml_profiles = {p.profile_id: p for p in offered}
    for cp in model.profiles:
        np_ = nvml_profiles.pop(cp.profile_id, None)
        if np_ is None:
            diff(cp.profile_id, "profile", cp.name, None)
            continue
        if np_.nvml_profile_index != cp.nvml_profile_index:
            diff(cp.profile_id, "nvml_profile_index", cp.nvml_profile_index, np_.nvml_profile_index)
        if np_.slice_count != cp.compute_slices:
            diff(cp.profile_id, "compute_slices", cp.compute_slices, np_.slice_count)
        if np_.instance_count != cp.max_instances:
            diff(cp.profile_id, "max_instances", cp.max_instances, np_.instance_count)
        if tuple(np_.placements) != tuple(cp.placements):
            diff(cp.profile_id, "placements", list(cp.placements), list(np_.placements))
        if cp.memory_mib is None or abs(np_.memory_mib - cp.memory_mib) > MEMORY_DRIFT * cp.memory_mib:
            diff(cp.profile_id, "memory_mib", cp.memory_mib, np_.memory_mib)
    for np_ in nvml_profiles.values():
        diff(np_.profile_id, "profile", None, np_.name or f"index {np_.nvml_profile_index}")
    return diffs
