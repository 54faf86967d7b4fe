"""Processes on the simulated GPUs, and the GPU reset they block (simulator controls, not NVML calls).

A real driver knows which processes hold a MIG device open; the simulator is told
(``attach_process``, ``slurm-gpu sim attach``) and forgets a process once it has exited or its pid was
reused (``simstate.live_processes`` compares start times). Live processes make destroying their
instance fail with IN_USE, like on a real GPU, and block ``reset_gpu``.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from slurm_gpu.core.errors import BadInputError
from slurm_gpu.devices import simstate
from slurm_gpu.devices.simhandles import fail, gpu_entry, nvml

__all__ = ["attach_process", "detach_process", "hold_gpu", "release_gpu", "prune", "reset_gpu"]


def prune(gpu: Dict[str, Any]) -> None:
    """Forget the processes of a GPU entry that no longer run."""
    gpu["processes"] = simstate.live_processes(gpu)


def attach_process(state_path: str, mig_uuid: str, pid: int) -> Dict[str, Any]:
    """Record that ``pid`` runs on the MIG device ``mig_uuid`` (listed while the process lives)."""
    started = simstate.process_start_time(pid)
    if started is None:
        raise BadInputError(f"process {pid} does not run", part=str(pid))
    with simstate.locked_state(state_path) as body:
        for gpu in body["gpus"]:
            for gi in gpu["gpu_instances"]:
                for ci in gi["compute_instances"]:
                    if ci["mig_uuid"] == mig_uuid:
                        prune(gpu)
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


def hold_gpu(state_path: str, index: int, pid: int, what: str = "hwloc") -> Dict[str, Any]:
    """Record that ``pid`` holds GPU ``index`` open without a MIG device, as hwloc's OpenCL/NVML probe
    in a PMIx-launched step, DCGM or a monitor does: while it runs, creating a GPU instance and changing
    the MIG mode answer IN_USE, and a GPU reset is refused."""
    started = simstate.process_start_time(pid)
    if started is None:
        raise BadInputError(f"process {pid} does not run", part=str(pid))
    with simstate.locked_state(state_path) as body:
        gpu = gpu_entry(body, index)
        entry = {"pid": pid, "start_time": started, "what": what}
        gpu["holders"] = [h for h in simstate.live_holders(gpu) if h["pid"] != pid] + [entry]
        return dict(entry, gpu_index=index)


def release_gpu(state_path: str, index: int, pid: Optional[int] = None) -> int:
    """Forget the holders of GPU ``index`` (only ``pid`` when given); returns how many were dropped."""
    with simstate.locked_state(state_path) as body:
        gpu = gpu_entry(body, index)
        before = gpu.get("holders", [])
        gpu["holders"] = [h for h in before if pid is not None and h["pid"] != pid]
        return len(before) - len(gpu["holders"])


def reset_gpu(state_path: str, index: int) -> Tuple[int, int]:
    """Simulated GPU reset (``nvidia-smi -r``): the pending MIG mode becomes current, instances are lost.

    Raises ``pynvml.NVMLError`` IN_USE unless the GPU is idle: no process on an instance and no holder
    of its device file (an Ampere mode change needs both). Returns (current, pending).
    """
    with simstate.locked_state(state_path) as body:
        gpu = gpu_entry(body, index)
        if simstate.live_processes(gpu) or simstate.live_holders(gpu):
            fail(nvml().NVML_ERROR_IN_USE)
        simstate.clear_gpu(body, gpu)
        gpu["mig_current"] = gpu["mig_pending"]
        return gpu["mig_current"], gpu["mig_pending"]
