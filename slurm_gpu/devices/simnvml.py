"""A simulated NVML with pynvml's function surface, so ``NvmlDriver`` runs unchanged on top of it.

``SimNvml(state_path)`` answers the ``nvml*`` calls the driver makes from a state file shared by all
processes of a node (``simstate``), with pynvml's own structure types and exceptions
(``pynvml.NVMLError(code)`` builds the right subclass without a driver). Anything else (constants,
structures, exception classes) is looked up on ``pynvml`` itself; an ``nvml*`` function the simulator
does not provide raises FUNCTION_NOT_FOUND, like a library without that symbol.

The parts: this module has the library, device, MIG-mode and MIG-device calls; ``siminstances`` the
GPU- and compute-instance calls; ``simcalls`` what every call shares (init check, fault injection from
``faults``, NO_PERMISSION for create/destroy/list/placements unless root or ``allow_unprivileged``);
``simrules`` the MIG rules (a deliberate second opinion to the core's); ``simhandles`` the handles;
``simprocs`` the processes, which make destroying their instance fail with IN_USE. MIG mode changes
stay pending until ``reset_gpu`` on models that need a reset (Ampere) and apply at once otherwise.
"""

from __future__ import annotations

import ctypes
from typing import Any, Dict, List, Optional, Tuple

from slurm_gpu.devices import simprocs, simstate
from slurm_gpu.devices.simcalls import nvml_call
from slurm_gpu.devices.simhandles import (
    KIND_MIG,
    any_device,
    ci_handle,
    compute_instance,
    device,
    device_handle,
    fail,
    gpu_entry,
    kind_of,
    nvml,
)
from slurm_gpu.devices.siminstances import InstanceCalls
from slurm_gpu.devices.simrules import model_of, profile_by_id
from slurm_gpu.devices.simstate import live_processes

__all__ = ["SimNvml"]

# pynvml's own helpers, not NVML symbols: looked up on pynvml as they are
_HELPERS = {
    "nvmlFriendlyObject",
    "nvmlStructToFriendlyObject",
    "nvmlFriendlyObjectToStruct",
    "nvmlExceptionClass",
}


class SimNvml(InstanceCalls):
    """The pynvml functions ``NvmlDriver`` uses, answered from the state file ``state_path``.

    ``faults`` overrides ``SLURM_GPU_SIM_FAULTS`` for this instance (same syntax, own call counters).
    """

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        value = getattr(nvml(), name)  # constants, structures, NVMLError and its subclasses
        if name.startswith("nvml") and callable(value) and name not in _HELPERS:

            def missing(*_args: Any, **_kwargs: Any) -> Any:
                fail(nvml().NVML_ERROR_FUNCTION_NOT_FOUND)

            missing.__name__ = name
            return missing
        self.__dict__[name] = value  # a constant or a type: looked up once per instance, not per call
        return value

    def __repr__(self) -> str:
        return f"SimNvml({self.state_path!r})"

    # ------------------------------------------------------------------ library and devices

    @nvml_call
    def nvmlInit(self) -> None:
        self._body()  # a missing or corrupt state file fails here (StateError naming it)
        self._init_count += 1

    @nvml_call
    def nvmlInitWithFlags(self, flags: int) -> None:
        self._body()
        self._init_count += 1

    @nvml_call
    def nvmlShutdown(self) -> None:
        self._init_count -= 1

    @nvml_call
    def nvmlSystemGetDriverVersion(self) -> str:
        return "sim-" + str(simstate.FORMAT_VERSION)

    @nvml_call
    def nvmlDeviceGetCount(self) -> int:
        return len(self._body()["gpus"])

    @nvml_call
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        gpu_entry(self._body(), index)
        return device_handle(index)

    @nvml_call
    def nvmlDeviceGetName(self, handle: Any) -> str:
        gpu, gi, _ = any_device(self._body(), handle)
        if gi is None:
            return gpu["name"]
        return f"{gpu['name']} MIG {profile_by_id(gpu, gi['profile_id']).name}"

    @nvml_call
    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        gpu, _, ci = any_device(self._body(), handle)
        return ci["mig_uuid"] if ci is not None else gpu["uuid"]

    @nvml_call
    def nvmlDeviceGetMinorNumber(self, handle: Any) -> int:
        return device(self._body(), handle)["minor"]

    @nvml_call
    def nvmlDeviceGetPciInfo(self, handle: Any) -> Any:
        nv = nvml()
        gpu = device(self._body(), handle)
        bus_id = gpu["bus_id"].encode("ascii")
        domain, bus, rest = gpu["bus_id"].split(":")
        info = nv.nvmlPciInfo_t()
        info.busId = bus_id
        info.busIdLegacy = bus_id[-12:]
        info.domain, info.bus, info.device = int(domain, 16), int(bus, 16), int(rest.split(".")[0], 16)
        info.pciDeviceId = int(gpu["pci_device_id"], 16)
        return info

    nvmlDeviceGetPciInfo_v3 = nvmlDeviceGetPciInfo

    @nvml_call
    def nvmlDeviceGetMemoryInfo(self, handle: Any, version: Optional[int] = None) -> Any:
        nv = nvml()
        gpu, gi, _ = any_device(self._body(), handle)
        if gi is None:
            total = gpu["memory_total_mib"]
        else:
            total = profile_by_id(gpu, gi["profile_id"]).usable_memory_mib
        mem = nv.c_nvmlMemory_t() if not version else nv.c_nvmlMemory_v2_t()
        mem.total = total * 1024 * 1024
        mem.free = mem.total
        mem.used = 0
        return mem

    @nvml_call
    def nvmlDeviceIsMigDeviceHandle(self, handle: Any) -> Any:
        return ctypes.c_uint(1 if kind_of(handle) == KIND_MIG else 0)

    # ------------------------------------------------------------------ MIG mode

    @nvml_call
    def nvmlDeviceGetMigMode(self, handle: Any) -> List[int]:
        gpu = device(self._body(), handle)
        return [gpu["mig_current"], gpu["mig_pending"]]

    @nvml_call
    def nvmlDeviceSetMigMode(self, handle: Any, mode: int) -> int:
        """Returns the activation status (an NVML return code), as the real call does."""
        nv = nvml()
        if mode not in (nv.NVML_DEVICE_MIG_DISABLE, nv.NVML_DEVICE_MIG_ENABLE):
            fail(nv.NVML_ERROR_INVALID_ARGUMENT)
        with self._locked() as body:
            gpu = device(body, handle)
            if gpu["mig_current"] == mode and gpu["mig_pending"] == mode:
                return nv.NVML_SUCCESS
            # instances, processes or another client holding the device file (hwloc, DCGM) block it
            if gpu["gpu_instances"] or live_processes(gpu) or simstate.live_holders(gpu):
                return nv.NVML_ERROR_IN_USE
            gpu["mig_pending"] = mode
            if not model_of(gpu).mode_change_requires_reset:
                gpu["mig_current"] = mode  # Hopper and newer switch without a reset
            return nv.NVML_SUCCESS

    # ------------------------------------------------------------------ MIG devices

    @nvml_call
    def nvmlDeviceGetMaxMigDeviceCount(self, handle: Any) -> int:
        gpu = device(self._body(), handle)
        return model_of(gpu).compute_slices_total if gpu["mig_current"] else 0

    @nvml_call
    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: Any, index: int) -> Any:
        nv = nvml()
        gpu = device(self._body(), handle)
        self._require_mig(gpu)
        if not 0 <= index < model_of(gpu).compute_slices_total:
            fail(nv.NVML_ERROR_INVALID_ARGUMENT)
        for gi in gpu["gpu_instances"]:
            for ci in gi["compute_instances"]:
                if ci["handle_index"] == index:
                    return ci_handle(gpu, gi, ci, KIND_MIG)
        fail(nv.NVML_ERROR_NOT_FOUND)

    @nvml_call
    def nvmlDeviceGetGpuInstanceId(self, handle: Any) -> int:
        if kind_of(handle) != KIND_MIG:
            fail(nvml().NVML_ERROR_NOT_SUPPORTED)
        return compute_instance(self._body(), handle, KIND_MIG)[1]["gi_id"]

    @nvml_call
    def nvmlDeviceGetComputeInstanceId(self, handle: Any) -> int:
        if kind_of(handle) != KIND_MIG:
            fail(nvml().NVML_ERROR_NOT_SUPPORTED)
        return compute_instance(self._body(), handle, KIND_MIG)[2]["ci_id"]

    @nvml_call
    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle: Any) -> Any:
        gpu, _, _ = compute_instance(self._body(), handle, KIND_MIG)
        return device_handle(gpu["index"])

    @nvml_call
    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> List[Any]:
        """Processes on one MIG device, or on a whole GPU for a parent handle (pynvml friendly objects)."""
        nv = nvml()
        gpu, gi, ci = any_device(self._body(), handle)
        result = []
        for proc in live_processes(gpu):
            if (
                gi is not None
                and ci is not None
                and (proc["gi_id"], proc["ci_id"]) != (gi["gi_id"], ci["ci_id"])
            ):
                continue
            result.append(
                nv.nvmlFriendlyObject(
                    {
                        "pid": proc["pid"],
                        "usedGpuMemory": None,
                        "gpuInstanceId": proc["gi_id"],
                        "computeInstanceId": proc["ci_id"],
                    }
                )
            )
        return result

    nvmlDeviceGetComputeRunningProcesses_v3 = nvmlDeviceGetComputeRunningProcesses
    nvmlDeviceGetComputeRunningProcesses_v2 = nvmlDeviceGetComputeRunningProcesses

    # ------------------------------------------------------------------ simulator controls (not NVML)

    def reset_gpu(self, index: int) -> Tuple[int, int]:
        return simprocs.reset_gpu(self.state_path, index)

    def attach_process(self, mig_uuid: str, pid: int) -> Dict[str, Any]:
        return simprocs.attach_process(self.state_path, mig_uuid, pid)
