"""A real Slurm cluster on this machine: one slurmctld and N ``slurmd -N <node>`` with simulated GPUs.

This module runs the daemons (``up``, ``down``, ``status``) and the host's prerequisites (munged, the
test users); ``spec`` says what a cluster is, ``files`` writes its configuration and GPU states,
``layouts`` makes a static cluster's MIG layout. Needs root and the Debian Slurm 22.05 packages.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from slurm_gpu.core.errors import SlurmError
from slurm_gpu.core.vocab import Admission
from slurm_gpu.state.fsutil import atomic_write
from slurm_gpu.testbed import accounting, hookserver, rooted
from slurm_gpu.testbed.files import publisher_script, wired_hooks, write_config
from slurm_gpu.testbed.spec import ClusterSpec, node_names, validate

__all__ = ["up", "down", "status", "processes", "node_states", "wait_idle", "ensure_munge", "ensure_users",
           "start_publisher",
           "TEST_USERS"]

TEST_USERS = ("sgtest1", "sgtest2")
PIDS_FILE = "pids.json"


def _run(args: List[str], spec: Optional[ClusterSpec] = None, check: bool = True,
         timeout: float = 30) -> subprocess.CompletedProcess:
    """``args`` on the host, or with ``spec`` a Slurm tool of that cluster (inside its root if it has one)."""
    if spec is not None:
        args = rooted.command(spec, args)
    proc = subprocess.run(args, env=spec.env() if spec else None, capture_output=True, text=True,
                          timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise SlurmError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def ensure_munge() -> None:
    """Start munged unless one answers already (one per host, shared by every cluster; never stopped)."""
    if _munge_ok():
        return
    os.makedirs("/run/munge", exist_ok=True)
    _run(["chown", "munge:munge", "/run/munge"])
    _run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"])
    for _ in range(50):
        if _munge_ok():
            return
        time.sleep(0.1)
    raise SlurmError("munged does not answer after start")


def _munge_ok() -> bool:
    try:
        cred = subprocess.run(["munge", "-n"], capture_output=True, timeout=5, check=False)
        if cred.returncode != 0:
            return False
        back = subprocess.run(["unmunge"], input=cred.stdout, capture_output=True, timeout=5, check=False)
        return back.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def ensure_users(users: Sequence[str] = TEST_USERS) -> None:
    """The unprivileged users the tests submit jobs as."""
    for user in users:
        try:
            pwd.getpwnam(user)
        except KeyError:
            _run(["useradd", "--create-home", "--shell", "/bin/bash", user])


def _pid_files(spec: ClusterSpec) -> Dict[str, str]:
    files = {"slurmctld": os.path.join(spec.dir, "ctld", "slurmctld.pid")}
    for node in node_names(spec):
        files[f"slurmd:{node}"] = os.path.join(spec.dir, node, "slurmd.pid")
    return files


def _read_pid(path: str) -> Optional[int]:
    try:
        with open(path, encoding="ascii") as fh:
            pid = int(fh.read().strip() or 0)
    except (OSError, ValueError):
        return None
    return pid if pid > 0 and _alive(pid) else None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return False


def _wait_pid_file(path: str, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = _read_pid(path)
        if pid:
            return pid
        time.sleep(0.05)
    raise SlurmError(f"daemon did not write {path} within {timeout:.0f} s")


def up(spec: ClusterSpec, timeout: float = 60) -> Dict[str, Any]:
    """Start the cluster (restarting it if it runs) and wait until every node is idle."""
    validate(spec)
    if os.geteuid() != 0:
        raise SlurmError("the local cluster needs root (slurmd, munge, mknod)")
    down(spec)
    ensure_users()
    if rooted.in_root(spec):
        rooted.prepare(spec, TEST_USERS)  # the cached root of that version, mounted for this cluster
        rooted.start_munge(spec)
    else:
        ensure_munge()
    write_config(spec)
    if spec.accounting:
        accounting.start(spec)
    if wired_hooks(spec):
        hookserver.start(spec)
    pids = _pid_files(spec)
    _run(["slurmctld", "-f", spec.conf], spec)
    for node in node_names(spec):
        _run(["slurmd", "-N", node, "-f", spec.conf], spec)
    started = {"slurmctld": _wait_pid_file(pids["slurmctld"], 15)}
    for node in node_names(spec):
        started[f"slurmd:{node}"] = _wait_pid_file(pids[f"slurmd:{node}"], 15)
    atomic_write(os.path.join(spec.dir, PIDS_FILE), json.dumps(started) + "\n", mode=0o644)
    wait_idle(spec, timeout)
    if spec.accounting:
        accounting.register(spec, list(TEST_USERS))
    if spec.admission == Admission.COUNTS and wired_hooks(spec):
        _start_publishers(spec)
    return status(spec)


def _publisher_pid_file(spec: ClusterSpec, node: str) -> str:
    return os.path.join(spec.dir, node, "publish.pid")


def _start_publishers(spec: ClusterSpec) -> None:
    """One ``slurm-gpu publish --watch`` per node (what the systemd unit slurm-gpu-publish runs on a real
    node): new demand reaches idle nodes within ``publish_interval_s``."""
    for node in node_names(spec):
        atomic_write(_publisher_pid_file(spec, node), f"{start_publisher(spec, node)}\n", mode=0o644)


def start_publisher(spec: ClusterSpec, node: str) -> int:
    """Start ``node``'s re-plan loop in its own session, log in ``<node>/publish.log``; returns its pid. It
    runs where the hooks run (inside the root of a rooted cluster, on that version's Slurm tools and the
    root's python3) and retries every interval while the controller does not answer."""
    log = open(os.path.join(spec.dir, node, "publish.log"), "ab")  # noqa: SIM115 - the child keeps it
    args = [publisher_script(spec), "--node", node, "--watch", str(spec.publish_interval_s)]
    try:
        proc = subprocess.Popen(  # noqa: S603 - fixed argv
            rooted.command(spec, args), env=spec.env(), stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        log.close()
    return proc.pid


def _stop_publishers(spec: ClusterSpec) -> None:
    for node in node_names(spec):
        path = _publisher_pid_file(spec, node)
        pid = _read_pid(path)
        if pid and _is_publisher(pid, spec):
            _signal(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                _signal(pid, signal.SIGKILL)
        if os.path.exists(path):
            os.unlink(path)


def _is_publisher(pid: int, spec: ClusterSpec) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = fh.read().split(b"\0")
        with open(f"/proc/{pid}/environ", "rb") as fh:
            env = fh.read().split(b"\0")
    except OSError:
        return False
    return b"publish" in argv and f"SLURM_CONF={spec.conf}".encode() in env


def wait_idle(spec: ClusterSpec, timeout: float = 60) -> None:
    """Until every node of the cluster is idle; SlurmError naming their states after ``timeout``."""
    deadline = time.monotonic() + timeout
    states: Dict[str, str] = {}
    while time.monotonic() < deadline:
        states = node_states(spec)
        if states and all(s == "idle" for s in states.values()):
            return
        time.sleep(0.2)
    raise SlurmError(f"nodes not idle after {timeout:.0f} s: {states} (logs in {spec.dir})")


def node_states(spec: ClusterSpec) -> Dict[str, str]:
    proc = _run(["sinfo", "-h", "-N", "-o", "%N %t"], spec, check=False, timeout=10)
    if proc.returncode != 0:
        return {}
    states = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    return states


def _scan(spec: ClusterSpec) -> Tuple[Dict[str, int], List[int]]:
    """This cluster's processes found in /proc: its daemons by command line (``slurmctld -f <conf>``,
    ``slurmd -N <node> -f <conf>``, under Debian's ``-wlm`` names too) and its slurmstepd processes by
    environment (``SLURM_CONF=<conf>``)."""
    conf = os.fsencode(spec.conf)
    marker = b"SLURM_CONF=" + conf
    daemons: Dict[str, int] = {}
    stepds: List[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm", "rb") as fh:
                comm = fh.read().strip()
            if comm.startswith(b"slurmstepd"):
                with open(f"/proc/{entry}/environ", "rb") as fh:
                    if marker in fh.read().split(b"\0"):
                        stepds.append(int(entry))
                continue
            base = comm[:-4] if comm.endswith(b"-wlm") else comm
            if base not in (b"slurmctld", b"slurmd"):
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        if conf not in argv:
            continue
        if base == b"slurmctld":
            daemons["slurmctld"] = int(entry)
        elif b"-N" in argv[:-1]:
            daemons[f"slurmd:{os.fsdecode(argv[argv.index(b'-N') + 1])}"] = int(entry)
    return daemons, stepds


def _recorded(spec: ClusterSpec) -> Dict[str, int]:
    try:
        with open(os.path.join(spec.dir, PIDS_FILE), encoding="utf-8") as fh:
            return {str(k): int(v) for k, v in json.load(fh).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def processes(spec: ClusterSpec) -> Dict[str, int]:
    """Running daemons (and job step daemons) of this cluster: name -> pid."""
    out = {}
    recorded = _recorded(spec)
    scanned, stepds = _scan(spec)
    for name, path in _pid_files(spec).items():
        # A daemon removes its pid file when it starts to shut down: the pids recorded at `up` still count;
        # a 24.11 reconfigure starts a new daemon (Debian's slurmctld-wlm, slurmd-wlm behind their links)
        # whose pid file may lag: its command line names this cluster, so it is found all the same.
        for pid in (_read_pid(path), recorded.get(name), scanned.get(name)):
            if pid and _alive(pid) and _comm(pid) in (name.split(":")[0], name.split(":")[0] + "-wlm"):
                out[name] = pid
                break
    for pid in stepds:
        out[f"slurmstepd:{pid}"] = pid
    return out


def down(spec: ClusterSpec, timeout: float = 20) -> Dict[str, Any]:
    """Cancel the cluster's jobs and stop every daemon it started (and unmount its root); idempotent."""
    _stop_publishers(spec)
    running = processes(spec)
    if running:
        _stop_daemons(spec, running, timeout)
    if hookserver.stop(spec):
        running["hook-server"] = 0
    stopped = sorted(running) + accounting.stop(spec)
    if rooted.in_root(spec):
        stopped += rooted.stop(spec)
    return {"stopped": stopped, "dir": spec.dir}


def _stop_daemons(spec: ClusterSpec, running: Dict[str, int], timeout: float) -> None:
    if "slurmctld" in running:
        _run(["scancel", "--full", "--quiet", "--user=*"], spec, check=False, timeout=10)
        proc = _run(["squeue", "-h", "-o", "%A"], spec, check=False, timeout=10)
        ids = [x for x in proc.stdout.split() if x.isdigit()]
        if ids:
            _run(["scancel", "--quiet", *ids], spec, check=False, timeout=10)
        time.sleep(0.5)
    order = [n for n in running if n.startswith("slurmd:")] + [n for n in running if n == "slurmctld"]
    for name in order:
        _signal(running[name], signal.SIGTERM)
    _wait_gone(spec, timeout / 2)
    for pid in processes(spec).values():
        _signal(pid, signal.SIGKILL)
    _wait_gone(spec, timeout / 2)
    left = processes(spec)
    if left:
        raise SlurmError(f"processes of the cluster in {spec.dir} did not stop: {left}")


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_gone(spec: ClusterSpec, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and processes(spec):
        time.sleep(0.1)


def status(spec: ClusterSpec) -> Dict[str, Any]:
    return {
        "name": spec.name,
        "dir": spec.dir,
        "slurm_conf": spec.conf,
        "port_base": spec.port_base,
        "gpus": spec.gpus,
        "mode": spec.mode,
        "slurm": spec.slurm,
        "hooks": wired_hooks(spec),
        "processes": processes(spec),
        "nodes": node_states(spec) if _read_pid(_pid_files(spec)["slurmctld"]) else {},
    }
