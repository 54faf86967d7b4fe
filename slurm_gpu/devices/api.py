"""The GPU driver interface: what exists on a node's GPUs, and creating / destroying MIG instances.

One implementation, ``slurm_gpu.devices.nvml.NvmlDriver``, talks NVML through a pynvml-like module: the
real ``pynvml`` on GPU nodes, or ``slurm_gpu.devices.simnvml.SimNvml`` (a simulated NVML over a state
file) everywhere else, so the same code path runs in tests, on the test cluster and in production.

>>> inst = MigInstance(0, "GPU-1", gi_id=1, ci_id=0, profile_id=19, start=6, size=1,
...                    mig_uuid="MIG-5c3a...", gi_cap_minor=12, ci_cap_minor=13)
>>> inst.to_dict()["start"], inst.end
(6, 7)

Nothing here imports pynvml or the simulator: ``slurm_gpu.devices.open.open_driver`` opens one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Protocol, Tuple

__all__ = [
    "GpuInfo",
    "MigInstance",
    "NvmlProfile",
    "CatalogDifference",
    "Driver",
    "DRIVER_KINDS",
]

DRIVER_KINDS = ("nvml", "sim")


@dataclass(frozen=True)
class GpuInfo:
    """A physical GPU as NVML reports it. ``model`` is the catalog key, or None for a model it lacks.

    ``memory_total_mib`` is ``nvmlDeviceGetMemoryInfo().total`` in MiB; ``mig_current``/``mig_pending``
    are ``nvmlDeviceGetMigMode`` (False on GPUs without MIG), like ``nvidia-smi -q -d MIG``.
    """

    index: int
    uuid: str
    name: str
    model: Optional[str]
    minor: int
    pci_device_id: str  # nvmlPciInfo_t.pciDeviceId as "0x233010DE"
    memory_total_mib: int
    mig_current: bool
    mig_pending: bool

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MigInstance:
    """A GPU instance and (normally) the compute instance spanning it: what exists, with driver ids.

    ``start``/``size`` are the GI placement in memory slices. ``ci_id``/``mig_uuid`` are None for a GPU
    instance without a compute instance (a half-created instance left by a crash). The capability
    minors are those of ``/dev/nvidia-caps/nvidia-cap<minor>`` (None where mig-minors is unreadable).
    """

    gpu_index: int
    gpu_uuid: str
    gi_id: int
    ci_id: Optional[int]
    profile_id: int
    start: int
    size: int
    mig_uuid: Optional[str]
    gi_cap_minor: Optional[int] = None
    ci_cap_minor: Optional[int] = None

    @property
    def end(self) -> int:
        return self.start + self.size

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class NvmlProfile:
    """A GPU-instance profile as NVML reports it (``nvmlDeviceGetGpuInstanceProfileInfo`` + placements).

    ``slice_count`` is NVML's ``sliceCount`` (compute slices); placements are (start, size) in memory slices.
    """

    profile_id: int
    nvml_profile_index: int
    slice_count: int
    memory_mib: int
    instance_count: int
    placements: Tuple[Tuple[int, int], ...]
    name: str = ""

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["placements"] = [{"start": s, "size": z} for s, z in self.placements]
        return d


@dataclass(frozen=True)
class CatalogDifference:
    """One way the catalog disagrees with NVML on a GPU (NVML wins)."""

    gpu_index: int
    model: str
    profile_id: Optional[int]
    field: str
    catalog: Any
    nvml: Any

    def __str__(self) -> str:
        what = f"profile id {self.profile_id}" if self.profile_id is not None else "GPU"
        head = f"GPU {self.gpu_index} ({self.model}) {what}: {self.field}"
        return f"{head} catalog={self.catalog!r} nvml={self.nvml!r}"

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


class Driver(Protocol):
    """What the node agent needs from the GPU driver; failures are ``DriverError`` with ``nvml_code``."""

    def gpus(self) -> List[GpuInfo]: ...

    def instances(self, gpu_index: Optional[int] = None) -> List[MigInstance]: ...

    def create(self, gpu_index: int, profile_id: int, start: int) -> MigInstance:
        """GPU instance at exactly ``start``, then the CI spanning it; no GI left if the CI fails."""
        ...

    def destroy(self, gpu_index: int, gi_id: int) -> None:
        """Compute instances first, then the GPU instance; IN_USE (19) while processes run."""
        ...

    def processes(self, gpu_index: int, gi_id: int, ci_id: int) -> List[int]: ...

    def set_mig_mode(self, gpu_index: int, enabled: bool) -> Tuple[bool, bool, int]:
        """Returns (current, pending, activation_status)."""
        ...

    def read_profiles(self, gpu_index: int) -> List[NvmlProfile]: ...

    def check_catalog(self, gpu_index: int) -> List[CatalogDifference]: ...

    def cap_minors(self, gpu_minor: int) -> Tuple[int, ...]:
        """All capability minors of a GPU's instances, existing or not (mig-minors)."""
        ...

    def close(self) -> None: ...
