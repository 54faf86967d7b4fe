"""dcgm-exporter's HPC job mapping files: ``<dir>/<gpu>.<gi_id>`` holding the id of the job that owns that
MIG instance, so DCGM's own per-instance metrics carry ``hpc_job``.

dcgm-exporter (``--hpc-job-mapping-dir DIR``, 4.5.3 and later) reads every file of ``DIR`` whose name is
``<gpu index>.<GPU instance id>`` and labels that instance's series with each job id it holds, one per
line. The Prolog writes the file once the instance exists, the Epilog (and reconcile) removes it when the
GPU instance is destroyed, both under the node lock. Off unless ``monitoring.hpc_job_mapping_dir`` is set.
A file that cannot be written or removed is a problem of the outcome, never a failed job or a drain.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, List, Optional, Sequence

from slurm_gpu.core.errors import SlurmGpuError

if TYPE_CHECKING:
    from slurm_gpu.devices.api import MigInstance

__all__ = ["mapping_path", "write_mappings", "remove_mapping"]


def mapping_path(directory: str, gpu_index: int, gi_id: int) -> str:
    return os.path.join(directory, f"{int(gpu_index)}.{int(gi_id)}")


def write_mappings(directory: Optional[str], job_id: str, instances: Sequence[MigInstance],
                   problems: List[str]) -> None:
    """One file per GPU instance of the job (atomic: dcgm-exporter never reads half a file)."""
    if not directory:
        return
    from slurm_gpu.state.fsutil import atomic_write

    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        for inst in instances:
            atomic_write(mapping_path(directory, inst.gpu_index, inst.gi_id), f"{job_id}\n", mode=0o644,
                         durable=False)  # lasts as long as the job, which a power loss ends
    except (OSError, SlurmGpuError) as exc:
        problems.append(f"HPC job mapping file not written in {directory}: {exc}")


def remove_mapping(directory: Optional[str], gpu_index: int, gi_id: int, problems: List[str]) -> None:
    """Remove the file of a destroyed GPU instance (absent already: nothing to do)."""
    if not directory:
        return
    try:
        os.unlink(mapping_path(directory, gpu_index, gi_id))
    except FileNotFoundError:
        pass
    except OSError as exc:
        problems.append(f"HPC job mapping file not removed: {exc}")
