"""Device access of one job to its MIG instances.

A process needs read access to the GPU-instance and compute-instance capability files
(``/dev/nvidia-caps/nvidia-cap<minor>``) to use a MIG instance. The driver creates them 0444 root, so
by default every user could open every instance. We narrow that per job:

- ``grant``: the job's cap files become owned by the job's uid/gid with mode 0400, so no other user can
  open them; where the job's cgroup v1 ``devices`` directory already exists (``PrologFlags=Contain``),
  the caps of every *other* instance are also written to its ``devices.deny``.
- ``revoke``: back to root, mode 0400, so the next job given the same minor starts from nothing (minors
  are reused: they depend only on GPU minor and gi/ci ids).

Paths are parameters so that the simulated driver's sandbox (``<sandbox>/dev/nvidia-caps``) and a test
cgroup tree can stand in for ``/dev`` and ``/sys/fs/cgroup``.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

from slurm_gpu.errors import StateError

__all__ = ["CapFile", "cap_files", "grant", "revoke", "job_devices_cgroup", "DEFAULT_CAPS_DIR",
           "DEFAULT_CGROUP_ROOT"]

DEFAULT_CAPS_DIR = "/dev/nvidia-caps"
DEFAULT_CGROUP_ROOT = "/sys/fs/cgroup/devices"
_JOB_MODE = 0o400


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
    try:
        os.chown(path, uid, gid, follow_symlinks=False)
        os.chmod(path, mode)
    except OSError as exc:
        raise StateError(f"cannot set owner/mode of {path}: {exc}") from exc
    return True


def job_devices_cgroup(job_id: str, uid: int, cgroup_root: str = DEFAULT_CGROUP_ROOT,
                       node: Optional[str] = None) -> Optional[str]:
    """The job's cgroup v1 devices directory if Slurm has made it: ``slurm/uid_<uid>/job_<id>``, or
    ``slurm_<node>/...`` for a slurmd started with ``-N <node>``."""
    tops = ["slurm"] + ([f"slurm_{node}"] if node else [])
    for top in tops:
        path = os.path.join(cgroup_root, top, f"uid_{int(uid)}", f"job_{job_id}")
        if os.path.isfile(os.path.join(path, "devices.deny")):
            return path
    return None


def grant(
    job_id: str,
    uid: int,
    gid: int,
    mine: Sequence[object],
    others: Sequence[object],
    caps_dir: str = DEFAULT_CAPS_DIR,
    cgroup_root: Optional[str] = DEFAULT_CGROUP_ROOT,
    node: Optional[str] = None,
) -> Tuple[Tuple[str, ...], Optional[str]]:
    """Give the job its instances' cap files; deny ``others`` in its devices cgroup where it exists.

    Returns the files changed and the cgroup written (None if none existed). Cap files that do not exist
    (a driver without ``NVreg_ModifyDeviceFiles``, a simulator without root) are skipped.
    """
    changed = tuple(f.path for f in cap_files(mine, caps_dir) if _set(f.path, uid, gid, _JOB_MODE))
    cgroup = job_devices_cgroup(job_id, uid, cgroup_root, node) if cgroup_root else None
    if cgroup:
        rules = []
        for f in cap_files(others, caps_dir):
            try:
                st = os.stat(f.path)
            except FileNotFoundError:
                continue
            if stat.S_ISCHR(st.st_mode):
                rules.append(f"c {os.major(st.st_rdev)}:{os.minor(st.st_rdev)} rwm")
        try:
            for rule in rules:  # the kernel takes one rule per write
                with open(os.path.join(cgroup, "devices.deny"), "w", encoding="ascii") as fh:
                    fh.write(rule)
        except OSError as exc:
            raise StateError(f"cannot write {cgroup}/devices.deny: {exc}") from exc
    return changed, cgroup


def revoke(instances: Sequence[object], caps_dir: str = DEFAULT_CAPS_DIR) -> Tuple[str, ...]:
    """Cap files back to root-only, before the instances are destroyed."""
    return tuple(f.path for f in cap_files(instances, caps_dir) if _set(f.path, 0, 0, _JOB_MODE))
