"""``NvmlDriver``: the one implementation of ``Driver``, over pynvml or anything with its surface.

Traps of the NVML MIG API this code follows (see docs/devices.md):
- ``nvmlDeviceGetGpuInstanceProfileInfo`` takes a profile *index* (``NVML_GPU_INSTANCE_PROFILE_*``);
  everything else takes the profile *id* it returns. Profiles are enumerated by index until
  INVALID_ARGUMENT, skipping NOT_SUPPORTED.
- pynvml sets no ctypes argtypes: placements go in as ``ctypes.byref(c_nvmlGpuInstancePlacement_t(...))``,
  and the list/placement calls fill arrays the caller allocates (sized by ``instanceCount`` or by a
  count-first call).
- MIG device handle indices are sparse: NOT_FOUND at an index means "no device there", not the end.
- ``nvmlDeviceSetMigMode`` reports failure in its activation status, not by raising.
"""

from __future__ import annotations

import ctypes
import time
from typing import Any, Dict, Iterable, List, Optional, Tuple

from slurm_gpu.core.catalog import load_catalog
from slurm_gpu.core.errors import CatalogError, DriverError, UnknownModelError
from slurm_gpu.devices.api import CatalogDifference, GpuInfo, MigInstance, NvmlProfile
from slurm_gpu.devices.catalogcheck import catalog_differences
from slurm_gpu.devices.migminors import DEFAULT_MIG_MINORS, MigMinors

__all__ = ["NvmlDriver"]

_MIB = 1024 * 1024
_MAX_PROFILE_INDEX = 64  # a guard only: enumeration stops at INVALID_ARGUMENT long before
_MIG_DEVICE_WAIT_S = 1.0


class NvmlDriver:
    """GPU inventory and MIG instance management through NVML.

    ``nvml`` is a module with pynvml's surface (default: ``import pynvml``, done lazily); NVML is
    initialised on first use and shut down by ``close()``. Every NVML failure becomes ``DriverError``
    naming the call, the GPU and the arguments, with ``nvml_code`` set.
    """

    def __init__(self, nvml: Any = None, mig_minors_path: Optional[str] = DEFAULT_MIG_MINORS):
        if nvml is None:
            import pynvml

            nvml = pynvml
        self._nv = nvml
        self._minors = MigMinors(mig_minors_path)
        self._initialised = False
        # What cannot change while NVML stays initialised (handles, names, UUIDs, minors, a SKU's profile
        # table) is read once per driver: a hook walks the node once, not once per question.
        self._profiles: Dict[int, List[NvmlProfile]] = {}
        self._sku_profiles: Dict[Tuple[str, str], List[NvmlProfile]] = {}
        self._models: Dict[int, Optional[str]] = {}
        self._handles: Dict[int, Any] = {}
        self._fixed: Dict[int, Tuple[str, str, str, int, int]] = {}  # name, pci id, uuid, minor, MiB
        self._mig_seen: Dict[int, bool] = {}  # MIG mode as last read or set (gpus(), set_mig_mode)

    def __enter__(self) -> NvmlDriver:
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"NvmlDriver({getattr(self._nv, '__name__', None) or self._nv!r})"

    # ------------------------------------------------------------------ the one door to NVML

    def _init(self) -> None:
        if not self._initialised:
            self._raw("nvmlInit", (), "")
            self._initialised = True

    def _raw(self, name: str, args: Tuple[Any, ...], context: str,
             tolerate: Tuple[int, ...] = ()) -> Tuple[Any, Optional[int]]:
        """(result, None), or (None, code) when NVML answered one of the ``tolerate`` codes (an answer
        such as a sparse handle index: no error is built for it); DriverError for any other failure."""
        try:
            return getattr(self._nv, name)(*args), None
        except self._nv.NVMLError as exc:
            code = getattr(exc, "value", None)
            if code in tolerate:
                return None, code
            raise DriverError(f"{name}({context}) failed: {exc} (NVML code {code})", nvml_code=code) from exc

    def _call(self, name: str, *args: Any, ctx: str = "") -> Any:
        self._init()
        return self._raw(name, args, ctx)[0]

    def _try(
        self, name: str, *args: Any, ctx: str = "", tolerate: Iterable[int] = ()
    ) -> Tuple[Any, Optional[int]]:
        """(result, None), or (None, code) when NVML answered one of the ``tolerate`` codes."""
        self._init()
        return self._raw(name, args, ctx, tuple(tolerate))

    def _handle(self, gpu_index: int) -> Any:
        if gpu_index not in self._handles:
            self._handles[gpu_index] = self._call("nvmlDeviceGetHandleByIndex", gpu_index,
                                                  ctx=f"GPU {gpu_index}")
        return self._handles[gpu_index]

    def close(self) -> None:
        if self._initialised:
            self._initialised = False
            self._handles.clear()
            self._fixed.clear()
            self._profiles.clear()
            self._mig_seen.clear()
            self._raw("nvmlShutdown", (), "")

    # ------------------------------------------------------------------ inventory

    def _count(self) -> int:
        return int(self._call("nvmlDeviceGetCount"))

    def gpus(self) -> List[GpuInfo]:
        return [self._gpu(i) for i in range(self._count())]

    def _fixed_facts(self, i: int) -> Tuple[str, str, str, int, int]:
        """(name, PCI device id, UUID, minor, memory MiB) of GPU ``i``."""
        if i not in self._fixed:
            ctx, h = f"GPU {i}", self._handle(i)
            pci = self._call("nvmlDeviceGetPciInfo", h, ctx=ctx)
            self._fixed[i] = (
                _text(self._call("nvmlDeviceGetName", h, ctx=ctx)),
                f"0x{int(pci.pciDeviceId):08X}",
                _text(self._call("nvmlDeviceGetUUID", h, ctx=ctx)),
                int(self._call("nvmlDeviceGetMinorNumber", h, ctx=ctx)),
                int(self._call("nvmlDeviceGetMemoryInfo", h, ctx=ctx).total) // _MIB,
            )
        return self._fixed[i]

    def _gpu(self, i: int) -> GpuInfo:
        nv, ctx = self._nv, f"GPU {i}"
        name, pci_id, uuid, minor, memory = self._fixed_facts(i)
        mode, _ = self._try("nvmlDeviceGetMigMode", self._handle(i), ctx=ctx,
                            tolerate=(nv.NVML_ERROR_NOT_SUPPORTED,))
        current, pending = mode if mode is not None else (0, 0)
        self._mig_seen[i] = bool(current)
        info = GpuInfo(
            index=i,
            uuid=uuid,
            name=name,
            model=_recognise(name, pci_id),
            minor=minor,
            pci_device_id=pci_id,
            memory_total_mib=memory,
            mig_current=bool(current),
            mig_pending=bool(pending),
        )
        self._models[i] = info.model
        return info

    def _model_key(self, gpu_index: int) -> Optional[str]:
        if gpu_index not in self._models:
            self._gpu(gpu_index)
        return self._models[gpu_index]

    # ------------------------------------------------------------------ profiles

    def read_profiles(self, gpu_index: int) -> List[NvmlProfile]:
        """GPU-instance profiles NVML offers on this GPU (empty where unsupported; with MIG off, what the
        driver says: 580 on an H200 answers the whole table, tests/fixtures/real-gpu/)."""
        cached = self._profiles.get(gpu_index)
        if cached is not None:
            return list(cached)
        nv, ctx = self._nv, f"GPU {gpu_index}"
        h = self._handle(gpu_index)
        name, pci_id = self._fixed_facts(gpu_index)[:2]
        shared = self._sku_profiles.get((name, pci_id))
        on = self._mig_seen[gpu_index] if gpu_index in self._mig_seen else self._mig_mode_on(h, ctx)
        if shared is not None and on:
            # Every GPU of one SKU offers the same table: read it on the first, in MIG mode, only.
            self._profiles[gpu_index] = shared
            return list(shared)
        profiles = []
        for index in range(_MAX_PROFILE_INDEX):
            info, code = self._try(
                "nvmlDeviceGetGpuInstanceProfileInfo",
                h,
                index,
                ctx=f"{ctx}, profile index {index}",
                tolerate=(nv.NVML_ERROR_INVALID_ARGUMENT, nv.NVML_ERROR_NOT_SUPPORTED),
            )
            if code == nv.NVML_ERROR_INVALID_ARGUMENT:
                break
            if info is None:
                continue
            profiles.append(
                NvmlProfile(
                    profile_id=int(info.id),
                    nvml_profile_index=index,
                    slice_count=int(info.sliceCount),
                    memory_mib=int(info.memorySizeMB),
                    instance_count=int(info.instanceCount),
                    placements=self._placements(h, int(info.id), ctx),
                    name=_text(getattr(info, "name", b"")),
                )
            )
        self._profiles[gpu_index] = profiles
        if profiles:
            self._sku_profiles[(name, pci_id)] = profiles
        return list(profiles)

    def _placements(self, h: Any, profile_id: int, ctx: str) -> Tuple[Tuple[int, int], ...]:
        nv = self._nv
        ctx = f"{ctx}, profile_id={profile_id}"
        count = ctypes.c_uint(0)
        self._call(
            "nvmlDeviceGetGpuInstancePossiblePlacements", h, profile_id, None, ctypes.byref(count), ctx=ctx
        )
        if count.value == 0:
            return ()
        array = (nv.c_nvmlGpuInstancePlacement_t * count.value)()
        self._call(
            "nvmlDeviceGetGpuInstancePossiblePlacements", h, profile_id, array, ctypes.byref(count), ctx=ctx
        )
        return tuple((int(array[k].start), int(array[k].size)) for k in range(count.value))

    def _profile(self, gpu_index: int, profile_id: int) -> NvmlProfile:
        for p in self.read_profiles(gpu_index):
            if p.profile_id == profile_id:
                return p
        raise DriverError(
            f"GPU {gpu_index} offers no GPU instance profile id {profile_id} "
            f"(offered: {[p.profile_id for p in self.read_profiles(gpu_index)]})",
            nvml_code=self._nv.NVML_ERROR_INVALID_ARGUMENT,
        )

    def check_catalog(self, gpu_index: int) -> List[CatalogDifference]:
        """Differences between NVML's profiles and the catalog entry of the GPU's model (NVML wins)."""
        gpu = self._gpu(gpu_index)
        if gpu.model is None:
            return [CatalogDifference(gpu_index, gpu.name, None, "model", None, gpu.name)]
        offered = self.read_profiles(gpu_index)
        if not offered and not gpu.mig_current:
            return []  # a driver that answers the table only in MIG mode: nothing to compare yet
        return catalog_differences(gpu_index, load_catalog().model(gpu.model), offered)

    def probe(self) -> Dict[str, Any]:
        """Every read-only NVML answer about MIG on this node, error codes kept (``devices.probe``)."""
        from slurm_gpu.devices.probe import probe

        return probe(self._nv, self._minors.path or "")

    # ------------------------------------------------------------------ instances

    def _mig_mode_on(self, h: Any, ctx: str) -> bool:
        mode, _ = self._try("nvmlDeviceGetMigMode", h, ctx=ctx, tolerate=(self._nv.NVML_ERROR_NOT_SUPPORTED,))
        return bool(mode and mode[0])

    def _mig_devices(self, h: Any, ctx: str) -> Dict[Tuple[int, int], Tuple[str, Any]]:
        """(gi_id, ci_id) -> (MIG UUID, MIG device handle); the handle indices are sparse."""
        nv = self._nv
        found: Dict[Tuple[int, int], Tuple[str, Any]] = {}
        for k in range(int(self._call("nvmlDeviceGetMaxMigDeviceCount", h, ctx=ctx))):
            mig, _ = self._try(
                "nvmlDeviceGetMigDeviceHandleByIndex",
                h,
                k,
                ctx=f"{ctx}, index {k}",
                tolerate=(nv.NVML_ERROR_NOT_FOUND,),
            )
            if mig is None:
                continue
            mctx = f"{ctx}, MIG device {k}"
            gi_id = int(self._call("nvmlDeviceGetGpuInstanceId", mig, ctx=mctx))
            ci_id = int(self._call("nvmlDeviceGetComputeInstanceId", mig, ctx=mctx))
            found[(gi_id, ci_id)] = (_text(self._call("nvmlDeviceGetUUID", mig, ctx=mctx)), mig)
        return found

    def _gpu_instances(self, gpu_index: int, h: Any, ctx: str) -> List[Tuple[int, int, int, int]]:
        """(gi_id, profile_id, start, size) of every GPU instance, via per-profile caller-sized arrays."""
        nv = self._nv
        result = []
        for profile in self.read_profiles(gpu_index):
            pctx = f"{ctx}, profile_id={profile.profile_id}"
            array = (nv.c_nvmlGpuInstance_t * max(profile.instance_count, 1))()
            count = ctypes.c_uint(0)
            self._call(
                "nvmlDeviceGetGpuInstances", h, profile.profile_id, array, ctypes.byref(count), ctx=pctx
            )
            for k in range(count.value):
                info = self._call("nvmlGpuInstanceGetInfo", array[k], ctx=pctx)
                result.append(
                    (int(info.id), int(info.profileId), int(info.placement.start), int(info.placement.size))
                )
        return result

    def instances(self, gpu_index: Optional[int] = None) -> List[MigInstance]:
        """Every GPU instance (with its compute instances) on one GPU or all, ordered by GPU and start."""
        indices = [gpu_index] if gpu_index is not None else list(range(self._count()))
        result: List[MigInstance] = []
        for i in indices:
            ctx = f"GPU {i}"
            h = self._handle(i)
            if not self._mig_mode_on(h, ctx):
                continue
            gis = sorted(self._gpu_instances(i, h, ctx), key=lambda g: g[2])
            if not gis:
                continue  # no GPU instance, so no MIG device to walk
            gpu_uuid, minor = self._fixed_facts(i)[2:4]
            devices = self._mig_devices(h, ctx)
            for gi_id, profile_id, start, size in gis:
                # a GI without a CI (a crash leftover) is listed once, with ci_id None
                ci_ids: List[Optional[int]] = [ci for (g, ci) in sorted(devices) if g == gi_id] or [None]
                for ci_id in ci_ids:
                    result.append(
                        MigInstance(
                            gpu_index=i,
                            gpu_uuid=gpu_uuid,
                            gi_id=gi_id,
                            ci_id=ci_id,
                            profile_id=profile_id,
                            start=start,
                            size=size,
                            mig_uuid=devices[(gi_id, ci_id)][0] if ci_id is not None else None,
                            gi_cap_minor=self._minors.cap_minor(minor, gi_id),
                            ci_cap_minor=(
                                self._minors.cap_minor(minor, gi_id, ci_id) if ci_id is not None else None
                            ),
                        )
                    )
        return result

    def create(self, gpu_index: int, profile_id: int, start: int) -> MigInstance:
        """GPU instance of ``profile_id`` at ``start`` (never the driver's choice), then its CI."""
        nv = self._nv
        ctx = f"GPU {gpu_index}"
        h = self._handle(gpu_index)
        if not self._mig_mode_on(h, ctx):
            raise DriverError(f"{ctx}: MIG mode is not enabled", nvml_code=nv.NVML_ERROR_NOT_SUPPORTED)
        profile = self._profile(gpu_index, profile_id)
        sizes = [z for s, z in profile.placements if s == start] or [z for _, z in profile.placements] or [0]
        placement = nv.c_nvmlGpuInstancePlacement_t(start, sizes[0])
        gctx = f"{ctx}, profile_id={profile_id}, start={start}, size={sizes[0]}"
        gi = self._call(
            "nvmlDeviceCreateGpuInstanceWithPlacement", h, profile_id, ctypes.byref(placement), ctx=gctx
        )
        gi_info = self._call("nvmlGpuInstanceGetInfo", gi, ctx=gctx)
        gi_id = int(gi_info.id)
        try:
            ci_id = self._create_compute_instance(gpu_index, profile, gi, f"{ctx}, gi_id={gi_id}")
        except DriverError as exc:
            try:
                self._call("nvmlGpuInstanceDestroy", gi, ctx=f"{ctx}, gi_id={gi_id}")
            except DriverError as undo:
                raise DriverError(
                    f"{exc}; undoing GPU instance {gi_id} also failed: {undo}", exc.nvml_code
                ) from exc
            raise
        gpu_uuid, minor = self._fixed_facts(gpu_index)[2:4]
        return MigInstance(
            gpu_index=gpu_index,
            gpu_uuid=gpu_uuid,
            gi_id=gi_id,
            ci_id=ci_id,
            profile_id=int(gi_info.profileId),
            start=int(gi_info.placement.start),
            size=int(gi_info.placement.size),
            mig_uuid=self._wait_mig_uuid(h, gi_id, ci_id, ctx),
            gi_cap_minor=self._minors.cap_minor(minor, gi_id),
            ci_cap_minor=self._minors.cap_minor(minor, gi_id, ci_id),
        )

    def _ci_profile_candidates(self, gpu_index: int, profile_id: int) -> List[int]:
        """CI profile indices to try for the CI spanning a GI: the catalog's first, then all of them."""
        indices = list(range(int(self._nv.NVML_COMPUTE_INSTANCE_PROFILE_COUNT)))
        key = self._model_key(gpu_index)
        if key is not None:
            try:
                known = load_catalog().model(key).profile_by_id(profile_id).ci_profile_index
                indices.remove(known)
                indices.insert(0, known)
            except (CatalogError, ValueError):
                pass
        return indices

    def _ci_profile_info(self, gi: Any, index: int, ctx: str) -> Any:
        """Shared-engine CI profile ``index`` of ``gi``; None where this GPU does not offer it."""
        nv = self._nv
        info, _ = self._try(
            "nvmlGpuInstanceGetComputeInstanceProfileInfo",
            gi,
            index,
            nv.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED,
            ctx=f"{ctx}, ci profile index {index}",
            tolerate=(nv.NVML_ERROR_NOT_SUPPORTED, nv.NVML_ERROR_INVALID_ARGUMENT),
        )
        return info

    def _create_compute_instance(self, gpu_index: int, profile: NvmlProfile, gi: Any, ctx: str) -> int:
        nv = self._nv
        for index in self._ci_profile_candidates(gpu_index, profile.profile_id):
            info = self._ci_profile_info(gi, index, ctx)
            if info is None or int(info.sliceCount) != profile.slice_count:
                continue
            cctx = f"{ctx}, ci profile_id={int(info.id)}"
            ci = self._call("nvmlGpuInstanceCreateComputeInstance", gi, int(info.id), ctx=cctx)
            return int(self._call("nvmlComputeInstanceGetInfo", ci, ctx=cctx).id)
        raise DriverError(
            f"{ctx}: no compute instance profile spans the GPU instance ({profile.slice_count} slices)",
            nvml_code=nv.NVML_ERROR_NOT_SUPPORTED,
        )

    def _wait_mig_uuid(self, h: Any, gi_id: int, ci_id: int, ctx: str) -> str:
        deadline = time.monotonic() + _MIG_DEVICE_WAIT_S
        while True:
            found = self._mig_devices(h, ctx).get((gi_id, ci_id))
            if found is not None:
                return found[0]
            if time.monotonic() >= deadline:
                raise DriverError(
                    f"{ctx}: no MIG device for gi_id={gi_id} ci_id={ci_id} after creating it",
                    nvml_code=self._nv.NVML_ERROR_NOT_FOUND,
                )
            time.sleep(0.05)

    def _compute_instances(self, gi: Any, ctx: str) -> List[Any]:
        nv = self._nv
        handles: Dict[int, Any] = {}
        for index in range(int(nv.NVML_COMPUTE_INSTANCE_PROFILE_COUNT)):
            info = self._ci_profile_info(gi, index, ctx)
            if info is None:
                continue
            array = (nv.c_nvmlComputeInstance_t * max(int(info.instanceCount), 1))()
            count = ctypes.c_uint(0)
            cctx = f"{ctx}, ci profile_id={int(info.id)}"
            self._call(
                "nvmlGpuInstanceGetComputeInstances", gi, int(info.id), array, ctypes.byref(count), ctx=cctx
            )
            for k in range(count.value):
                ci_id = int(self._call("nvmlComputeInstanceGetInfo", array[k], ctx=cctx).id)
                handles.setdefault(ci_id, array[k])
        return [handles[k] for k in sorted(handles)]

    def destroy(self, gpu_index: int, gi_id: int) -> None:
        """Destroy the compute instances of GPU instance ``gi_id``, then the GPU instance itself."""
        ctx = f"GPU {gpu_index}, gi_id={gi_id}"
        h = self._handle(gpu_index)
        gi = self._call("nvmlDeviceGetGpuInstanceById", h, gi_id, ctx=ctx)
        for ci in self._compute_instances(gi, ctx):
            self._call("nvmlComputeInstanceDestroy", ci, ctx=ctx)
        self._call("nvmlGpuInstanceDestroy", gi, ctx=ctx)

    def processes(self, gpu_index: int, gi_id: int, ci_id: int) -> List[int]:
        """PIDs running on MIG device (gi_id, ci_id) of the GPU."""
        ctx = f"GPU {gpu_index}, gi_id={gi_id}, ci_id={ci_id}"
        h = self._handle(gpu_index)
        found = self._mig_devices(h, ctx).get((gi_id, ci_id))
        if found is None:
            raise DriverError(f"{ctx}: no such MIG device", nvml_code=self._nv.NVML_ERROR_NOT_FOUND)
        procs = self._call("nvmlDeviceGetComputeRunningProcesses", found[1], ctx=ctx)
        return sorted(int(p.pid) for p in procs)

    # ------------------------------------------------------------------ MIG mode

    def set_mig_mode(self, gpu_index: int, enabled: bool) -> Tuple[bool, bool, int]:
        """Request MIG on/off; returns (current, pending, activation_status).

        Ampere keeps the new mode pending until a GPU reset; Hopper and newer switch at once. A non-success
        activation status that left the pending mode unchanged (instances or clients present) is an
        error.
        """
        nv = self._nv
        mode = nv.NVML_DEVICE_MIG_ENABLE if enabled else nv.NVML_DEVICE_MIG_DISABLE
        ctx = f"GPU {gpu_index}, mode={mode}"
        h = self._handle(gpu_index)
        status = int(self._call("nvmlDeviceSetMigMode", h, mode, ctx=ctx))
        self._profiles.pop(gpu_index, None)
        current, pending = self._call("nvmlDeviceGetMigMode", self._handle(gpu_index), ctx=ctx)
        self._mig_seen[gpu_index] = bool(current)
        if status != nv.NVML_SUCCESS and int(pending) != mode:
            raise DriverError(
                f"nvmlDeviceSetMigMode({ctx}): activation status {nv.NVMLError(status)} "
                f"(NVML code {status}); MIG mode stays current={current} pending={pending}",
                nvml_code=status,
            )
        return bool(current), bool(pending), status

    # ------------------------------------------------------------------ capability minors

    def cap_minors(self, gpu_minor: int) -> Tuple[int, ...]:
        """Every GPU- and compute-instance capability minor the driver reserves for GPU ``gpu_minor``
        (from mig-minors: they exist before any instance does); empty where mig-minors is unreadable."""
        return self._minors.of_gpu(gpu_minor)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _recognise(name: str, pci_device_id: str) -> Optional[str]:
    try:
        return load_catalog().recognise(name, pci_device_id).key
    except UnknownModelError:
        return None
