"""Device access of one job to its MIG instances and their parent GPUs.

A process needs read access to the GPU-instance and compute-instance capability files
(``/dev/nvidia-caps/nvidia-cap<minor>``) to use a MIG instance, and ``/dev/nvidia<minor>`` of its GPU. The
driver creates cap files 0444 root and ``/dev/nvidia*`` 0666, so by default every process could open
every instance and every whole GPU. Two layers narrow that:

- ``seal`` (per job, cgroup v1 ``devices`` or a cgroup v2 device program): the job's cgroup denies
  every capability minor of every GPU slurm-gpu manages except the job's own, and ``/dev/nvidia<minor>``
  of every such GPU on which the job holds no instance. Minors are denied before any instance exists
  (mig-minors reserves them per GPU), so a job started earlier can never open an instance created later,
  whoever owns it. On 22.05 the Prolog runs before slurmstepd makes the job's cgroup
  (PrologFlags=Contain): ``seal`` makes the directory first, Slurm adopts it, and the rules are inherited
  by every step (measured: EPERM in the job, ENXIO from the same device outside it). This is what
  isolates two jobs of one user. On cgroup v2 the same devices are denied by a
  ``BPF_PROG_TYPE_CGROUP_DEVICE`` program attached to ``job_<id>`` with ``BPF_F_ALLOW_MULTI``
  (``devices.ebpf``; where the job's cgroup is: ``devices.cgroups``).
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
from slurm_gpu.devices import cgroups
from slurm_gpu.devices.cgroups import AUTO
from slurm_gpu.state.fsutil import set_owner_mode

__all__ = ["CapFile", "cap_files", "grant", "revoke", "job_devices_cgroup", "job_cgroup", "seal", "unseal",
           "seal_devices", "seal_rules", "caps_major", "DEFAULT_CAPS_DIR", "DEFAULT_CGROUP_ROOT",
           "NVIDIA_MAJOR", "AUTO"]

DEFAULT_CAPS_DIR = "/dev/nvidia-caps"
DEFAULT_CGROUP_ROOT = "/sys/fs/cgroup/devices"  # cgroup v1; AUTO finds the host's hierarchy
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


def seal_devices(gpus: Iterable[Tuple[int, Sequence[int]]], own_gpu_minors: Iterable[int],
                 own_instances: Sequence[object], cap_major: Optional[int]) -> List[Tuple[int, int]]:
    """The character devices (major, minor) a job is denied: ``gpus`` is (GPU minor, its cap minors) of
    every managed GPU. Every cap minor but the job's instances' and every GPU not in ``own_gpu_minors``."""
    own_caps = {f.minor for f in cap_files(own_instances)}
    own = set(own_gpu_minors)
    out: List[Tuple[int, int]] = []
    for gpu_minor, minors in gpus:
        if gpu_minor not in own:
            out.append((NVIDIA_MAJOR, int(gpu_minor)))
        if cap_major is not None:
            out.extend((cap_major, int(m)) for m in minors if m not in own_caps)
    return out


def seal_rules(gpus: Iterable[Tuple[int, Sequence[int]]], own_gpu_minors: Iterable[int],
               own_instances: Sequence[object], cap_major: Optional[int]) -> List[str]:
    """:func:`seal_devices` as cgroup v1 ``devices.deny`` lines."""
    return [_v1_rule(d) for d in seal_devices(gpus, own_gpu_minors, own_instances, cap_major)]


def _v1_rule(device: Tuple[int, int]) -> str:
    return f"c {int(device[0])}:{int(device[1])} rwm"


def _make_job_dir(path: str) -> None:
    for attempt in range(3):  # an Epilog may remove an empty parent directory between our two mkdirs
        try:
            os.makedirs(path, mode=0o755, exist_ok=True)
            return
        except FileNotFoundError:
            if attempt == 2:
                raise StateError(f"cannot create {path}") from None
        except OSError as exc:
            raise StateError(f"cannot create {path}: {exc}") from exc


def seal(job_id: str, uid: int, denied: Sequence[Tuple[int, int]], cgroup_root: Optional[str] = AUTO,
         node: Optional[str] = None) -> Optional[str]:
    """Deny the job's cgroup the character devices ``denied`` (major, minor), making the job's
    directory if Slurm has not yet (Slurm adopts it). cgroup v1: one ``devices.deny`` line each; v2: a
    device program on ``job_<id>`` (``devices.ebpf``). ``cgroup_root``: ``auto`` (this host's
    hierarchy, ``devices.cgroups``), a path (v2 if it holds ``cgroup.controllers``) or None.

    Returns the directory, or None where Slurm keeps no job cgroups (no devices hierarchy, no stepd
    scope). Raises ``StateError`` when the seal cannot be applied (the job must then not get instances).
    """
    layout = cgroups.layout_of(cgroup_root)
    if layout is None:
        return None
    if layout.version == "v2":
        return _seal_v2(job_id, denied, layout.root, node)
    top = _slurm_top(layout.root, node, create=True)
    if top is None:
        return None
    path = os.path.join(top, f"uid_{int(uid)}", f"job_{job_id}")
    _make_job_dir(path)
    deny = os.path.join(path, "devices.deny")
    try:
        fd = os.open(deny, os.O_WRONLY | os.O_CREAT, 0o644)  # O_CREAT: a plain test tree
    except OSError as exc:
        raise StateError(f"cannot open {deny}: {exc}") from exc
    rule = ""
    try:
        for rule in map(_v1_rule, denied):  # the kernel takes one rule per write
            os.write(fd, (rule + "\n").encode("ascii"))
    except OSError as exc:
        raise StateError(f"cannot write {rule!r} to {deny}: {exc}") from exc
    finally:
        os.close(fd)
    return path


def _seal_v2(job_id: str, denied: Sequence[Tuple[int, int]], root: str, node: Optional[str]) -> Optional[str]:
    from slurm_gpu.devices import ebpf

    scope = cgroups.v2_scope(root, node)
    if scope is None:
        return None
    path = os.path.join(scope, f"job_{job_id}")
    _make_job_dir(path)
    ebpf.seal_cgroup(path, denied)
    return path


def job_cgroup(job_id: str, uid: int, cgroup_root: Optional[str] = AUTO,
               node: Optional[str] = None) -> Optional[str]:
    """The job's cgroup directory where it exists: v1 ``<top>/uid_<uid>/job_<id>`` of the devices
    hierarchy, v2 ``<stepd scope>/job_<id>``."""
    layout = cgroups.layout_of(cgroup_root)
    if layout is None:
        return None
    if layout.version == "v1":
        return job_devices_cgroup(job_id, uid, layout.root, node)
    scope = cgroups.v2_scope(layout.root, node)
    path = os.path.join(scope, f"job_{job_id}") if scope else None
    return path if path and os.path.isfile(os.path.join(path, "cgroup.procs")) else None


def unseal(job_id: str, uid: int, cgroup_root: Optional[str] = AUTO,
           node: Optional[str] = None) -> None:
    """Remove the job's cgroup if it is empty (a job the Prolog requeued never got a stepd); its device
    program goes with it."""
    path = job_cgroup(job_id, uid, cgroup_root, node)
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
