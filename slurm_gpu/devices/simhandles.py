"""Handles and errors of the simulated NVML, and what a handle names in the state.

Handles are ctypes pointers of pynvml's handle types holding an encoded, never dereferenced address
(kind, GPU, ids and a serial), so they fit the caller-allocated handle arrays of the listing calls and
a handle of a destroyed instance is recognised as stale (its serial is gone). Errors are
``pynvml.NVMLError(code)``, which builds the right subclass without a driver.

pynvml is imported on first use: importing the simulator costs nothing until it answers a call.
"""

from __future__ import annotations

import ctypes
from typing import Any, Dict, NoReturn, Optional, Tuple

__all__ = [
    "KIND_DEVICE",
    "KIND_GI",
    "KIND_CI",
    "KIND_MIG",
    "nvml",
    "fail",
    "deref",
    "kind_of",
    "gpu_entry",
    "find_gi",
    "device",
    "gpu_instance",
    "compute_instance",
    "any_device",
    "next_serial",
    "device_handle",
    "gi_handle",
    "ci_handle",
]

_MAGIC = 0x5A
KIND_DEVICE, KIND_GI, KIND_CI, KIND_MIG = 1, 2, 3, 4

Entry = Dict[str, Any]  # a GPU, GPU instance or compute instance entry of the state body


def nvml() -> Any:
    """The pynvml module: its constants, structure types and exception classes."""
    import pynvml

    return pynvml


def fail(code: int) -> NoReturn:
    raise nvml().NVMLError(code)


# ----------------------------------------------------------------------------------------- encoding


def _encode(kind: int, gpu: int, gi: int = 0, ci: int = 0, serial: int = 0) -> int:
    return (_MAGIC << 56) | (kind << 52) | (gpu << 44) | (gi << 36) | (ci << 32) | (serial & 0xFFFFFFFF)


def _make(ptr_type: Any, addr: int) -> Any:
    return ctypes.cast(ctypes.c_void_p(addr), ptr_type)


def _decode(handle: Any) -> Tuple[int, int, int, int, int]:
    """(kind, gpu, gi, ci, serial) of a handle this simulator made; INVALID_ARGUMENT for anything else."""
    addr: Optional[int]
    try:
        addr = handle if isinstance(handle, int) else ctypes.cast(handle, ctypes.c_void_p).value
    except (TypeError, ctypes.ArgumentError):
        addr = None
    if not addr or addr >> 56 != _MAGIC:
        fail(nvml().NVML_ERROR_INVALID_ARGUMENT)
    return (addr >> 52) & 0xF, (addr >> 44) & 0xFF, (addr >> 36) & 0xFF, (addr >> 32) & 0xF, addr & 0xFFFFFFFF


def kind_of(handle: Any) -> int:
    return _decode(handle)[0]


def deref(ref: Any) -> Any:
    """The ctypes object behind ``byref(x)``, ``pointer(x)`` or ``x`` itself."""
    obj = getattr(ref, "_obj", None)
    if obj is not None:
        return obj
    if hasattr(ref, "contents"):
        return ref.contents
    return ref


def next_serial(body: Entry) -> int:
    """A fresh serial for a new instance's handles (wraps within 32 bits, never 0)."""
    serial = int(body["next_serial"])
    body["next_serial"] = serial % 0xFFFFFFFF + 1
    return serial


def device_handle(index: int) -> Any:
    return _make(nvml().c_nvmlDevice_t, _encode(KIND_DEVICE, index))


def gi_handle(gpu: Entry, gi: Entry) -> Any:
    return _make(nvml().c_nvmlGpuInstance_t, _encode(KIND_GI, gpu["index"], gi["gi_id"], 0, gi["serial"]))


def ci_handle(gpu: Entry, gi: Entry, ci: Entry, kind: int = KIND_CI) -> Any:
    """A compute instance handle, or with ``kind=KIND_MIG`` the MIG device handle of the same instance."""
    nv = nvml()
    ptr = nv.c_nvmlComputeInstance_t if kind == KIND_CI else nv.c_nvmlDevice_t
    return _make(ptr, _encode(kind, gpu["index"], gi["gi_id"], ci["ci_id"], ci["serial"]))


# ----------------------------------------------------------------------------------------- lookups


def gpu_entry(body: Entry, index: int) -> Entry:
    gpus = body["gpus"]
    if not 0 <= index < len(gpus):
        fail(nvml().NVML_ERROR_INVALID_ARGUMENT)
    return gpus[index]


def find_gi(gpu: Entry, gi_id: int) -> Optional[Entry]:
    return next((g for g in gpu["gpu_instances"] if g["gi_id"] == gi_id), None)


def device(body: Entry, handle: Any) -> Entry:
    """The GPU entry of a parent GPU handle."""
    kind, index, _, _, _ = _decode(handle)
    if kind != KIND_DEVICE:
        fail(nvml().NVML_ERROR_INVALID_ARGUMENT)
    return gpu_entry(body, index)


def gpu_instance(body: Entry, handle: Any) -> Tuple[Entry, Entry]:
    """(gpu, gi) of a GPU instance handle; INVALID_ARGUMENT for a stale one."""
    kind, index, gi_id, _, serial = _decode(handle)
    gpu = gpu_entry(body, index)
    gi = find_gi(gpu, gi_id)
    if kind != KIND_GI or gi is None or gi["serial"] != serial:
        fail(nvml().NVML_ERROR_INVALID_ARGUMENT)
    return gpu, gi


def compute_instance(body: Entry, handle: Any, kind_wanted: int = KIND_CI) -> Tuple[Entry, Entry, Entry]:
    """(gpu, gi, ci) of a compute instance handle (or MIG device handle); INVALID_ARGUMENT if stale."""
    kind, index, gi_id, ci_id, serial = _decode(handle)
    if kind != kind_wanted:
        fail(nvml().NVML_ERROR_INVALID_ARGUMENT)
    gpu = gpu_entry(body, index)
    gi = find_gi(gpu, gi_id)
    if gi is None:
        fail(nvml().NVML_ERROR_INVALID_ARGUMENT)
    ci = next((c for c in gi["compute_instances"] if c["ci_id"] == ci_id), None)
    if ci is None or ci["serial"] != serial:
        fail(nvml().NVML_ERROR_INVALID_ARGUMENT)
    return gpu, gi, ci


def any_device(body: Entry, handle: Any) -> Tuple[Entry, Optional[Entry], Optional[Entry]]:
    """A parent GPU handle -> (gpu, None, None); a MIG device handle -> (gpu, gi, ci)."""
    if kind_of(handle) == KIND_MIG:
        return compute_instance(body, handle, KIND_MIG)
    return device(body, handle), None, None
