"""Destroying a GPU instance on a node: revoke its capability files, then destroy it, waiting while the
processes of a job that just ended leave it. Used by release and by reconcile."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, List, Optional, Sequence

from slurm_gpu.core.errors import DriverError

if TYPE_CHECKING:
    from slurm_gpu.devices.api import Driver, MigInstance

__all__ = ["NODE_FAULT_CODES", "NVML_ERROR_NOT_FOUND", "NVML_ERROR_IN_USE", "destroy_gi", "create_retrying",
           "busy_reason"]

NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_IN_USE = 19
# NVML errors that say the GPU or driver is broken, not that slices are taken (nvml.h): INSUFFICIENT_POWER,
# DRIVER_NOT_LOADED, IRQ_ISSUE, LIBRARY_NOT_FOUND, CORRUPTED_INFOROM, GPU_IS_LOST, RESET_REQUIRED,
# OPERATING_SYSTEM, LIB_RM_VERSION_MISMATCH, UNKNOWN. A node hitting one drains itself with the reason.
NODE_FAULT_CODES = frozenset({8, 9, 11, 12, 14, 15, 16, 17, 18, 999})


def destroy_gi(driver: Driver, gpu_index: int, gi_id: int, insts: Sequence[MigInstance], caps_dir: str,
               wait_s: float, poll_s: float, problems: List[str], busy: Optional[List[str]] = None) -> bool:
    """Destroy one GPU instance (``insts``: its entries, one per compute instance). While processes hold
    it (IN_USE): with ``busy``, name it there and return at once (the caller retries without the node
    lock); else wait up to ``wait_s``. A broken GPU raises: the hook drains the node with the reason."""
    from slurm_gpu.devices import access

    access.revoke(insts, caps_dir)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            driver.destroy(gpu_index, gi_id)
            return True
        except DriverError as exc:
            if exc.nvml_code == NVML_ERROR_NOT_FOUND:
                return True
            if exc.nvml_code in NODE_FAULT_CODES:
                raise
            in_use = exc.nvml_code == NVML_ERROR_IN_USE
            if in_use and busy is not None:
                busy.append(f"GPU {gpu_index} gi {gi_id}")
            if not in_use or busy is not None or time.monotonic() >= deadline:
                pids = _pids(driver, gpu_index, gi_id, insts)
                problems.append(f"GPU {gpu_index} gi {gi_id} not destroyed: {exc}"
                                + (f" (processes {pids})" if pids else ""))
                return False
        time.sleep(poll_s)


def _pids(driver: Driver, gpu_index: int, gi_id: int, insts: Sequence[MigInstance]) -> List[int]:
    pids: List[int] = []
    for i in insts:
        if i.ci_id is None:
            continue
        try:
            pids.extend(driver.processes(gpu_index, gi_id, i.ci_id))
        except DriverError:
            pass
    return pids


def create_retrying(driver: Driver, gpu_index: int, profile_id: int, start: int, wait_s: float,
                    poll_s: float) -> MigInstance:
    """Create one instance; while another client holds the GPU (IN_USE: hwloc probing ``/dev/nvidia*`` in a
    job step, DCGM, a monitor), retry for up to ``wait_s``: such holds are usually brief. Other errors,
    and IN_USE past the deadline, are raised for the caller to requeue the job."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return driver.create(gpu_index, profile_id, start)
        except DriverError as exc:
            if exc.nvml_code != NVML_ERROR_IN_USE or time.monotonic() >= deadline:
                raise
        time.sleep(poll_s)


def busy_reason(exc: DriverError) -> str:
    """What a job's admin comment says when the GPU was held by another client (empty otherwise)."""
    if exc.nvml_code != NVML_ERROR_IN_USE:
        return ""
    return ("GPU in use by another client (a process holds /dev/nvidia*: hwloc/PMIx without "
            "HWLOC_COMPONENTS=-opencl, DCGM or a monitor); retried, then requeued")
