"""The job's CDI spec on disk: written by the Prolog once the instances exist, removed by the Epilog.

``<containers.cdi_dir>/slurm-gpu-job<id>.json`` (``core.cdi`` says what it holds), owned by root and
readable by the job's group only (0640): rootless podman runs as the job's user and must read it, other
users learn nothing of the job's devices from it, and no user can change what a root daemon (Docker with
CDI) would expose. Off when ``containers.cdi_dir`` is empty. A spec that cannot be written or removed is
a problem of the outcome, never a failed job or a drain.
"""

from __future__ import annotations

import json
import os
import stat
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Set

from slurm_gpu.core.cdi import DeviceNode, JobDevice, job_spec, spec_file_name
from slurm_gpu.core.errors import SlurmGpuError
from slurm_gpu.state.task_env import is_job_id

if TYPE_CHECKING:
    from slurm_gpu.devices.api import MigInstance

__all__ = ["spec_path", "write_spec", "remove_spec", "sweep", "job_devices", "SHARED_NODES", "SPEC_MODE"]

SPEC_MODE = 0o640
# Driver nodes every CUDA process opens besides its GPU: control, unified memory (and its tools node).
SHARED_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools")


def spec_path(cdi_dir: str, job_id: str) -> str:
    return os.path.join(cdi_dir, spec_file_name(job_id))


def _char_node(host_path: str, path: str) -> Optional[DeviceNode]:
    try:
        st = os.stat(host_path)
    except OSError:
        return None
    if not stat.S_ISCHR(st.st_mode):
        return None
    return DeviceNode(path, host_path, os.major(st.st_rdev), os.minor(st.st_rdev))


def job_devices(instances: Sequence[MigInstance], gpu_minors: Dict[int, int],
                dev_dir: str) -> List[JobDevice]:
    """Each instance's parent GPU and capability files as they exist under ``dev_dir`` (``/dev``, or the
    simulated driver's sandbox); an instance whose files are not all there is an error."""
    out = []
    for k, inst in enumerate(instances):
        minor = gpu_minors[inst.gpu_index]
        wanted = [(os.path.join(dev_dir, f"nvidia{minor}"), f"/dev/nvidia{minor}")]
        for cap in (inst.gi_cap_minor, inst.ci_cap_minor):
            if cap is None:
                raise SlurmGpuError(f"GPU {inst.gpu_index} instance {inst.gi_id}: capability minor unknown")
            name = f"nvidia-caps/nvidia-cap{int(cap)}"
            wanted.append((os.path.join(dev_dir, name), f"/dev/{name}"))
        nodes = [_char_node(host, path) for host, path in wanted]
        missing = [host for (host, _), node in zip(wanted, nodes) if node is None]
        if missing or not inst.mig_uuid:
            raise SlurmGpuError(f"device files missing: {', '.join(missing) or 'MIG UUID'}")
        out.append(JobDevice(k, inst.mig_uuid, minor, tuple(n for n in nodes if n is not None)))
    return out


def write_spec(cdi_dir: Optional[str], job_id: str, gid: int, instances: Sequence[MigInstance],
               gpu_minors: Dict[int, int], dev_dir: str, problems: List[str]) -> Optional[str]:
    """Write the job's spec (atomically, root:<gid> 0640); returns its path, None when off or failed."""
    if not cdi_dir or not instances:
        return None
    from slurm_gpu.state.fsutil import atomic_write

    path = spec_path(cdi_dir, job_id)
    try:
        devices = job_devices(instances, gpu_minors, dev_dir)
        found = (_char_node(os.path.join(dev_dir, name), f"/dev/{name}") for name in SHARED_NODES)
        shared = [n for n in found if n is not None]
        os.makedirs(cdi_dir, mode=0o755, exist_ok=True)
        text = json.dumps(job_spec(job_id, devices, shared), indent=1, sort_keys=True) + "\n"
        # not fsynced: a job's spec lasts as long as the job, which a power loss ends
        atomic_write(path, text, mode=SPEC_MODE, owner=(0, gid) if os.geteuid() == 0 else None, durable=False)
    except (OSError, SlurmGpuError) as exc:
        problems.append(f"CDI spec not written in {cdi_dir}: {exc}")
        return None
    return path


def remove_spec(cdi_dir: Optional[str], job_id: str, problems: List[str]) -> None:
    """Remove the job's spec (absent already: nothing to do)."""
    if not cdi_dir:
        return
    try:
        os.unlink(spec_path(cdi_dir, job_id))
    except FileNotFoundError:
        pass
    except OSError as exc:
        problems.append(f"CDI spec not removed: {exc}")


def sweep(cdi_dir: Optional[str], keep: Set[str], problems: List[str]) -> List[str]:
    """Remove the specs of jobs not in ``keep`` (reconcile, under the node lock); returns the job ids."""
    if not cdi_dir:
        return []
    prefix, suffix = spec_file_name("X").split("X")
    try:
        names = os.listdir(cdi_dir)
    except FileNotFoundError:
        return []
    except OSError as exc:
        problems.append(f"CDI specs not swept: {exc}")
        return []
    gone = []
    for name in names:
        job_id = name[len(prefix):-len(suffix)] if name.startswith(prefix) and name.endswith(suffix) else ""
        if job_id and job_id not in keep and is_job_id(job_id):
            remove_spec(cdi_dir, job_id, problems)
            gone.append(job_id)
    return gone
