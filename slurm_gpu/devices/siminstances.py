"""The GPU- and compute-instance calls of the simulated NVML: profiles, placements, create, list, destroy.

``InstanceCalls`` answers them from the state under the rules of ``simrules``; ``SimNvml`` adds the
library, device and MIG-mode calls on top. Creating or destroying an instance also makes or removes
its capability device in the node's sandbox (``simdevfiles``).
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from slurm_gpu.core.catalog import Profile
from slurm_gpu.devices import simdevfiles, simstate
from slurm_gpu.devices.simcalls import SimCalls, nvml_call
from slurm_gpu.devices.simhandles import (
    ci_handle,
    compute_instance,
    deref,
    device,
    device_handle,
    fail,
    find_gi,
    gi_handle,
    gpu_instance,
    next_serial,
    nvml,
)
from slurm_gpu.devices.simprocs import prune
from slurm_gpu.devices.simrules import (
    MAX_CI_ID,
    MAX_GI_ID,
    ci_profile_slices,
    ci_slice_start,
    first_fit_placement,
    gi_fit_error,
    lowest_free,
    model_of,
    profile_by_id,
    remaining_capacity,
)

__all__ = ["InstanceCalls"]


def _gi_profile_info(profile: Profile, version: int) -> Any:
    """``nvmlGpuInstanceProfileInfo_t`` (version 1) or ``_v2_t`` of a catalog profile."""
    nv = nvml()
    info = nv.c_nvmlGpuInstanceProfileInfo_v2_t() if version == 2 else nv.c_nvmlGpuInstanceProfileInfo_t()
    info.id = profile.profile_id
    info.isP2pSupported = 0
    info.sliceCount = profile.compute_slices
    info.instanceCount = profile.max_instances
    info.multiprocessorCount = profile.multiprocessors or 0
    info.copyEngineCount = profile.compute_slices  # the media engines are not modelled (0)
    info.memorySizeMB = profile.usable_memory_mib
    if version == 2:
        info.name = f"MIG {profile.name}".encode("ascii")
    return info


class InstanceCalls(SimCalls):
    """The ``nvml*`` calls on GPU-instance profiles, GPU instances and compute instances."""

    # ------------------------------------------------------------------ GPU instance profiles

    @nvml_call
    def nvmlDeviceGetGpuInstanceProfileInfo(self, handle: Any, profile: int, version: int = 2) -> Any:
        nv = nvml()
        gpu = device(self._body(), handle)
        if version not in (1, 2):
            fail(nv.NVML_ERROR_FUNCTION_NOT_FOUND)
        if not 0 <= profile < nv.NVML_GPU_INSTANCE_PROFILE_COUNT:
            fail(nv.NVML_ERROR_INVALID_ARGUMENT)
        for p in model_of(gpu).profiles:
            if p.nvml_profile_index == profile:
                return _gi_profile_info(p, version)
        fail(nv.NVML_ERROR_NOT_SUPPORTED)

    nvmlDeviceGetGpuInstanceProfileInfoV = nvmlDeviceGetGpuInstanceProfileInfo

    @nvml_call
    def nvmlDeviceGetGpuInstanceProfileInfoById(self, handle: Any, profileId: int) -> Any:  # noqa: N803
        gpu = device(self._body(), handle)
        return _gi_profile_info(profile_by_id(gpu, profileId), 2)

    nvmlDeviceGetGpuInstanceProfileInfoByIdV = nvmlDeviceGetGpuInstanceProfileInfoById

    @nvml_call
    def nvmlDeviceGetGpuInstancePossiblePlacements(
        self,
        handle: Any,
        profileId: int,
        placementsRef: Any,
        countRef: Any,  # noqa: N803
    ) -> int:
        """The ``_v2`` call: every placement of the profile, free or not, into a caller-allocated array."""
        nv = nvml()
        body = self._body()
        self._require_root(body)
        gpu = device(body, handle)
        placements = profile_by_id(gpu, profileId).placements
        count = deref(countRef)
        if placementsRef is None:
            count.value = len(placements)
            return nv.NVML_SUCCESS
        if count.value < len(placements) or len(placementsRef) < len(placements):
            count.value = len(placements)
            fail(nv.NVML_ERROR_INSUFFICIENT_SIZE)
        for i, (start, size) in enumerate(placements):
            placementsRef[i].start = start
            placementsRef[i].size = size
        count.value = len(placements)
        return nv.NVML_SUCCESS

    @nvml_call
    def nvmlDeviceGetGpuInstanceRemainingCapacity(self, handle: Any, profileId: int) -> int:  # noqa: N803
        body = self._body()
        self._require_root(body)
        gpu = device(body, handle)
        return remaining_capacity(gpu, profile_by_id(gpu, profileId))

    # ------------------------------------------------------------------ GPU instances

    def _create_gi(self, handle: Any, profile_id: int, placement: Optional[Tuple[int, int]]) -> Any:
        nv = nvml()
        with self._locked() as body:
            gpu = device(body, handle)
            self._require_mig(gpu)
            prune(gpu)
            if simstate.live_holders(gpu):  # "In use by another client", whatever the slices
                fail(nv.NVML_ERROR_IN_USE)
            profile = profile_by_id(gpu, profile_id)
            if placement is None:  # the driver's own choice
                placement = first_fit_placement(gpu, profile)
                if placement is None:
                    fail(nv.NVML_ERROR_INSUFFICIENT_RESOURCES)
            error = gi_fit_error(gpu, profile, placement[0], placement[1])
            if error is not None:
                fail(error)
            gi_id = lowest_free([g["gi_id"] for g in gpu["gpu_instances"]], 1, MAX_GI_ID)
            if gi_id is None:
                fail(nv.NVML_ERROR_INSUFFICIENT_RESOURCES)
            gi = {
                "gi_id": gi_id,
                "profile_id": profile.profile_id,
                "start": placement[0],
                "size": placement[1],
                "serial": next_serial(body),
                "compute_instances": [],
            }
            gpu["gpu_instances"].append(gi)
            simdevfiles.create_cap(body, gpu, gi_id, None)
            return gi_handle(gpu, gi)

    @nvml_call
    def nvmlDeviceCreateGpuInstanceWithPlacement(self, handle: Any, profileId: int, placement: Any) -> Any:  # noqa: N803
        pl = deref(placement)
        try:
            start, size = int(pl.start), int(pl.size)
        except (AttributeError, TypeError):
            fail(nvml().NVML_ERROR_INVALID_ARGUMENT)
        return self._create_gi(handle, profileId, (start, size))

    @nvml_call
    def nvmlDeviceCreateGpuInstance(self, handle: Any, profileId: int) -> Any:  # noqa: N803
        return self._create_gi(handle, profileId, None)

    @nvml_call
    def nvmlDeviceGetGpuInstances(
        self, handle: Any, profileId: int, gpuInstancesRef: Any, countRef: Any
    ) -> int:  # noqa: N803
        nv = nvml()
        body = self._body()
        self._require_root(body)
        gpu = device(body, handle)
        profile_by_id(gpu, profileId)
        if gpuInstancesRef is None:
            fail(nv.NVML_ERROR_INVALID_ARGUMENT)
        found = sorted(
            (g for g in gpu["gpu_instances"] if g["profile_id"] == profileId), key=lambda g: g["gi_id"]
        )
        if len(gpuInstancesRef) < len(found):
            fail(nv.NVML_ERROR_INSUFFICIENT_SIZE)
        for i, gi in enumerate(found):
            gpuInstancesRef[i] = gi_handle(gpu, gi)
        deref(countRef).value = len(found)
        return nv.NVML_SUCCESS

    @nvml_call
    def nvmlDeviceGetGpuInstanceById(self, handle: Any, gpuInstanceId: int) -> Any:  # noqa: N803
        nv = nvml()
        body = self._body()
        self._require_root(body)
        gpu = device(body, handle)
        self._require_mig(gpu)
        if not 0 <= gpuInstanceId <= MAX_GI_ID:
            fail(nv.NVML_ERROR_INVALID_ARGUMENT)
        gi = find_gi(gpu, gpuInstanceId)
        if gi is None:
            fail(nv.NVML_ERROR_NOT_FOUND)
        return gi_handle(gpu, gi)

    @nvml_call
    def nvmlGpuInstanceGetInfo(self, gpuInstance: Any) -> Any:  # noqa: N803
        nv = nvml()
        gpu, gi = gpu_instance(self._body(), gpuInstance)
        info = nv.c_nvmlGpuInstanceInfo_t()
        info.device = device_handle(gpu["index"])
        info.id = gi["gi_id"]
        info.profileId = gi["profile_id"]
        info.placement = nv.c_nvmlGpuInstancePlacement_t(gi["start"], gi["size"])
        return info

    @nvml_call
    def nvmlGpuInstanceDestroy(self, gpuInstance: Any) -> int:  # noqa: N803
        nv = nvml()
        with self._locked() as body:
            gpu, gi = gpu_instance(body, gpuInstance)
            prune(gpu)
            if gi["compute_instances"] or any(p["gi_id"] == gi["gi_id"] for p in gpu["processes"]):
                fail(nv.NVML_ERROR_IN_USE)
            gpu["gpu_instances"].remove(gi)
            simdevfiles.remove_cap(body, gpu, gi["gi_id"], None)
        return nv.NVML_SUCCESS

    # ------------------------------------------------------------------ compute instances

    @nvml_call
    def nvmlGpuInstanceGetComputeInstanceProfileInfo(
        self,
        gpuInstance: Any,
        profile: int,
        engProfile: int,
        version: int = 2,  # noqa: N803
    ) -> Any:
        nv = nvml()
        gpu, gi = gpu_instance(self._body(), gpuInstance)
        if version not in (1, 2):
            fail(nv.NVML_ERROR_FUNCTION_NOT_FOUND)
        if not 0 <= profile < nv.NVML_COMPUTE_INSTANCE_PROFILE_COUNT or engProfile != 0:
            fail(nv.NVML_ERROR_INVALID_ARGUMENT)
        gi_profile = profile_by_id(gpu, gi["profile_id"])
        slices = ci_profile_slices(gi_profile, profile)
        if slices is None:
            fail(nv.NVML_ERROR_NOT_SUPPORTED)
        info = (
            nv.c_nvmlComputeInstanceProfileInfo_v2_t()
            if version == 2
            else nv.c_nvmlComputeInstanceProfileInfo_t()
        )
        info.id = profile
        info.sliceCount = slices
        info.instanceCount = gi_profile.compute_slices // slices
        if gi_profile.multiprocessors:
            info.multiprocessorCount = gi_profile.multiprocessors * slices // gi_profile.compute_slices
        if version == 2:
            prefix = "" if slices == gi_profile.compute_slices else f"{slices}c."
            info.name = f"MIG {prefix}{gi_profile.name}".encode("ascii")
        return info

    nvmlGpuInstanceGetComputeInstanceProfileInfoV = nvmlGpuInstanceGetComputeInstanceProfileInfo

    @nvml_call
    def nvmlGpuInstanceCreateComputeInstance(self, gpuInstance: Any, profileId: int) -> Any:  # noqa: N803
        nv = nvml()
        with self._locked() as body:
            gpu, gi = gpu_instance(body, gpuInstance)
            model = model_of(gpu)
            gi_profile = profile_by_id(gpu, gi["profile_id"])
            slices = ci_profile_slices(gi_profile, profileId)
            if slices is None:
                fail(nv.NVML_ERROR_INVALID_ARGUMENT)
            cis = gi["compute_instances"]
            start = ci_slice_start(gi_profile, cis, slices)
            ci_id = lowest_free([c["ci_id"] for c in cis], 0, MAX_CI_ID)
            handle_index = lowest_free(
                [c["handle_index"] for g in gpu["gpu_instances"] for c in g["compute_instances"]],
                0,
                model.compute_slices_total - 1,
            )
            if start is None or ci_id is None or handle_index is None:
                fail(nv.NVML_ERROR_INSUFFICIENT_RESOURCES)
            ci = {
                "ci_id": ci_id,
                "profile_id": profileId,
                "start": start,
                "slices": slices,
                "mig_uuid": simstate.new_mig_uuid(),
                "handle_index": handle_index,
                "serial": next_serial(body),
            }
            cis.append(ci)
            simdevfiles.create_cap(body, gpu, gi["gi_id"], ci_id)
            return ci_handle(gpu, gi, ci)

    @nvml_call
    def nvmlGpuInstanceGetComputeInstances(
        self,
        gpuInstance: Any,
        profileId: int,
        computeInstancesRef: Any,
        countRef: Any,  # noqa: N803
    ) -> int:
        nv = nvml()
        body = self._body()
        self._require_root(body)
        gpu, gi = gpu_instance(body, gpuInstance)
        if computeInstancesRef is None:
            fail(nv.NVML_ERROR_INVALID_ARGUMENT)
        found = sorted(
            (c for c in gi["compute_instances"] if c["profile_id"] == profileId), key=lambda c: c["ci_id"]
        )
        if len(computeInstancesRef) < len(found):
            fail(nv.NVML_ERROR_INSUFFICIENT_SIZE)
        for i, ci in enumerate(found):
            computeInstancesRef[i] = ci_handle(gpu, gi, ci)
        deref(countRef).value = len(found)
        return nv.NVML_SUCCESS

    @nvml_call
    def nvmlGpuInstanceGetComputeInstanceById(self, gpuInstance: Any, computeInstanceId: int) -> Any:  # noqa: N803
        nv = nvml()
        body = self._body()
        self._require_root(body)
        gpu, gi = gpu_instance(body, gpuInstance)
        ci = next((c for c in gi["compute_instances"] if c["ci_id"] == computeInstanceId), None)
        if ci is None:
            fail(nv.NVML_ERROR_NOT_FOUND)
        return ci_handle(gpu, gi, ci)

    @nvml_call
    def nvmlComputeInstanceGetInfo(self, computeInstance: Any) -> Any:  # noqa: N803
        nv = nvml()
        gpu, gi, ci = compute_instance(self._body(), computeInstance)
        info = nv.c_nvmlComputeInstanceInfo_t()
        info.device = device_handle(gpu["index"])
        info.gpuInstance = gi_handle(gpu, gi)
        info.id = ci["ci_id"]
        info.profileId = ci["profile_id"]
        info.placement = nv.c_nvmlComputeInstancePlacement_t(ci["start"], ci["slices"])
        return info

    nvmlComputeInstanceGetInfo_v2 = nvmlComputeInstanceGetInfo

    @nvml_call
    def nvmlComputeInstanceDestroy(self, computeInstance: Any) -> int:  # noqa: N803
        nv = nvml()
        with self._locked() as body:
            gpu, gi, ci = compute_instance(body, computeInstance)
            prune(gpu)
            if any(p["gi_id"] == gi["gi_id"] and p["ci_id"] == ci["ci_id"] for p in gpu["processes"]):
                fail(nv.NVML_ERROR_IN_USE)
            gi["compute_instances"].remove(ci)
            simdevfiles.remove_cap(body, gpu, gi["gi_id"], ci["ci_id"])
        return nv.NVML_SUCCESS
