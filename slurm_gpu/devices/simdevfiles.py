"""Device files of the simulated driver, kept in a sandbox directory instead of /dev and /proc.

The real driver publishes ``/proc/driver/nvidia-caps/mig-minors`` (a static map from
``gpu<minor>/gi<id>/access`` and ``gpu<minor>/gi<id>/ci<id>/access`` to capability minors) and, with
``NVreg_ModifyDeviceFiles=1``, creates ``/dev/nvidia-caps/nvidia-cap<minor>`` (mode 0444, root) for
each GPU and compute instance; ``/dev/nvidia<minor>`` is the parent GPU (major 195). The sandbox holds
``mig-minors`` in the same format and ``dev/nvidia-caps/nvidia-cap<minor>`` / ``dev/nvidia<minor>`` as
real character devices when we are root (so cgroup device rules can be exercised on them). Minors
and the file's format come from ``migminors``, like the real driver's.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from typing import Any, Dict, List, Optional, Set

from slurm_gpu.devices.access import NVIDIA_MAJOR
from slurm_gpu.devices.migminors import ci_cap_minor, gi_cap_minor, mig_minors_text

__all__ = ["init_sandbox", "create_cap", "remove_cap", "cap_path", "pick_cap_major"]

# nvidia-caps gets a dynamic major on real hosts; the simulator takes one from the experimental range
# (Documentation/admin-guide/devices.txt: 240-254 "LOCAL/EXPERIMENTAL USE") that nothing on this host uses.
_EXPERIMENTAL_MAJORS = range(240, 255)


def _used_char_majors() -> Set[int]:
    used: Set[int] = set()
    try:
        with open("/proc/devices", encoding="ascii") as fh:
            in_char = False
            for line in fh:
                line = line.strip()
                if line.startswith("Character devices"):
                    in_char = True
                elif line.startswith("Block devices"):
                    in_char = False
                elif in_char and line:
                    used.add(int(line.split()[0]))
    except OSError:
        pass
    return used


def pick_cap_major() -> int:
    used = _used_char_majors()
    for major in _EXPERIMENTAL_MAJORS:
        if major not in used:
            return major
    raise OSError("no free character major in 240-254 for the simulated nvidia-caps devices")


def _can_mknod() -> bool:
    return os.geteuid() == 0


def _mknod(path: str, major: int, minor: int, mode: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    os.mknod(path, stat.S_IFCHR | mode, os.makedev(major, minor))
    os.chmod(path, mode)  # mknod honours the umask


def init_sandbox(sandbox: str, gpus: List[Dict[str, Any]]) -> Optional[int]:
    """Write ``mig-minors`` and the parent GPU device nodes; returns the caps major (None if not root)."""
    os.makedirs(os.path.join(sandbox, "dev", "nvidia-caps"), exist_ok=True)
    text = mig_minors_text([g["minor"] for g in gpus])
    fd, tmp = tempfile.mkstemp(prefix=".mig-minors.", dir=sandbox)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(text)
    os.chmod(tmp, 0o444)
    os.replace(tmp, os.path.join(sandbox, "mig-minors"))
    if not _can_mknod():
        return None
    major = pick_cap_major()
    for gpu in gpus:
        _mknod(os.path.join(sandbox, "dev", f"nvidia{gpu['minor']}"), NVIDIA_MAJOR, gpu["minor"], 0o666)
    # config (minor 1) is root-only, monitor (minor 2) readable by all, like the driver's defaults.
    _mknod(os.path.join(sandbox, "dev", "nvidia-caps", "nvidia-cap1"), major, 1, 0o400)
    _mknod(os.path.join(sandbox, "dev", "nvidia-caps", "nvidia-cap2"), major, 2, 0o444)
    return major


def cap_path(sandbox: str, minor: int) -> str:
    return os.path.join(sandbox, "dev", "nvidia-caps", f"nvidia-cap{minor}")


def _minor(gpu: Dict[str, Any], gi_id: int, ci_id: Optional[int]) -> int:
    if ci_id is None:
        return gi_cap_minor(gpu["minor"], gi_id)
    return ci_cap_minor(gpu["minor"], gi_id, ci_id)


def create_cap(body: Dict[str, Any], gpu: Dict[str, Any], gi_id: int, ci_id: Optional[int]) -> None:
    """The capability device of a new GPU instance (``ci_id`` None) or compute instance."""
    sandbox, major = body.get("sandbox"), body.get("cap_major")
    if not sandbox or major is None or not _can_mknod():
        return
    minor = _minor(gpu, gi_id, ci_id)
    _mknod(cap_path(sandbox, minor), major, minor, 0o444)


def remove_cap(body: Dict[str, Any], gpu: Dict[str, Any], gi_id: int, ci_id: Optional[int]) -> None:
    sandbox = body.get("sandbox")
    if not sandbox:
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(cap_path(sandbox, _minor(gpu, gi_id, ci_id)))
