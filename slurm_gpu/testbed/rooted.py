"""A local cluster on another Slurm version: its daemons run ``chroot ROOT ...`` in a Debian root.

22.05 runs from the host's packages (Debian 12). 24.11 (trixie) and 26.05 (sid) come from the cached roots
of :mod:`slurm_gpu.testbed.roots`; each cluster gets its own writable view of one (an overlay mount at
``<dir>/root``: the cached root below, ``<dir>/.root/upper`` above), so the cache is never changed and
clusters of one version run side by side. Inside it:

- ``<dir>`` itself is bind-mounted at the same path, so slurm.conf, logs, pid files, the simulated GPUs'
  state and sandbox, and the hooks' state read the same inside and outside;
- this package is bind-mounted read-only at ``/opt/slurm-gpu/lib/slurm_gpu`` (with the pure-Python
  ``pynvml`` module of nvidia-ml-py next to it) and runs on the root's own ``python3`` with that suite's
  PyYAML, jinja2 and click (Debian packages in ``roots.SLURM_ROOTS``);
- the root's own munged runs with the root's own key and socket (``/run/munge`` of the root);
- the test users are added with the host's uids, so a job's files belong to the same user on both sides.

cgroups: these hosts are cgroup v1 (hybrid); cgroup v2 inside a root makes slurmd die ("Hybrid mode is not
supported"), so rooted clusters run ``CgroupPlugin=disabled``, ``ProctrackType=proctrack/linuxproc`` and
``TaskPlugin=task/none``: no device cgroup seals a job there (the 22.05 cluster on the host tests that).
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import time
from typing import Dict, List, Optional, Sequence

import slurm_gpu
from slurm_gpu.core.errors import SlurmError
from slurm_gpu.testbed import roots
from slurm_gpu.testbed.spec import HOST_SLURM, ClusterSpec

__all__ = ["in_root", "root_path", "prepare", "start_munge", "stop", "command", "hook_runtime", "adapt",
           "remove", "LIB_DIR"]

LIB_DIR = "/opt/slurm-gpu/lib"  # PYTHONPATH of the hooks inside a root
_MUNGE_PID = "/run/munge/munged.pid"


def in_root(spec: ClusterSpec) -> bool:
    return spec.slurm != HOST_SLURM


def root_path(spec: ClusterSpec) -> str:
    return os.path.join(spec.dir, "root")


def _mounted(path: str) -> bool:
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        return any(line.split()[4] == real for line in fh)


def _check(args: Sequence[str], what: str) -> None:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise SlurmError(f"{what} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()}")


def prepare(spec: ClusterSpec, users: Sequence[str] = ()) -> str:
    """Mount the cluster's root (building the cached one first if needed); idempotent. Returns its path."""
    cached = roots.ensure(roots.SLURM_ROOTS[spec.slurm])
    root = root_path(spec)
    if _mounted(root):
        return root
    upper, work = os.path.join(spec.dir, ".root", "upper"), os.path.join(spec.dir, ".root", "work")
    for path in (root, upper, work):
        os.makedirs(path, exist_ok=True)
    try:
        layers = f"lowerdir={cached},upperdir={upper},workdir={work}"
        _check(["mount", "-t", "overlay", "overlay", "-o", layers, root], f"overlay of {cached} at {root}")
        roots.mount_system(root)
        _bind(spec.dir, root + spec.dir, read_only=False)
        package = os.path.dirname(os.path.abspath(slurm_gpu.__file__))
        _bind(package, f"{root}{LIB_DIR}/slurm_gpu", read_only=True)
        _copy_pynvml(f"{root}{LIB_DIR}")
        _add_users(root, users)
    except BaseException:
        roots.unmount_below(root)
        raise
    return root


def _bind(src: str, dst: str, read_only: bool) -> None:
    os.makedirs(dst, exist_ok=True)
    _check(["mount", "--bind", src, dst], f"bind of {src}")
    if read_only:
        _check(["mount", "-o", "remount,bind,ro", dst], f"read-only bind of {src}")


def _copy_pynvml(lib: str) -> None:
    """nvidia-ml-py is one pure-Python module (no Debian package in main): the host's copy serves."""
    found = importlib.util.find_spec("pynvml")
    if found is None or not found.origin or not found.origin.endswith(".py"):
        raise SlurmError("the pynvml module (nvidia-ml-py) is not installed as one .py file")
    with open(found.origin, "rb") as src:
        data = src.read()
    path = os.path.join(lib, "pynvml.py")
    with open(path + ".tmp", "wb") as dst:
        dst.write(data)
    os.chmod(path + ".tmp", 0o644)
    os.replace(path + ".tmp", path)


def _add_users(root: str, users: Sequence[str]) -> None:
    """The host's entries of ``users`` (and their primary groups) in the root's passwd and group."""
    import grp
    import pwd

    for user in users:
        entry = pwd.getpwnam(user)
        group = grp.getgrgid(entry.pw_gid)
        _append_line(f"{root}/etc/passwd", user,
                     f"{user}:x:{entry.pw_uid}:{entry.pw_gid}::{entry.pw_dir}:/bin/sh")
        _append_line(f"{root}/etc/group", group.gr_name, f"{group.gr_name}:x:{group.gr_gid}:")
        os.makedirs(root + entry.pw_dir, exist_ok=True)
        os.chown(root + entry.pw_dir, entry.pw_uid, entry.pw_gid)


def _append_line(path: str, name: str, line: str) -> None:
    with open(path, encoding="utf-8") as fh:
        if any(existing.split(":", 1)[0] == name for existing in fh):
            return
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")


def _root_ids(root: str, user: str) -> str:
    """``uid:gid`` of ``user`` in the root's own passwd (its system users differ from the host's)."""
    with open(f"{root}/etc/passwd", encoding="utf-8") as fh:
        for line in fh:
            parts = line.split(":")
            if parts[0] == user and len(parts) > 3:
                return f"{parts[2]}:{parts[3]}"
    raise SlurmError(f"no user {user} in {root}/etc/passwd")


def start_munge(spec: ClusterSpec) -> None:
    """The root's munged (its key, its socket), unless one answers there already."""
    root = root_path(spec)
    if _munge_ok(root):
        return
    ids = _root_ids(root, "munge")
    uid, gid = (int(x) for x in ids.split(":"))
    for sub in ("run/munge", "var/log/munge", "var/lib/munge"):
        os.makedirs(f"{root}/{sub}", exist_ok=True)
        os.chown(f"{root}/{sub}", uid, gid)
    _check(["chroot", f"--userspec={ids}", root, "/usr/sbin/munged"], f"munged in {root}")
    for _ in range(50):
        if _munge_ok(root):
            return
        time.sleep(0.1)
    raise SlurmError(f"munged in {root} does not answer after start")


def _munge_ok(root: str) -> bool:
    try:
        cred = subprocess.run(["chroot", root, "munge", "-n"], capture_output=True, timeout=5, check=False)
        if cred.returncode != 0:
            return False
        back = subprocess.run(["chroot", root, "unmunge"], input=cred.stdout, capture_output=True, timeout=5,
                              check=False)
        return back.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def stop(spec: ClusterSpec) -> List[str]:
    """Stop the root's munged and unmount everything under the root (the daemons are stopped first)."""
    root = root_path(spec)
    stopped = []
    pid = _munged_pid(root)
    if pid:
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            if not os.path.exists(f"/proc/{pid}"):
                break
            time.sleep(0.1)
        stopped.append("munged")
    roots.unmount_below(root)
    return stopped


def _munged_pid(root: str) -> Optional[int]:
    try:
        with open(root + _MUNGE_PID, encoding="ascii") as fh:
            pid = int(fh.read().strip() or 0)
        with open(f"/proc/{pid}/comm", encoding="ascii") as fh:
            return pid if fh.read().strip() == "munged" else None
    except (OSError, ValueError):
        return None


def remove(spec: ClusterSpec) -> None:
    """Delete the cluster's directory, refusing while anything is mounted below it (a bind of /dev)."""
    import shutil

    roots.unmount_below(spec.dir)
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        real = os.path.realpath(spec.dir)
        left = [line.split()[4] for line in fh if line.split()[4].startswith(real + "/")]
    if left:
        raise SlurmError(f"refusing to delete {spec.dir}: still mounted: {', '.join(left)}")
    shutil.rmtree(spec.dir, ignore_errors=True)


def command(spec: ClusterSpec, args: Sequence[str], user: Optional[str] = None,
            cwd: str = "/tmp") -> List[str]:
    """``args`` (a Slurm tool and its arguments) as run for this cluster: on the host for 22.05, inside the
    root for the others, as ``user`` when given (``runuser`` on the host, ``chroot --userspec`` inside)."""
    env = ["env", f"SLURM_CONF={spec.conf}"]
    if not in_root(spec):
        return ["runuser", "-u", user, "--", *env, *args] if user else list(args)
    import pwd

    who = []
    if user:
        entry = pwd.getpwnam(user)
        who = [f"--userspec={entry.pw_uid}:{entry.pw_gid}", f"--groups={entry.pw_gid}"]
        env += [f"HOME={entry.pw_dir}", f"USER={user}", f"LOGNAME={user}"]
    return ["chroot", *who, root_path(spec), "/usr/bin/env", "-C", cwd, *env[1:], *args]


def hook_runtime(spec: ClusterSpec, host_python: str, host_package: str) -> Dict[str, str]:
    """How the hook wrappers run the package: ``python``, ``package`` (its directory as the hooks see it)
    and ``env`` lines (PYTHONPATH inside a root)."""
    if not in_root(spec):
        return {"python": host_python, "package": host_package, "env": ""}
    return {"python": "/usr/bin/python3", "package": f"{LIB_DIR}/slurm_gpu",
            "env": f"export PYTHONPATH={LIB_DIR}\nexport PYTHONPYCACHEPREFIX={spec.dir}/pycache\n"}


# slurm.conf lines a rooted cluster replaces (whole lines of our own generated text).
_PLUGINS = {"ProctrackType": "proctrack/linuxproc", "TaskPlugin": "task/none"}


def adapt(spec: ClusterSpec, files: Dict[str, str]) -> Dict[str, str]:
    """The generated configuration as a rooted cluster of ``spec.slurm`` runs it (see the module's text)."""
    if not in_root(spec):
        return files
    out = dict(files)
    conf = out["slurm.conf"]
    for key, value in _PLUGINS.items():
        conf = re.sub(rf"(?m)^{key}=.*$", f"{key}={value}", conf)
    # Contain needs proctrack/cgroup (slurmctld logs an error without it); Alloc is what the hooks need.
    out["slurm.conf"] = re.sub(r"(?m)^PrologFlags=Alloc,Contain$", "PrologFlags=Alloc", conf)
    out["slurm.conf"] += ("# The roots have no mail program (slurmctld logs an error without one).\n"
                          "MailProg=/bin/true\n")
    out["cgroup.conf"] = ("# cgroup v1 host, cgroup v2 would make slurmd die inside the root: no cgroups.\n"
                          "CgroupPlugin=disabled\n")
    return out
