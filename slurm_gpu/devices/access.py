"""Device access of one job to its MIG instances and their parent GPUs.

A process needs read access to the GPU-instance and compute-instance capability files
(``/dev/nvidia-caps/nvidia-cap<minor>``) to use a MIG instance, and ``/dev/nvidia<minor>`` of its GPU. The
driver creates cap files 0444 root and ``/dev/nvidia*`` 0666, so by default every process could open
every instance and every whole GPU. Two layers narrow that:

- ``seal`` (per job, cgroup v1 ``devices``): the job's devices cgroup denies every capability minor of
  every GPU slurm-gpu manages except the job's own, and ``/dev/nvidia<minor>`` of every such GPU on which
  the job holds no instance. Minors are denied before any instance exists (mig-minors reserves them per
  GPU), so a job started earlier can never open an instance created later, whoever owns it. On 22.05 the
  Prolog runs before slurmstepd makes the job's cgroup (PrologFlags=Contain): ``seal`` makes the
  directory first, Slurm adopts it, and the rules are inherited by every step (measured: EPERM in the
  job, ENXIO from the same device outside it). This is what isolates two jobs of one user.
- ``grant``/``revoke`` (per user, file modes): the job's cap files become owned by the job's uid/gid with
  mode 0400, for processes outside any job cgroup; ``revoke`` puts them back to root 0400 before the
  instance is destroyed (minors are reused: they depend only on GPU minor and gi/ci ids).

Paths are parameters so that the simulated driver's sandbox (``<sandbox>/dev/nvidia-caps``) and a test
cgroup tree can stand in for ``/dev`` and ``/sys/fs/cgroup``.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

from slurm_gpu.core.errors import StateError
from slurm_gpu.state.fsutil import set_owner_mode

__all__ = ["CapFile", "cap_files", "grant", "revoke", "job_devices_cgroup", "seal", "unseal",
           "seal_rules", "caps_major", "DEFAULT_CAPS_DIR", "DEFAULT_CGROUP_ROOT", "NVIDIA_MAJOR"]

DEFAULT_CAPS_DIR = "/dev/nvidia-caps"
DEFAULT_CGROUP_ROOT = "/sys/fs/cgroup/devices"
_JOB_MODE = 0o400
NVIDIA_MAJOR = 195  # /dev/nvidia<minor>, fixed by the driver


@dataclass(frozen=True)
class CapFile:
    path: str
    minor: int


def cap_files(instances: Iterable[object], caps_dir: str = DEFAULT_CAPS_DIR) -> Tuple[CapFile, ...]:
    """The GI and CI capability files of ``instances`` (objects with ``gi_cap_minor``/``ci_cap_minor``)."""
    out: List[CapFile] = []
    for inst in instances:
        for attr in ("gi_cap_minor", "ci_cap_minor"):
            minor = getattr(inst, attr, None)
            if minor is not None:
                out.append(CapFile(os.path.join(caps_dir, f"nvidia-cap{int(minor)}"), int(minor)))
    return tuple(out)


def _set(path: str, uid: int, gid: int, mode: int) -> bool:
    """chown + chmod without following links; False when the file does not exist."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode):
        raise StateError(f"refusing to change {path}: it is a symbolic link")
    set_owner_mode(path, uid, gid, mode)
    return True


def _slurm_top(cgroup_root: str, node: Optional[str], create: bool = False) -> Optional[str]:
    """Slurm's cgroup v1 devices directory on this node: ``slurm_<node>`` for a slurmd built for several
    per host (``slurmd -N``), else ``slurm``; None where Slurm keeps no v1 cgroups (cgroup v2).

    slurmd makes the devices directory with the node's first job step, but its freezer directory (of
    proctrack/cgroup) at start: with ``create``, the name found there is made in the devices tree too.
    """
    names = ([f"slurm_{node}"] if node else []) + ["slurm"]
    for name in names:
        path = os.path.join(cgroup_root, name)
        if os.path.isfile(os.path.join(path, "devices.deny")):
            return path
    if not create:
        return None
    for name in names:
        if os.path.isdir(os.path.join(os.path.dirname(cgroup_root), "freezer", name)):
            path = os.path.join(cgroup_root, name)
            try:
                os.makedirs(path, mode=0o755, exist_ok=True)
            except OSError as exc:
                raise StateError(f"cannot create {path}: {exc}") from exc
            return path
    return None


def job_devices_cgroup(job_id: str, uid: int, cgroup_root: str = DEFAULT_CGROUP_ROOT,
                       node: Optional[str] = None) -> Optional[str]:
    """The job's cgroup v1 devices directory (``<top>/uid_<uid>/job_<id>``) if it exists."""
    top = _slurm_top(cgroup_root, node)
    if top is None:
        return None
    path = os.path.join(top, f"uid_{int(uid)}", f"job_{job_id}")
    return path if os.path.isfile(os.path.join(path, "devices.deny")) else None


def caps_major(caps_dir: str = DEFAULT_CAPS_DIR) -> Optional[int]:
    """The nvidia-caps character major, from the config capability every MIG driver creates."""
    try:
        st = os.stat(os.path.join(caps_dir, "nvidia-cap1"))
    except OSError:
        return None
    return os.major(st.st_rdev) if stat.S_ISCHR(st.st_mode) else None


def seal_rules(gpus: Iterable[Tuple[int, Sequence[int]]], own_gpu_minors: Iterable[int],
               own_instances: Sequence[object], cap_major: Optional[int]) -> List[str]:
    """``devices.deny`` rules of a job: ``gpus`` is (GPU minor, its cap minors) of every managed GPU.
    Denies every cap minor but the job's instances' and every GPU not in ``own_gpu_minors``."""
    own_caps = {f.minor for f in cap_files(own_instances)}
    own = set(own_gpu_minors)
    rules = []
    for gpu_minor, minors in gpus:
        if gpu_minor not in own:
            rules.append(f"c {NVIDIA_MAJOR}:{int(gpu_minor)} rwm")
        if cap_major is not None:
            rules.extend(f"c {cap_major}:{int(m)} rwm" for m in minors if m not in own_caps)
    return rules


def seal(job_id: str, uid: int, rules: Sequence[str], cgroup_root: Optional[str] = DEFAULT_CGROUP_ROOT,
         node: Optional[str] = None) -> Optional[str]:
    """Write ``rules`` to the job's devices cgroup, making the directory if Slurm has not yet.

    Returns the directory, or None where Slurm's devices hierarchy does not exist. Raises ``StateError``
    when a rule cannot be written (the job must then not get instances).
    """
    top = _slurm_top(cgroup_root, node, create=True) if cgroup_root else None
    if top is None:
        return None
    path = os.path.join(top, f"uid_{int(uid)}", f"job_{job_id}")
    for attempt in range(3):  # an Epilog may remove an empty uid_ directory between our two mkdirs
        try:
            os.makedirs(path, mode=0o755, exist_ok=True)
            break
        except FileNotFoundError:
            if attempt == 2:
                raise StateError(f"cannot create {path}") from None
        except OSError as exc:
            raise StateError(f"cannot create {path}: {exc}") from exc
    deny = os.path.join(path, "devices.deny")
    try:
        fd = os.open(deny, os.O_WRONLY | os.O_CREAT, 0o644)  # O_CREAT: a plain test tree
    except OSError as exc:
        raise StateError(f"cannot open {deny}: {exc}") from exc
    try:
        for rule in rules:  # the kernel takes one rule per write
            os.write(fd, (rule + "\n").encode("ascii"))
    except OSError as exc:
        raise StateError(f"cannot write {rule!r} to {deny}: {exc}") from exc
    finally:
        os.close(fd)
    return path


def unseal(job_id: str, uid: int, cgroup_root: Optional[str] = DEFAULT_CGROUP_ROOT,
           node: Optional[str] = None) -> None:
    """Remove the job's devices cgroup if it is empty (a job the Prolog requeued never got a stepd)."""
    path = job_devices_cgroup(job_id, uid, cgroup_root, node) if cgroup_root else None
    if path is None:
        return
    try:
        os.rmdir(path)
    except OSError:
        pass  # busy (processes or steps left): Slurm removes it


def grant(uid: int, gid: int, mine: Sequence[object], caps_dir: str = DEFAULT_CAPS_DIR) -> Tuple[str, ...]:
    """Give the job's user its instances' cap files (0400); returns the files changed. Cap files that
    do not exist (a driver without ``NVreg_ModifyDeviceFiles``, a simulator without root) are skipped."""
    return tuple(f.path for f in cap_files(mine, caps_dir) if _set(f.path, uid, gid, _JOB_MODE))


def revoke(instances: Sequence[object], caps_dir: str = DEFAULT_CAPS_DIR) -> Tuple[str, ...]:
    """Cap files back to root-only, before the instances are destroyed."""
    return tuple(f.path for f in cap_files(instances, caps_dir) if _set(f.path, 0, 0, _JOB_MODE))
