"""Record what a GPU driver answers to every read-only NVML call MIG depends on, error codes included.

A probe creates, destroys and changes nothing: it only asks (device facts, MIG mode, the GPU-instance
profile table by index, each profile's possible placements, remaining capacity and instance list, the
MIG device handles). Its record serves two readers: a site whose GPU model the catalog marks
unconfirmed, which sends the record to correct it (``slurm-gpu inventory --probe``), and the test
suite, which replays records of real GPUs against the simulated driver (``tests/fixtures/real-gpu/``).

``nv`` is ``pynvml`` or anything with its surface (``SimNvml``).
"""

from __future__ import annotations

import ctypes
import os
from typing import Any, Callable, Dict, List, Optional

__all__ = ["probe", "profiles_of"]

_MAX_PROFILE_INDEX = 20  # NVML_GPU_INSTANCE_PROFILE_COUNT is 0x12 in nvml.h 13.x; ask past it
_MAX_PROFILE_ID = 32  # profile ids seen: 0..20 (Hopper 19/20/15/14/9/5/0, Blackwell more)
_INFO_FIELDS = (
    "id", "isP2pSupported", "sliceCount", "instanceCount", "multiprocessorCount", "copyEngineCount",
    "decoderCount", "encoderCount", "jpegCount", "ofaCount", "memorySizeMB",
)


def _error_name(code: int) -> str:
    import pynvml  # the names of the codes, whichever library answered

    for name in dir(pynvml):
        if name.startswith("NVML_ERROR_") and getattr(pynvml, name) == code:
            return name
    return f"NVML error {code}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Asker:
    """Calls ``nv`` and keeps each answer as {"value": ...} or {"error": "NVML_ERROR_..."}."""

    def __init__(self, nv: Any):
        self.nv = nv

    def ask(self, name: str, *args: Any, convert: Callable[[Any], Any] = lambda v: v) -> Dict[str, Any]:
        try:
            fn = getattr(self.nv, name, None)
            if fn is None:
                return {"error": "NVML_ERROR_FUNCTION_NOT_FOUND"}
            return {"value": convert(fn(*args))}
        except self.nv.NVMLError as exc:
            return {"error": _error_name(int(exc.value))}


def _info(info: Any) -> Dict[str, Any]:
    out: Dict[str, Any] = {f: int(getattr(info, f)) for f in _INFO_FIELDS if hasattr(info, f)}
    if hasattr(info, "name"):
        out["name"] = _text(info.name)
    return out


def _placements(a: _Asker, h: Any, profile_id: int) -> Dict[str, Any]:
    nv = a.nv
    count = ctypes.c_uint(0)
    first = a.ask("nvmlDeviceGetGpuInstancePossiblePlacements", h, profile_id, None, ctypes.byref(count))
    if "error" in first or count.value == 0:
        return first if "error" in first else {"value": []}
    array = (nv.c_nvmlGpuInstancePlacement_t * count.value)()
    second = a.ask("nvmlDeviceGetGpuInstancePossiblePlacements", h, profile_id, array, ctypes.byref(count))
    if "error" in second:
        return second
    return {"value": [{"start": int(array[k].start), "size": int(array[k].size)} for k in range(count.value)]}


def _gpu_instance_count(a: _Asker, h: Any, profile_id: int, room: int) -> Dict[str, Any]:
    nv = a.nv
    count = ctypes.c_uint(0)
    array = (nv.c_nvmlGpuInstance_t * max(room, 1))()
    answer = a.ask("nvmlDeviceGetGpuInstances", h, profile_id, array, ctypes.byref(count))
    return answer if "error" in answer else {"value": int(count.value)}


def _profiles(a: _Asker, h: Any) -> List[Dict[str, Any]]:
    rows: List[Dict[str, Any]] = []
    for index in range(_MAX_PROFILE_INDEX):
        # pynvml asks for the _v2 structure, which also carries the profile's name ("MIG 1g.18gb").
        info = a.ask("nvmlDeviceGetGpuInstanceProfileInfo", h, index, convert=_info)
        row: Dict[str, Any] = {"index": index, "info": info}
        if "value" in info:
            pid, room = info["value"]["id"], info["value"].get("instanceCount", 0)
            row["placements"] = _placements(a, h, pid)
            row["remaining_capacity"] = a.ask("nvmlDeviceGetGpuInstanceRemainingCapacity", h, pid)
            row["gpu_instances"] = _gpu_instance_count(a, h, pid, room)
        rows.append(row)
        if info.get("error") == "NVML_ERROR_INVALID_ARGUMENT":
            break
    return rows


def _placements_by_id(a: _Asker, h: Any) -> Dict[str, Any]:
    """Placements asked by profile id whatever the profile table said: how a driver answers with MIG off."""
    return {str(pid): _placements(a, h, pid) for pid in range(_MAX_PROFILE_ID)}


def _mig_handles(a: _Asker, h: Any, maximum: Optional[int]) -> Dict[str, Any]:
    found: Dict[str, Any] = {}
    for i in range(maximum or 0):
        mig = a.ask("nvmlDeviceGetMigDeviceHandleByIndex", h, i)
        if "error" in mig:
            found[str(i)] = mig
            continue
        handle = mig["value"]
        found[str(i)] = {
            "uuid": a.ask("nvmlDeviceGetUUID", handle, convert=_text),
            "gi_id": a.ask("nvmlDeviceGetGpuInstanceId", handle),
            "ci_id": a.ask("nvmlDeviceGetComputeInstanceId", handle),
        }
    return found


def _gpu(a: _Asker, index: int) -> Dict[str, Any]:
    got = a.ask("nvmlDeviceGetHandleByIndex", index)
    if "error" in got:
        return {"index": index, "handle": got}
    h = got["value"]

    def pci(p: Any) -> Dict[str, Any]:
        return {"bus_id": _text(p.busId), "pci_device_id": f"0x{int(p.pciDeviceId):08X}",
                "pci_subsystem_id": f"0x{int(p.pciSubSystemId):08X}"}

    max_mig = a.ask("nvmlDeviceGetMaxMigDeviceCount", h)
    return {
        "index": index,
        "name": a.ask("nvmlDeviceGetName", h, convert=_text),
        "uuid": a.ask("nvmlDeviceGetUUID", h, convert=_text),
        "minor": a.ask("nvmlDeviceGetMinorNumber", h),
        "pci": a.ask("nvmlDeviceGetPciInfo", h, convert=pci),
        "memory_total_mib": a.ask("nvmlDeviceGetMemoryInfo", h, convert=lambda m: int(m.total) // (1 << 20)),
        "compute_capability": a.ask("nvmlDeviceGetCudaComputeCapability", h, convert=list),
        "architecture": a.ask("nvmlDeviceGetArchitecture", h),
        "mig_mode": a.ask("nvmlDeviceGetMigMode", h, convert=list),
        "max_mig_device_count": max_mig,
        "is_mig_device_handle": a.ask("nvmlDeviceIsMigDeviceHandle", h, convert=bool),
        "gpu_instance_profiles": _profiles(a, h),
        "placements_by_profile_id": _placements_by_id(a, h),
        "mig_device_handles": _mig_handles(a, h, max_mig.get("value")),
    }


def _file_head(path: str, lines: int = 40) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return {"value": [line.rstrip("\n") for _, line in zip(range(lines), f)]}
    except OSError as exc:
        return {"error": f"{type(exc).__name__}: {exc.strerror}"}


def _listing(path: str) -> Dict[str, Any]:
    try:
        return {"value": sorted(os.listdir(path))}
    except OSError as exc:
        return {"error": f"{type(exc).__name__}: {exc.strerror}"}


def probe(nv: Any, mig_minors_path: str = "/proc/driver/nvidia-caps/mig-minors") -> Dict[str, Any]:
    """Every read-only answer of ``nv`` about its GPUs' MIG support (the ``slurm-gpu.inventory.probe/v1``
    payload, less its ``schema`` and ``catalog_differences``)."""
    a = _Asker(nv)
    init = a.ask("nvmlInit")
    record: Dict[str, Any] = {"init": init}
    if "error" in init:
        return record
    try:
        record["driver_version"] = a.ask("nvmlSystemGetDriverVersion", convert=_text)
        record["nvml_version"] = a.ask("nvmlSystemGetNVMLVersion", convert=_text)
        record["cuda_driver_version"] = a.ask("nvmlSystemGetCudaDriverVersion")
        count = a.ask("nvmlDeviceGetCount")
        record["device_count"] = count
        record["gpus"] = [_gpu(a, i) for i in range(count.get("value", 0))]
    finally:
        a.ask("nvmlShutdown")
    record["files"] = {
        "mig_minors": _file_head(mig_minors_path),
        "dev_nvidia_caps": _listing("/dev/nvidia-caps"),
    }
    return record


def profiles_of(gpu: Dict[str, Any]) -> List[Any]:
    """The ``NvmlProfile`` rows of one probed GPU (those NVML answered), for ``catalog_differences``."""
    from slurm_gpu.devices.api import NvmlProfile

    rows = []
    for row in gpu.get("gpu_instance_profiles", ()):
        info = row["info"].get("value")
        if info is None:
            continue
        placements = row.get("placements", {}).get("value") or []
        rows.append(NvmlProfile(
            profile_id=info["id"], nvml_profile_index=row["index"], slice_count=info["sliceCount"],
            memory_mib=info["memorySizeMB"], instance_count=info["instanceCount"],
            placements=tuple((p["start"], p["size"]) for p in placements), name=info.get("name", ""),
        ))
    return rows
