"""The local cluster's hook server: one ``slurm-gpu-hook serve`` for all its nodes, as a node runs the
slurm-gpu-hooks unit. The hook scripts name its socket (``$SLURM_GPU_HOOK_SOCKET``); every request carries
its node's environment, so one server stands in for each node's own. A cluster in a Debian root runs its
hooks with that root's interpreter and package, so it has none (its hooks run in-process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from slurm_gpu.core.errors import SlurmError
from slurm_gpu.state.fsutil import atomic_write
from slurm_gpu.testbed import rooted
from slurm_gpu.testbed.spec import ClusterSpec

__all__ = ["socket_path", "start", "stop", "running"]


def socket_path(spec: ClusterSpec) -> str:
    """What the cluster's hook scripts export as ``SLURM_GPU_HOOK_SOCKET`` (``none``: no server)."""
    return "none" if rooted.in_root(spec) else os.path.join(spec.dir, "hooks", "server", "hooks.sock")


def _pid_file(spec: ClusterSpec) -> str:
    return os.path.join(spec.dir, "hooks", "server.pid")


def start(spec: ClusterSpec, timeout: float = 20) -> int:
    """Start the server and wait until it listens; returns its pid (0 for a cluster without one)."""
    path = socket_path(spec)
    if path == "none":
        return 0
    stop(spec)
    log = open(os.path.join(spec.dir, "log", "hook-server.log"), "ab")  # noqa: SIM115 - the child keeps it
    try:
        proc = subprocess.Popen(  # noqa: S603 - fixed argv
            [sys.executable, "-m", "slurm_gpu.hooks.entry", "serve", "--socket", path], env=spec.env(),
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        log.close()
    atomic_write(_pid_file(spec), f"{proc.pid}\n", mode=0o644)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if os.path.exists(path):
            return proc.pid
        time.sleep(0.02)
    raise SlurmError(f"the hook server did not listen on {path} (log: {spec.dir}/log/hook-server.log)")


def running(spec: ClusterSpec) -> int:
    """The pid of this cluster's hook server, or 0."""
    try:
        with open(_pid_file(spec), encoding="ascii") as fh:
            pid = int(fh.read().strip() or 0)
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = fh.read().split(b"\0")
    except (OSError, ValueError):
        return 0
    return pid if b"serve" in argv and os.fsencode(socket_path(spec)) in argv else 0


def stop(spec: ClusterSpec, timeout: float = 10) -> bool:
    """Stop the server (SIGTERM: it removes its socket; hooks it is running finish); True if one ran."""
    pid = running(spec)
    if pid:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while running(spec) and time.monotonic() < deadline:
            time.sleep(0.02)
        if running(spec):
            os.kill(pid, signal.SIGKILL)
    if os.path.exists(_pid_file(spec)):
        os.unlink(_pid_file(spec))
    return bool(pid)
