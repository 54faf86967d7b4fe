"""Which cgroup hierarchy Slurm confines a node's jobs in, and where a job's cgroup is.

- **v1** (legacy or hybrid): Slurm's ``cgroup/v1`` uses the ``devices`` controller's own hierarchy
  (``/sys/fs/cgroup/devices/slurm[_<node>]/uid_<uid>/job_<id>``). On a hybrid host (v1 controllers plus
  an empty cgroup2 at ``/sys/fs/cgroup/unified``) Slurm's ``cgroup/v2`` refuses to start ("Hybrid mode is
  not supported"), so v1 it is.
- **v2** (unified: Debian 12, RHEL 9): one hierarchy; slurmd keeps its steps in
  ``<root>/system.slice/<node>_slurmstepd.scope`` (a build for several slurmd per host, as Debian's) or
  ``<root>/system.slice/slurmstepd.scope``, each job in ``job_<id>`` there (Slurm's
  ``src/plugins/cgroup/v2/cgroup_v2.c``, no ``uid_`` level).

The decision comes from ``/proc/self/mountinfo`` (the file systems mounted, never a name a user chose);
a path given explicitly is v2 when it holds ``cgroup.controllers`` (the root of every cgroup v2 tree).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Tuple

__all__ = ["CgroupLayout", "parse_mountinfo", "detect", "layout_of", "v2_scope", "AUTO",
           "V2_SLICE", "MOUNTINFO"]

AUTO = "auto"
MOUNTINFO = "/proc/self/mountinfo"
V2_SLICE = "system.slice"  # Slurm's default CgroupSlice


@dataclass(frozen=True)
class CgroupLayout:
    """``version`` "v1" (``root`` is the devices hierarchy) or "v2" (``root`` is the unified tree)."""

    version: str
    root: str


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def parse_mountinfo(text: str) -> Tuple[Optional[str], Optional[str]]:
    """(v1 devices mount point, cgroup2 mount point) in a mountinfo text; the first of each, preferring a
    cgroup2 mounted at ``/sys/fs/cgroup`` itself."""
    devices: Optional[str] = None
    unified: Optional[str] = None
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3:
            continue
        point, fstype, options = _unescape(fields[4]), tail[0], tail[2].split(",")
        if fstype == "cgroup" and "devices" in options and devices is None:
            devices = point
        elif fstype == "cgroup2" and (unified is None or point == "/sys/fs/cgroup"):
            unified = point
    return devices, unified


def detect(mountinfo: str = MOUNTINFO) -> Optional[CgroupLayout]:
    """The layout Slurm uses on this host: v1 wherever the devices controller is mounted as v1, v2 where
    only the unified hierarchy is; None with neither (no cgroups: nothing to seal)."""
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as fh:
            devices, unified = parse_mountinfo(fh.read())
    except OSError:
        return None
    if devices:
        return CgroupLayout("v1", devices)
    if unified:
        return CgroupLayout("v2", unified)
    return None


def layout_of(cgroup_root: Optional[str], mountinfo: str = MOUNTINFO) -> Optional[CgroupLayout]:
    """``cgroup_root`` as configured: None or "" (no sealing), ``auto`` (:func:`detect`), or a path: v2
    when it holds ``cgroup.controllers``, else Slurm's v1 devices hierarchy."""
    if not cgroup_root:
        return None
    if cgroup_root == AUTO:
        return detect(mountinfo)
    if os.path.isfile(os.path.join(cgroup_root, "cgroup.controllers")):
        return CgroupLayout("v2", cgroup_root)
    return CgroupLayout("v1", cgroup_root)


def v2_scope(root: str, node: Optional[str]) -> Optional[str]:
    """slurmd's stepd scope in a cgroup v2 tree (made at slurmd's start), or None where there is none."""
    names = ([f"{node}_slurmstepd.scope"] if node else []) + ["slurmstepd.scope"]
    for name in names:
        path = os.path.join(root, V2_SLICE, name)
        if os.path.isfile(os.path.join(path, "cgroup.procs")):
            return path
    return None
