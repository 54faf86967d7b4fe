"""A simulated NVML with pynvml's function surface, so ``NvmlDriver`` runs unchanged on top of it.

``SimNvml(state_path)`` answers the ``nvml*`` calls the driver makes from a state file shared by all
processes of a node (``simstate``), with pynvml's own structure types and exceptions
(``pynvml.NVMLError(code)`` builds the right subclass without a driver). Anything else (constants,
structures, exception classes) is looked up on ``pynvml`` itself; an ``nvml*`` function the simulator
does not provide raises FUNCTION_NOT_FOUND, like a library without that symbol.

Rules followed (see docs/devices.md): profiles, placements and ids from the catalog entry of each
GPU's model; INVALID_ARGUMENT for a placement the profile does not allow; INSUFFICIENT_RESOURCES for
overlap, a profile's ``max_instances``, the GPU's compute slices or GPU-instance count exhausted;
GI ids lowest free in 1..14, CI ids lowest free from 0; MIG device handle indices lowest free (sparse
after a destroy); IN_USE when destroying a GI that still has compute instances or processes, or a CI
with processes; MIG mode pending until ``reset_gpu`` on models that need a reset (Ampere), immediate
otherwise; NO_PERMISSION for create/destroy/list/placements unless root or ``allow_unprivileged``.

Handles are ctypes pointers of pynvml's handle types holding an encoded, never dereferenced address
(kind, GPU, ids and a serial), so they fit the caller-allocated handle arrays of the listing calls and
a handle of a destroyed instance is recognised as stale.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import os
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, TypeVar

from slurm_gpu.devices import simstate
from slurm_gpu.devices.faults import FaultPlan, parse_faults, plan_from_env

__all__ = ["SimNvml", "attach_process", "detach_process", "live_processes", "reset_gpu"]

_MAGIC = 0x5A
_KIND_DEVICE, _KIND_GI, _KIND_CI, _KIND_MIG = 1, 2, 3, 4
_MAX_GI_ID = 14
_MAX_CI_ID = 7
# NVML_COMPUTE_INSTANCE_PROFILE_* index -> compute slices (the CI profile id equals the index)
_CI_SLICES = {0: 1, 1: 2, 2: 3, 3: 4, 4: 7, 5: 8, 6: 6, 7: 1, 8: 7}
_CI_REV1 = 7  # 1_SLICE_REV1: only on GIs whose catalog entry names it (1g double-memory on Hopper)
_HELPERS = {
    "nvmlFriendlyObject",
    "nvmlStructToFriendlyObject",
    "nvmlFriendlyObjectToStruct",
    "nvmlExceptionClass",
}

F = TypeVar("F", bound=Callable[..., Any])


def _pynvml() -> Any:
    import pynvml

    return pynvml


def _fail(code: int) -> None:
    raise _pynvml().NVMLError(code)


def _nvml_call(fn: F) -> F:
    """Fault injection and the init check around every simulated NVML entry point."""
    name = fn.__name__

    @functools.wraps(fn)
    def wrapper(self: SimNvml, *args: Any, **kwargs: Any) -> Any:
        plan = self._faults if self._faults is not None else plan_from_env()
        code = plan.before_call(name)
        if code is not None:
            _fail(code)
        if self._init_count <= 0 and name not in ("nvmlInit", "nvmlInitWithFlags"):
            _fail(_pynvml().NVML_ERROR_UNINITIALIZED)
        return fn(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------- handles


def _encode(kind: int, gpu: int, gi: int = 0, ci: int = 0, serial: int = 0) -> int:
    return (_MAGIC << 56) | (kind << 52) | (gpu << 44) | (gi << 36) | (ci << 32) | (serial & 0xFFFFFFFF)


def _make(ptr_type: Any, addr: int) -> Any:
    return ctypes.cast(ctypes.c_void_p(addr), ptr_type)


def _decode(handle: Any) -> Tuple[int, int, int, int, int]:
    """(kind, gpu, gi, ci, serial) of a handle this simulator made; INVALID_ARGUMENT for anything else."""
    try:
        addr = handle if isinstance(handle, int) else ctypes.cast(handle, ctypes.c_void_p).value
    except (TypeError, ctypes.ArgumentError):
        addr = None
    if not addr or addr >> 56 != _MAGIC:
        _fail(_pynvml().NVML_ERROR_INVALID_ARGUMENT)
    return (addr >> 52) & 0xF, (addr >> 44) & 0xFF, (addr >> 36) & 0xFF, (addr >> 32) & 0xF, addr & 0xFFFFFFFF


def _deref(ref: Any) -> Any:
    """The ctypes object behind ``byref(x)``, ``pointer(x)`` or ``x`` itself."""
    obj = getattr(ref, "_obj", None)
    if obj is not None:
        return obj
    if hasattr(ref, "contents"):
        return ref.contents
    return ref


# ----------------------------------------------------------------------------------------- processes


def _start_time(pid: int) -> Optional[int]:
    """Field 22 of /proc/<pid>/stat (clock ticks since boot), None if the process is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            data = fh.read()
    except OSError:
        return None
    fields = data[data.rfind(")") + 2 :].split()
    if not fields or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def live_processes(gpu: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Attached processes of a GPU entry that still run (same pid and start time as when attached)."""
    live = []
    for proc in gpu.get("processes", []):
        started = _start_time(proc["pid"])
        if started is not None and (proc.get("start_time") is None or proc["start_time"] == started):
            live.append(proc)
    return live


def _prune(gpu: Dict[str, Any]) -> None:
    gpu["processes"] = live_processes(gpu)


def attach_process(state_path: str, mig_uuid: str, pid: int) -> Dict[str, Any]:
    """Record that ``pid`` runs on the MIG device ``mig_uuid`` (listed while the process lives)."""
    from slurm_gpu.core.errors import BadInputError

    started = _start_time(pid)
    if started is None:
        raise BadInputError(f"process {pid} does not run", part=str(pid))
    with simstate.locked_state(state_path) as body:
        for gpu in body["gpus"]:
            for gi in gpu["gpu_instances"]:
                for ci in gi["compute_instances"]:
                    if ci["mig_uuid"] == mig_uuid:
                        _prune(gpu)
                        entry = {
                            "pid": pid,
                            "start_time": started,
                            "gi_id": gi["gi_id"],
                            "ci_id": ci["ci_id"],
                        }
                        gpu["processes"] = [p for p in gpu["processes"] if p["pid"] != pid] + [entry]
                        return dict(entry, gpu_index=gpu["index"])
    raise BadInputError(f"no MIG device {mig_uuid} in simulated state {state_path}", part=mig_uuid)


def detach_process(state_path: str, pid: int) -> bool:
    """Forget ``pid`` on every GPU; True if it was attached."""
    found = False
    with simstate.locked_state(state_path) as body:
        for gpu in body["gpus"]:
            kept = [p for p in gpu["processes"] if p["pid"] != pid]
            found = found or len(kept) != len(gpu["processes"])
            gpu["processes"] = kept
    return found


def reset_gpu(state_path: str, index: int) -> Tuple[int, int]:
    """Simulated GPU reset (``nvidia-smi -r``): the pending MIG mode becomes current, instances are lost.

    Raises ``pynvml.NVMLError`` IN_USE while processes run on the GPU. Returns (current, pending).
    """
    with simstate.locked_state(state_path) as body:
        gpu = _gpu_entry(body, index)
        if live_processes(gpu):
            _fail(_pynvml().NVML_ERROR_IN_USE)
        simstate.clear_gpu(body, gpu)
        gpu["mig_current"] = gpu["mig_pending"]
        return gpu["mig_current"], gpu["mig_pending"]


# ----------------------------------------------------------------------------------------- state helpers


def _gpu_entry(body: Dict[str, Any], index: int) -> Dict[str, Any]:
    gpus = body["gpus"]
    if not 0 <= index < len(gpus):
        _fail(_pynvml().NVML_ERROR_INVALID_ARGUMENT)
    return gpus[index]


def _model(gpu: Dict[str, Any]) -> Any:
    """The GPU's profile table: the catalog's, unless the state gives this simulated driver its own.

    ``profile_overrides`` (``{"<profile_id>": {"placements": [[start, size], ...], "max_instances": n,
    "memory_mib": m} | null}``) stands for a driver whose table differs from the catalog file; null
    means the driver does not offer that profile.
    """
    from slurm_gpu.core.catalog import load_catalog

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


def _profile_by_id(gpu: Dict[str, Any], profile_id: int) -> Any:
    for p in _model(gpu).profiles:
        if p.profile_id == profile_id:
            return p
    _fail(_pynvml().NVML_ERROR_INVALID_ARGUMENT)


def _find_gi(gpu: Dict[str, Any], gi_id: int) -> Optional[Dict[str, Any]]:
    return next((g for g in gpu["gpu_instances"] if g["gi_id"] == gi_id), None)


def _lowest_free(used: List[int], first: int, last: int) -> Optional[int]:
    taken = set(used)
    return next((i for i in range(first, last + 1) if i not in taken), None)


def _gi_fit_error(gpu: Dict[str, Any], profile: Any, start: int, size: int) -> Optional[int]:
    """Why a GPU instance of ``profile`` at (start, size) cannot be created now; None if it can."""
    nv = _pynvml()
    model = _model(gpu)
    if (start, size) not in profile.placements:
        return nv.NVML_ERROR_INVALID_ARGUMENT
    gis = gpu["gpu_instances"]
    if len(gis) >= model.max_gpu_instances:
        return nv.NVML_ERROR_INSUFFICIENT_RESOURCES
    if sum(1 for g in gis if g["profile_id"] == profile.profile_id) >= profile.max_instances:
        return nv.NVML_ERROR_INSUFFICIENT_RESOURCES
    if any(start < g["start"] + g["size"] and g["start"] < start + size for g in gis):
        return nv.NVML_ERROR_INSUFFICIENT_RESOURCES
    others = [model.profile_by_id(g["profile_id"]) for g in gis]
    if sum(p.compute_slices for p in others) + profile.compute_slices > model.compute_slices_total:
        return nv.NVML_ERROR_INSUFFICIENT_RESOURCES
    # "+me.all" takes every media engine: it shares the GPU only with "-me" instances.
    if profile.variant == "+me.all" and any(p.variant != "-me" for p in others):
        return nv.NVML_ERROR_INSUFFICIENT_RESOURCES
    if profile.variant != "-me" and any(p.variant == "+me.all" for p in others):
        return nv.NVML_ERROR_INSUFFICIENT_RESOURCES
    return None


def _ci_profile_slices(model: Any, gi_profile: Any, ci_profile: int) -> Optional[int]:
    """Compute slices of CI profile ``ci_profile`` on a GI of ``gi_profile``; None if not supported there."""
    slices = _CI_SLICES.get(ci_profile)
    if slices is None or slices > gi_profile.compute_slices:
        return None
    if ci_profile == _CI_REV1 and gi_profile.ci_profile_index != _CI_REV1:
        return None
    if ci_profile in (5, 6, 8) and gi_profile.ci_profile_index != ci_profile:
        return None  # 8-slice, 6-slice and NVL CI profiles exist only where the catalog names them
    return slices


class SimNvml:
    """The pynvml functions ``NvmlDriver`` uses, answered from the state file ``state_path``.

    ``faults`` overrides ``SLURM_GPU_SIM_FAULTS`` for this instance (same syntax, own call counters).
    """

    def __init__(self, state_path: str, faults: Optional[str] = None):
        self.state_path = os.path.abspath(state_path)
        self._faults: Optional[FaultPlan] = FaultPlan(parse_faults(faults)) if faults is not None else None
        self._init_count = 0

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        value = getattr(_pynvml(), name)  # constants, structures, NVMLError and its subclasses
        if name.startswith("nvml") and callable(value) and name not in _HELPERS:

            def missing(*_args: Any, **_kwargs: Any) -> Any:
                _fail(_pynvml().NVML_ERROR_FUNCTION_NOT_FOUND)

            missing.__name__ = name
            return missing
        return value

    def __repr__(self) -> str:
        return f"SimNvml({self.state_path!r})"

    # ------------------------------------------------------------------ internals

    def _body(self) -> Dict[str, Any]:
        """The state for a read-only call (shared, never modified; changes go through ``_locked``)."""
        return simstate.read_state(self.state_path)

    def _require_root(self, body: Dict[str, Any]) -> None:
        if os.geteuid() != 0 and not body.get("allow_unprivileged"):
            _fail(_pynvml().NVML_ERROR_NO_PERMISSION)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[Dict[str, Any]]:
        """The state under the node lock, for a privileged change (checked before taking the lock)."""
        self._require_root(self._body())
        with simstate.locked_state(self.state_path) as body:
            yield body

    def _require_mig(self, gpu: Dict[str, Any]) -> None:
        if not gpu["mig_current"]:
            _fail(_pynvml().NVML_ERROR_NOT_SUPPORTED)

    def _device(self, body: Dict[str, Any], handle: Any) -> Dict[str, Any]:
        kind, index, _, _, _ = _decode(handle)
        if kind != _KIND_DEVICE:
            _fail(_pynvml().NVML_ERROR_INVALID_ARGUMENT)
        return _gpu_entry(body, index)

    def _gi(self, body: Dict[str, Any], handle: Any) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        kind, index, gi_id, _, serial = _decode(handle)
        gpu = _gpu_entry(body, index)
        gi = _find_gi(gpu, gi_id)
        if kind != _KIND_GI or gi is None or gi["serial"] != serial:
            _fail(_pynvml().NVML_ERROR_INVALID_ARGUMENT)
        return gpu, gi

    def _ci(self, body: Dict[str, Any], handle: Any, kind_wanted: int = _KIND_CI) -> Tuple[Dict, Dict, Dict]:
        kind, index, gi_id, ci_id, serial = _decode(handle)
        if kind != kind_wanted:
            _fail(_pynvml().NVML_ERROR_INVALID_ARGUMENT)
        gpu = _gpu_entry(body, index)
        gi = _find_gi(gpu, gi_id)
        ci = next((c for c in gi["compute_instances"] if c["ci_id"] == ci_id), None) if gi else None
        if ci is None or ci["serial"] != serial:
            _fail(_pynvml().NVML_ERROR_INVALID_ARGUMENT)
        return gpu, gi, ci  # type: ignore[return-value]

    def _any_device(self, body: Dict[str, Any], handle: Any) -> Tuple[Dict, Optional[Dict], Optional[Dict]]:
        """A parent GPU handle -> (gpu, None, None); a MIG device handle -> (gpu, gi, ci)."""
        kind = _decode(handle)[0]
        if kind == _KIND_MIG:
            return self._ci(body, handle, _KIND_MIG)
        return self._device(body, handle), None, None

    @staticmethod
    def _serial(body: Dict[str, Any]) -> int:
        serial = body["next_serial"]
        body["next_serial"] = serial % 0xFFFFFFFF + 1
        return serial

    def _gi_handle(self, gpu: Dict[str, Any], gi: Dict[str, Any]) -> Any:
        return _make(
            _pynvml().c_nvmlGpuInstance_t, _encode(_KIND_GI, gpu["index"], gi["gi_id"], 0, gi["serial"])
        )

    def _ci_handle(
        self, gpu: Dict[str, Any], gi: Dict[str, Any], ci: Dict[str, Any], kind: int = _KIND_CI
    ) -> Any:
        nv = _pynvml()
        ptr = nv.c_nvmlComputeInstance_t if kind == _KIND_CI else nv.c_nvmlDevice_t
        return _make(ptr, _encode(kind, gpu["index"], gi["gi_id"], ci["ci_id"], ci["serial"]))

    def _device_handle(self, index: int) -> Any:
        return _make(_pynvml().c_nvmlDevice_t, _encode(_KIND_DEVICE, index))

    # ------------------------------------------------------------------ library and devices

    @_nvml_call
    def nvmlInit(self) -> None:
        self._body()  # a missing or corrupt state file fails here (StateError naming it)
        self._init_count += 1

    @_nvml_call
    def nvmlInitWithFlags(self, flags: int) -> None:
        self._body()
        self._init_count += 1

    @_nvml_call
    def nvmlShutdown(self) -> None:
        self._init_count -= 1

    @_nvml_call
    def nvmlSystemGetDriverVersion(self) -> str:
        return "sim-" + str(simstate.FORMAT_VERSION)

    @_nvml_call
    def nvmlDeviceGetCount(self) -> int:
        return len(self._body()["gpus"])

    @_nvml_call
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        _gpu_entry(self._body(), index)
        return self._device_handle(index)

    @_nvml_call
    def nvmlDeviceGetName(self, handle: Any) -> str:
        gpu, gi, _ = self._any_device(self._body(), handle)
        if gi is None:
            return gpu["name"]
        return f"{gpu['name']} MIG {_profile_by_id(gpu, gi['profile_id']).name}"

    @_nvml_call
    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        gpu, _, ci = self._any_device(self._body(), handle)
        return ci["mig_uuid"] if ci is not None else gpu["uuid"]

    @_nvml_call
    def nvmlDeviceGetMinorNumber(self, handle: Any) -> int:
        return self._device(self._body(), handle)["minor"]

    @_nvml_call
    def nvmlDeviceGetPciInfo(self, handle: Any) -> Any:
        nv = _pynvml()
        gpu = self._device(self._body(), handle)
        bus_id = gpu["bus_id"].encode("ascii")
        domain, bus, rest = gpu["bus_id"].split(":")
        info = nv.nvmlPciInfo_t()
        info.busId = bus_id
        info.busIdLegacy = bus_id[-12:]
        info.domain, info.bus, info.device = int(domain, 16), int(bus, 16), int(rest.split(".")[0], 16)
        info.pciDeviceId = int(gpu["pci_device_id"], 16)
        return info

    nvmlDeviceGetPciInfo_v3 = nvmlDeviceGetPciInfo

    @_nvml_call
    def nvmlDeviceGetMemoryInfo(self, handle: Any, version: Optional[int] = None) -> Any:
        nv = _pynvml()
        gpu, gi, _ = self._any_device(self._body(), handle)
        if gi is None:
            total = gpu["memory_total_mib"]
        else:
            total = _profile_by_id(gpu, gi["profile_id"]).usable_memory_mib
        mem = nv.c_nvmlMemory_t() if not version else nv.c_nvmlMemory_v2_t()
        mem.total = total * 1024 * 1024
        mem.free = mem.total
        mem.used = 0
        return mem

    @_nvml_call
    def nvmlDeviceIsMigDeviceHandle(self, handle: Any) -> Any:
        return ctypes.c_uint(1 if _decode(handle)[0] == _KIND_MIG else 0)

    # ------------------------------------------------------------------ MIG mode

    @_nvml_call
    def nvmlDeviceGetMigMode(self, handle: Any) -> List[int]:
        gpu = self._device(self._body(), handle)
        return [gpu["mig_current"], gpu["mig_pending"]]

    @_nvml_call
    def nvmlDeviceSetMigMode(self, handle: Any, mode: int) -> int:
        """Returns the activation status (an NVML return code), as the real call does."""
        nv = _pynvml()
        if mode not in (nv.NVML_DEVICE_MIG_DISABLE, nv.NVML_DEVICE_MIG_ENABLE):
            _fail(nv.NVML_ERROR_INVALID_ARGUMENT)
        with self._locked() as body:
            gpu = self._device(body, handle)
            if gpu["mig_current"] == mode and gpu["mig_pending"] == mode:
                return nv.NVML_SUCCESS
            if gpu["gpu_instances"] or live_processes(gpu):
                return nv.NVML_ERROR_IN_USE
            gpu["mig_pending"] = mode
            if not _model(gpu).mode_change_requires_reset:
                gpu["mig_current"] = mode  # Hopper and newer switch without a reset
            return nv.NVML_SUCCESS

    # ------------------------------------------------------------------ GPU instance profiles

    def _gi_profile_info(self, gpu: Dict[str, Any], profile: Any, version: int) -> Any:
        nv = _pynvml()
        info = nv.c_nvmlGpuInstanceProfileInfo_v2_t() if version == 2 else nv.c_nvmlGpuInstanceProfileInfo_t()
        info.id = profile.profile_id
        info.isP2pSupported = 0
        info.sliceCount = profile.compute_slices
        info.instanceCount = profile.max_instances
        info.multiprocessorCount = profile.multiprocessors or 0
        info.copyEngineCount = profile.compute_slices
        info.memorySizeMB = profile.usable_memory_mib
        if version == 2:
            info.name = f"MIG {profile.name}".encode("ascii")
        return info

    @_nvml_call
    def nvmlDeviceGetGpuInstanceProfileInfo(self, handle: Any, profile: int, version: int = 2) -> Any:
        nv = _pynvml()
        gpu = self._device(self._body(), handle)
        if version not in (1, 2):
            _fail(nv.NVML_ERROR_FUNCTION_NOT_FOUND)
        if not 0 <= profile < nv.NVML_GPU_INSTANCE_PROFILE_COUNT:
            _fail(nv.NVML_ERROR_INVALID_ARGUMENT)
        self._require_mig(gpu)
        for p in _model(gpu).profiles:
            if p.nvml_profile_index == profile:
                return self._gi_profile_info(gpu, p, version)
        _fail(nv.NVML_ERROR_NOT_SUPPORTED)

    nvmlDeviceGetGpuInstanceProfileInfoV = nvmlDeviceGetGpuInstanceProfileInfo

    @_nvml_call
    def nvmlDeviceGetGpuInstanceProfileInfoById(self, handle: Any, profileId: int) -> Any:  # noqa: N803
        gpu = self._device(self._body(), handle)
        self._require_mig(gpu)
        return self._gi_profile_info(gpu, _profile_by_id(gpu, profileId), 2)

    nvmlDeviceGetGpuInstanceProfileInfoByIdV = nvmlDeviceGetGpuInstanceProfileInfoById

    @_nvml_call
    def nvmlDeviceGetGpuInstancePossiblePlacements(
        self,
        handle: Any,
        profileId: int,
        placementsRef: Any,
        countRef: Any,  # noqa: N803
    ) -> int:
        """The ``_v2`` call: every placement of the profile, free or not, into a caller-allocated array."""
        nv = _pynvml()
        body = self._body()
        self._require_root(body)
        gpu = self._device(body, handle)
        placements = _profile_by_id(gpu, profileId).placements
        count = _deref(countRef)
        if placementsRef is None:
            count.value = len(placements)
            return nv.NVML_SUCCESS
        if count.value < len(placements) or len(placementsRef) < len(placements):
            count.value = len(placements)
            _fail(nv.NVML_ERROR_INSUFFICIENT_SIZE)
        for i, (start, size) in enumerate(placements):
            placementsRef[i].start = start
            placementsRef[i].size = size
        count.value = len(placements)
        return nv.NVML_SUCCESS

    @_nvml_call
    def nvmlDeviceGetGpuInstanceRemainingCapacity(self, handle: Any, profileId: int) -> int:  # noqa: N803
        body = self._body()
        self._require_root(body)
        gpu = self._device(body, handle)
        self._require_mig(gpu)
        profile = _profile_by_id(gpu, profileId)
        # Greedy over the aligned placements is exact for one profile alone.
        trial = dict(gpu, gpu_instances=list(gpu["gpu_instances"]))
        count = 0
        for start, size in profile.placements:
            if _gi_fit_error(trial, profile, start, size) is None:
                trial["gpu_instances"].append(
                    {"profile_id": profile.profile_id, "start": start, "size": size}
                )
                count += 1
        return count

    # ------------------------------------------------------------------ GPU instances

    def _create_gi(self, handle: Any, profile_id: int, placement: Optional[Tuple[int, int]]) -> Any:
        nv = _pynvml()
        with self._locked() as body:
            gpu = self._device(body, handle)
            self._require_mig(gpu)
            _prune(gpu)
            profile = _profile_by_id(gpu, profile_id)
            if placement is None:  # the driver's own choice: the first placement that fits
                placement = next(
                    (pl for pl in profile.placements if _gi_fit_error(gpu, profile, *pl) is None), None
                )
                if placement is None:
                    _fail(nv.NVML_ERROR_INSUFFICIENT_RESOURCES)
            error = _gi_fit_error(gpu, profile, placement[0], placement[1])
            if error is not None:
                _fail(error)
            gi_id = _lowest_free([g["gi_id"] for g in gpu["gpu_instances"]], 1, _MAX_GI_ID)
            if gi_id is None:
                _fail(nv.NVML_ERROR_INSUFFICIENT_RESOURCES)
            gi = {
                "gi_id": gi_id,
                "profile_id": profile.profile_id,
                "start": placement[0],
                "size": placement[1],
                "serial": self._serial(body),
                "compute_instances": [],
            }
            gpu["gpu_instances"].append(gi)
            from slurm_gpu.devices import simdevfiles

            simdevfiles.create_cap(body, gpu, gi_id, None)
            return self._gi_handle(gpu, gi)

    @_nvml_call
    def nvmlDeviceCreateGpuInstanceWithPlacement(self, handle: Any, profileId: int, placement: Any) -> Any:  # noqa: N803
        pl = _deref(placement)
        try:
            start, size = int(pl.start), int(pl.size)
        except (AttributeError, TypeError):
            _fail(_pynvml().NVML_ERROR_INVALID_ARGUMENT)
        return self._create_gi(handle, profileId, (start, size))

    @_nvml_call
    def nvmlDeviceCreateGpuInstance(self, handle: Any, profileId: int) -> Any:  # noqa: N803
        return self._create_gi(handle, profileId, None)

    @_nvml_call
    def nvmlDeviceGetGpuInstances(
        self, handle: Any, profileId: int, gpuInstancesRef: Any, countRef: Any
    ) -> int:  # noqa: N803
        nv = _pynvml()
        body = self._body()
        self._require_root(body)
        gpu = self._device(body, handle)
        self._require_mig(gpu)
        _profile_by_id(gpu, profileId)
        if gpuInstancesRef is None:
            _fail(nv.NVML_ERROR_INVALID_ARGUMENT)
        found = sorted(
            (g for g in gpu["gpu_instances"] if g["profile_id"] == profileId), key=lambda g: g["gi_id"]
        )
        if len(gpuInstancesRef) < len(found):
            _fail(nv.NVML_ERROR_INSUFFICIENT_SIZE)
        for i, gi in enumerate(found):
            gpuInstancesRef[i] = self._gi_handle(gpu, gi)
        _deref(countRef).value = len(found)
        return nv.NVML_SUCCESS

    @_nvml_call
    def nvmlDeviceGetGpuInstanceById(self, handle: Any, gpuInstanceId: int) -> Any:  # noqa: N803
        nv = _pynvml()
        body = self._body()
        self._require_root(body)
        gpu = self._device(body, handle)
        self._require_mig(gpu)
        if not 0 <= gpuInstanceId <= _MAX_GI_ID:
            _fail(nv.NVML_ERROR_INVALID_ARGUMENT)
        gi = _find_gi(gpu, gpuInstanceId)
        if gi is None:
            _fail(nv.NVML_ERROR_NOT_FOUND)
        return self._gi_handle(gpu, gi)

    @_nvml_call
    def nvmlGpuInstanceGetInfo(self, gpuInstance: Any) -> Any:  # noqa: N803
        nv = _pynvml()
        gpu, gi = self._gi(self._body(), gpuInstance)
        info = nv.c_nvmlGpuInstanceInfo_t()
        info.device = self._device_handle(gpu["index"])
        info.id = gi["gi_id"]
        info.profileId = gi["profile_id"]
        info.placement = nv.c_nvmlGpuInstancePlacement_t(gi["start"], gi["size"])
        return info

    @_nvml_call
    def nvmlGpuInstanceDestroy(self, gpuInstance: Any) -> int:  # noqa: N803
        nv = _pynvml()
        with self._locked() as body:
            gpu, gi = self._gi(body, gpuInstance)
            _prune(gpu)
            if gi["compute_instances"] or any(p["gi_id"] == gi["gi_id"] for p in gpu["processes"]):
                _fail(nv.NVML_ERROR_IN_USE)
            gpu["gpu_instances"].remove(gi)
            from slurm_gpu.devices import simdevfiles

            simdevfiles.remove_cap(body, gpu, gi["gi_id"], None)
        return nv.NVML_SUCCESS

    # ------------------------------------------------------------------ compute instances

    @_nvml_call
    def nvmlGpuInstanceGetComputeInstanceProfileInfo(
        self,
        gpuInstance: Any,
        profile: int,
        engProfile: int,
        version: int = 2,  # noqa: N803
    ) -> Any:
        nv = _pynvml()
        gpu, gi = self._gi(self._body(), gpuInstance)
        if version not in (1, 2):
            _fail(nv.NVML_ERROR_FUNCTION_NOT_FOUND)
        if not 0 <= profile < nv.NVML_COMPUTE_INSTANCE_PROFILE_COUNT or engProfile != 0:
            _fail(nv.NVML_ERROR_INVALID_ARGUMENT)
        gi_profile = _profile_by_id(gpu, gi["profile_id"])
        slices = _ci_profile_slices(_model(gpu), gi_profile, profile)
        if slices is None:
            _fail(nv.NVML_ERROR_NOT_SUPPORTED)
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

    @_nvml_call
    def nvmlGpuInstanceCreateComputeInstance(self, gpuInstance: Any, profileId: int) -> Any:  # noqa: N803
        nv = _pynvml()
        with self._locked() as body:
            gpu, gi = self._gi(body, gpuInstance)
            model = _model(gpu)
            gi_profile = _profile_by_id(gpu, gi["profile_id"])
            slices = _ci_profile_slices(model, gi_profile, profileId)
            if slices is None:
                _fail(nv.NVML_ERROR_INVALID_ARGUMENT)
            cis = gi["compute_instances"]
            # first-fit contiguous compute-slice range inside the GI
            taken = {s for c in cis for s in range(c["start"], c["start"] + c["slices"])}
            start = next(
                (
                    s
                    for s in range(0, gi_profile.compute_slices - slices + 1)
                    if not taken.intersection(range(s, s + slices))
                ),
                None,
            )
            ci_id = _lowest_free([c["ci_id"] for c in cis], 0, _MAX_CI_ID)
            handle_index = _lowest_free(
                [c["handle_index"] for g in gpu["gpu_instances"] for c in g["compute_instances"]],
                0,
                model.compute_slices_total - 1,
            )
            if start is None or ci_id is None or handle_index is None:
                _fail(nv.NVML_ERROR_INSUFFICIENT_RESOURCES)
            ci = {
                "ci_id": ci_id,
                "profile_id": profileId,
                "start": start,
                "slices": slices,
                "mig_uuid": simstate.new_mig_uuid(),
                "handle_index": handle_index,
                "serial": self._serial(body),
            }
            cis.append(ci)
            from slurm_gpu.devices import simdevfiles

            simdevfiles.create_cap(body, gpu, gi["gi_id"], ci_id)
            return self._ci_handle(gpu, gi, ci)

    @_nvml_call
    def nvmlGpuInstanceGetComputeInstances(
        self,
        gpuInstance: Any,
        profileId: int,
        computeInstancesRef: Any,
        countRef: Any,  # noqa: N803
    ) -> int:
        nv = _pynvml()
        body = self._body()
        self._require_root(body)
        gpu, gi = self._gi(body, gpuInstance)
        if computeInstancesRef is None:
            _fail(nv.NVML_ERROR_INVALID_ARGUMENT)
        found = sorted(
            (c for c in gi["compute_instances"] if c["profile_id"] == profileId), key=lambda c: c["ci_id"]
        )
        if len(computeInstancesRef) < len(found):
            _fail(nv.NVML_ERROR_INSUFFICIENT_SIZE)
        for i, ci in enumerate(found):
            computeInstancesRef[i] = self._ci_handle(gpu, gi, ci)
        _deref(countRef).value = len(found)
        return nv.NVML_SUCCESS

    @_nvml_call
    def nvmlGpuInstanceGetComputeInstanceById(self, gpuInstance: Any, computeInstanceId: int) -> Any:  # noqa: N803
        nv = _pynvml()
        body = self._body()
        self._require_root(body)
        gpu, gi = self._gi(body, gpuInstance)
        ci = next((c for c in gi["compute_instances"] if c["ci_id"] == computeInstanceId), None)
        if ci is None:
            _fail(nv.NVML_ERROR_NOT_FOUND)
        return self._ci_handle(gpu, gi, ci)

    @_nvml_call
    def nvmlComputeInstanceGetInfo(self, computeInstance: Any) -> Any:  # noqa: N803
        nv = _pynvml()
        gpu, gi, ci = self._ci(self._body(), computeInstance)
        info = nv.c_nvmlComputeInstanceInfo_t()
        info.device = self._device_handle(gpu["index"])
        info.gpuInstance = self._gi_handle(gpu, gi)
        info.id = ci["ci_id"]
        info.profileId = ci["profile_id"]
        info.placement = nv.c_nvmlComputeInstancePlacement_t(ci["start"], ci["slices"])
        return info

    nvmlComputeInstanceGetInfo_v2 = nvmlComputeInstanceGetInfo

    @_nvml_call
    def nvmlComputeInstanceDestroy(self, computeInstance: Any) -> int:  # noqa: N803
        nv = _pynvml()
        with self._locked() as body:
            gpu, gi, ci = self._ci(body, computeInstance)
            _prune(gpu)
            if any(p["gi_id"] == gi["gi_id"] and p["ci_id"] == ci["ci_id"] for p in gpu["processes"]):
                _fail(nv.NVML_ERROR_IN_USE)
            gi["compute_instances"].remove(ci)
            from slurm_gpu.devices import simdevfiles

            simdevfiles.remove_cap(body, gpu, gi["gi_id"], ci["ci_id"])
        return nv.NVML_SUCCESS

    # ------------------------------------------------------------------ MIG devices

    @_nvml_call
    def nvmlDeviceGetMaxMigDeviceCount(self, handle: Any) -> int:
        gpu = self._device(self._body(), handle)
        return _model(gpu).compute_slices_total if gpu["mig_current"] else 0

    @_nvml_call
    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: Any, index: int) -> Any:
        nv = _pynvml()
        gpu = self._device(self._body(), handle)
        self._require_mig(gpu)
        if not 0 <= index < _model(gpu).compute_slices_total:
            _fail(nv.NVML_ERROR_INVALID_ARGUMENT)
        for gi in gpu["gpu_instances"]:
            for ci in gi["compute_instances"]:
                if ci["handle_index"] == index:
                    return self._ci_handle(gpu, gi, ci, _KIND_MIG)
        _fail(nv.NVML_ERROR_NOT_FOUND)

    @_nvml_call
    def nvmlDeviceGetGpuInstanceId(self, handle: Any) -> int:
        if _decode(handle)[0] != _KIND_MIG:
            _fail(_pynvml().NVML_ERROR_NOT_SUPPORTED)
        return self._ci(self._body(), handle, _KIND_MIG)[1]["gi_id"]

    @_nvml_call
    def nvmlDeviceGetComputeInstanceId(self, handle: Any) -> int:
        if _decode(handle)[0] != _KIND_MIG:
            _fail(_pynvml().NVML_ERROR_NOT_SUPPORTED)
        return self._ci(self._body(), handle, _KIND_MIG)[2]["ci_id"]

    @_nvml_call
    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle: Any) -> Any:
        gpu, _, _ = self._ci(self._body(), handle, _KIND_MIG)
        return self._device_handle(gpu["index"])

    @_nvml_call
    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> List[Any]:
        """Processes on one MIG device, or on a whole GPU for a parent handle (pynvml friendly objects)."""
        nv = _pynvml()
        gpu, gi, ci = self._any_device(self._body(), handle)
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
        return reset_gpu(self.state_path, index)

    def attach_process(self, mig_uuid: str, pid: int) -> Dict[str, Any]:
        return attach_process(self.state_path, mig_uuid, pid)
