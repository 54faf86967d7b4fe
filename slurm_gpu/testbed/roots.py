"""Debian roots made with debootstrap and cached on disk: other Slurm versions (trixie 24.11, sid 26.05),
Apptainer (sid), fresh Debian 12 machines for install tests, base images for docker-slurm/.

A root is built once per (suite, packages) into ``<cache>/<suite>-<hash>`` and reused by every later run
(``SLURM_GPU_ROOT_CACHE``, default ``/var/cache/slurm-gpu/roots``); a half-built root never counts,
because it is renamed into place only when complete. Tests that change a root work on a ``copy``.
Needs root, ``debootstrap`` and a reachable Debian mirror (``SLURM_GPU_DEBIAN_MIRROR``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

from slurm_gpu.core.errors import SlurmGpuError
from slurm_gpu.state.fsutil import FileLock

__all__ = ["RootSpec", "RootError", "ensure", "copy", "remove", "mounted", "mount_system", "chroot_run",
           "unmount_below", "cache_dir", "SLURM_ROOTS", "DEBIAN_12", "APPTAINER"]

MIRROR_ENV = "SLURM_GPU_DEBIAN_MIRROR"
CACHE_ENV = "SLURM_GPU_ROOT_CACHE"
DEFAULT_CACHE = "/var/cache/slurm-gpu/roots"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
COMPLETE = ".slurm-gpu-root-complete"
# debootstrap + apt of a Slurm root took about 40 s here; allow a slow mirror.
BUILD_TIMEOUT_S = 1200.0


class RootError(SlurmGpuError):
    """A root could not be built, entered or left."""


@dataclass(frozen=True)
class RootSpec:
    """A Debian root: ``suite``, packages debootstrap includes, and packages apt installs afterwards
    (``--no-install-recommends``; for packages whose dependencies debootstrap's resolver misses)."""

    suite: str
    include: Tuple[str, ...] = ()
    apt: Tuple[str, ...] = ()

    @property
    def name(self) -> str:
        body = "\n".join([self.suite, ",".join(sorted(self.include)), ",".join(sorted(self.apt))])
        return f"{self.suite}-{hashlib.sha256(body.encode()).hexdigest()[:10]}"


# python3-yaml, -jinja2, -click: the suite itself runs inside the root (hooks, CLI) on that suite's python3.
_SLURM_PACKAGES = ("munge", "slurmctld", "slurmd", "slurm-client", "lua5.1", "python3", "python3-venv",
                   "ca-certificates", "python3-yaml", "python3-jinja2", "python3-click")
# The Slurm versions these suites ship (no suite ships 25.11); 22.05 is also the host's (bookworm).
SLURM_ROOTS = {
    "22.05": RootSpec("bookworm", _SLURM_PACKAGES),
    "24.11": RootSpec("trixie", _SLURM_PACKAGES),
    "26.05": RootSpec("sid", _SLURM_PACKAGES),
}
# A fresh Debian 12 machine (install tests, the base image docker-slurm/ imports where no registry answers).
DEBIAN_12 = RootSpec("bookworm", ("ca-certificates",))
# Apptainer is packaged by sid only; its dependencies need apt, not debootstrap's resolver.
APPTAINER = RootSpec("sid", ("ca-certificates",), apt=("apptainer", "squashfuse", "fuse2fs"))


def cache_dir() -> str:
    return os.environ.get(CACHE_ENV, DEFAULT_CACHE)


def ensure(spec: RootSpec, cache: Optional[str] = None,
           progress: Optional[Callable[[str], None]] = None) -> str:
    """The path of a complete root for ``spec``, building it first if the cache has none."""
    cache = cache or cache_dir()
    path = os.path.join(cache, spec.name)
    if os.path.exists(os.path.join(path, COMPLETE)):
        return path
    os.makedirs(cache, mode=0o755, exist_ok=True)
    with FileLock(os.path.join(cache, spec.name + ".lock"), timeout_s=BUILD_TIMEOUT_S):
        if os.path.exists(os.path.join(path, COMPLETE)):
            return path  # another process built it while we waited
        if progress:
            progress(f"building Debian {spec.suite} root {spec.name} (debootstrap, about a minute)")
        _build(spec, path)
    return path


def _build(spec: RootSpec, path: str) -> None:
    work = f"{path}.tmp-{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)
    _remove(work)
    if shutil.which("debootstrap") is None:
        raise RootError("debootstrap is not installed (apt-get install debootstrap)")
    args = ["debootstrap", "--variant=minbase"]
    if spec.include:
        args.append("--include=" + ",".join(spec.include))
    args += [spec.suite, work, os.environ.get(MIRROR_ENV, DEFAULT_MIRROR)]
    try:
        _check(args, f"debootstrap {spec.suite}")
        if spec.apt:
            with mounted(work):
                _check(["chroot", work, "apt-get", "install", "-y", "--no-install-recommends", *spec.apt],
                       f"apt-get install in the {spec.suite} root", env={"DEBIAN_FRONTEND": "noninteractive"})
        _check(["chroot", work, "apt-get", "clean"], f"apt-get clean in the {spec.suite} root")
        with open(os.path.join(work, COMPLETE), "w", encoding="utf-8") as f:
            f.write(spec.name + "\n")
        os.rename(work, path)
    except BaseException:
        _remove(work)
        raise


def _check(args: Sequence[str], what: str, env: Optional[dict] = None) -> None:
    full_env = dict(os.environ, **env) if env else None
    try:
        proc = subprocess.run(list(args), capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
                              env=full_env, check=False)
    except subprocess.TimeoutExpired as exc:
        raise RootError(f"{what}: no answer after {BUILD_TIMEOUT_S:.0f} s") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise RootError(f"{what} failed ({proc.returncode}):\n{tail}")


def copy(src: str, dst: str) -> str:
    """A private copy of a cached root (``cp -a``; hard links would share changes with the cache)."""
    _remove(dst)
    _check(["cp", "-a", "--reflink=auto", src, dst], f"copying {src} to {dst}")
    return dst


def remove(path: str) -> None:
    """Delete a copy made with :func:`copy`, unmounting what is mounted below it first."""
    _remove(path)


def _remove(path: str) -> None:
    """Delete a root that is mounted nowhere (a forgotten bind of /dev would delete the host's)."""
    if not os.path.lexists(path):
        return
    unmount_below(path)
    if _mounts_below(path):
        raise RootError(f"refusing to delete {path}: still mounted: {', '.join(_mounts_below(path))}")
    shutil.rmtree(path)


def _mounts_below(root: str) -> List[str]:
    root = os.path.realpath(root)
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point == root or point.startswith(root + "/"):
                found.append(point)
    return found


def unmount_below(root: str) -> None:
    """Unmount everything mounted at or under ``root``, deepest first (lazily if busy)."""
    for point in sorted(_mounts_below(root), key=len, reverse=True):
        if subprocess.run(["umount", point], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)


@contextmanager
def mounted(root: str) -> Iterator[str]:
    """``root`` with /proc, /sys and /dev of the host (rslave, so unmounting inside never reaches the
    host) and the host's name resolution, for ``chroot``; everything is unmounted on exit."""
    try:
        mount_system(root)
        yield root
    finally:
        unmount_below(f"{root}/proc")
        unmount_below(f"{root}/sys")
        unmount_below(f"{root}/dev")


def mount_system(root: str) -> None:
    """What ``mounted`` does on entry, for a root that outlives the caller (daemons chrooted into it):
    the caller unmounts with ``unmount_below``."""
    for args in (["mount", "-t", "proc", "proc", f"{root}/proc"],
                 ["mount", "--rbind", "/sys", f"{root}/sys"], ["mount", "--make-rslave", f"{root}/sys"],
                 ["mount", "--rbind", "/dev", f"{root}/dev"], ["mount", "--make-rslave", f"{root}/dev"]):
        _check(args, " ".join(args))
    for name in ("hosts", "hostname", "resolv.conf"):
        if os.path.exists(f"/etc/{name}"):
            dst = f"{root}/etc/{name}"
            if os.path.islink(dst):
                os.unlink(dst)
            shutil.copyfile(f"/etc/{name}", dst)
    certs = "/etc/ssl/certs/ca-certificates.crt"
    if os.path.exists(certs) and os.path.isdir(f"{root}/etc/ssl/certs"):
        shutil.copyfile(certs, f"{root}{certs}")  # pip inside the root needs the host's CA bundle


def chroot_run(root: str, args: Sequence[str], timeout: float = 120.0,
               env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """Run ``args`` inside a (mounted) root; the caller checks the result."""
    return subprocess.run(["chroot", root, *args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **env) if env else None, check=False)
