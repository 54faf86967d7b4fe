"""A real Slurm cluster on this machine: one slurmctld and N ``slurmd -N <node>`` with simulated GPUs.

Everything lives under one directory (configs, spool, logs, pid files, each node's simulated GPU state and
device sandbox); ports come from ``port_base`` (slurmctld) and ``port_base + i`` (node i), so clusters with
other directories and port bases run side by side. Needs root and the Debian Slurm 22.05 packages.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional

from slurm_gpu.core.errors import BadInputError, SlurmError

__all__ = ["ClusterSpec", "up", "down", "status", "node_names", "apply_layout", "wired_hooks", "TEST_USERS",
           "DEFAULT_DIR", "DEFAULT_PORT_BASE"]

DEFAULT_DIR = "/var/tmp/slurm-gpu-cluster"
DEFAULT_PORT_BASE = 17000
TEST_USERS = ("sgtest1", "sgtest2")
SPEC_FILE = "cluster.json"
PIDS_FILE = "pids.json"
# Quick passes for the tests, with no start limit: the one-start-per-pass setting slurm-gpu ships
# (confgen.SCHEDULER_PARAMETERS) starts ~0.5 jobs/s, too slow for the 300-job trace test; races it allows
# are requeued by the prolog (docs/admission.md, "Scheduling passes and races").
TEST_SCHEDULER_PARAMETERS = "bf_interval=1,sched_min_interval=100000,default_queue_depth=200"
_HOOKS = (("prolog", "prolog"), ("epilog", "epilog"), ("task_prolog", "task-prolog"))


@dataclass(frozen=True)
class ClusterSpec:
    dir: str = DEFAULT_DIR
    nodes: int = 2
    gpus: str = "H100-80GB:4"
    port_base: int = DEFAULT_PORT_BASE
    cpus: int = 8
    memory_mib: int = 16000
    max_count_per_node: int = 8
    mode: str = "dynamic"  # static: a fixed MIG layout made through the driver, typed gpu gres (no hooks)
    layout: str = ""  # static: profiles made on every GPU, first fit, e.g. "3g.40gb,2g.20gb,1g.10gb"
    hooks: Optional[bool] = None  # None: wired on dynamic clusters when slurm_gpu.cli.hooks exists
    # slurm.conf SchedulerParameters (empty: Slurm's defaults); see docs/admission.md on passes and races
    scheduler_parameters: str = TEST_SCHEDULER_PARAMETERS

    @property
    def name(self) -> str:
        return f"sg{self.port_base}"

    @property
    def conf(self) -> str:
        return os.path.join(self.dir, "etc", "slurm.conf")

    def env(self) -> Dict[str, str]:
        env = dict(os.environ)
        env["SLURM_CONF"] = self.conf
        return env

    def node_gpus(self, i: int) -> str:
        """GPUs of node ``i`` (1-based): ``gpus`` is one spec for all, or per-node specs split by ';'
        (node i takes entry i, cycling), e.g. ``H100-80GB:1;A100-40GB:1``."""
        parts = [p.strip() for p in self.gpus.split(";") if p.strip()]
        return parts[(i - 1) % len(parts)]


def node_names(spec: ClusterSpec) -> List[str]:
    # Names carry the port base: slurmd's cgroups are named after the node, shared across clusters.
    return [f"{spec.name}n{i}" for i in range(1, spec.nodes + 1)]


def _validate(spec: ClusterSpec) -> None:
    if not 1 <= spec.nodes <= 64:
        raise BadInputError(f"--nodes must be 1..64, not {spec.nodes}", part=str(spec.nodes))
    if not 1024 <= spec.port_base <= 65535 - spec.nodes - 1:
        raise BadInputError(f"--port-base {spec.port_base} out of range", part=str(spec.port_base))
    if not os.path.isabs(spec.dir):
        raise BadInputError(f"--dir must be an absolute path: {spec.dir}", part=spec.dir)
    if spec.mode not in ("dynamic", "static"):
        raise BadInputError(f"--mode must be dynamic or static, not {spec.mode!r}", part=spec.mode)
    if (spec.mode == "static") != bool(spec.layout):
        raise BadInputError("--layout goes with --mode static, and static needs a layout", part=spec.layout)
    from slurm_gpu.confgen.inventory import gpu_models

    for i in range(1, spec.nodes + 1):
        gpu_models(spec.node_gpus(i))  # unknown models fail before anything starts


def _run(args: List[str], spec: Optional[ClusterSpec] = None, check: bool = True,
         timeout: float = 30) -> subprocess.CompletedProcess:
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


def ensure_users(users=TEST_USERS) -> None:
    import pwd

    for user in users:
        try:
            pwd.getpwnam(user)
        except KeyError:
            _run(["useradd", "--create-home", "--shell", "/bin/bash", user])


def _write(path: str, text: str, mode: int = 0o644) -> None:
    from slurm_gpu.state.fsutil import atomic_write

    atomic_write(path, text, mode=mode)


def hooks_available() -> bool:
    """The hook commands exist (``slurm-gpu-hook prolog`` ...); until then the cluster runs without hooks."""
    import importlib.util

    return importlib.util.find_spec("slurm_gpu.hooks.entry") is not None


def wired_hooks(spec: ClusterSpec) -> bool:
    """Whether the cluster runs our Prolog/Epilog/TaskProlog (static-layout clusters need none)."""
    wanted = spec.hooks if spec.hooks is not None else spec.mode == "dynamic"
    return bool(wanted) and hooks_available()


def _base_conf(spec: ClusterSpec, host: str) -> str:
    d = spec.dir
    lines = [
        f"# Local test cluster of slurm-gpu ({spec.nodes} nodes, {spec.gpus}, {spec.mode}). Generated.",
        f"ClusterName={spec.name}",
        f"SlurmctldHost={host}(127.0.0.1)",
        f"SlurmctldPort={spec.port_base}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        f"StateSaveLocation={d}/ctld",
        f"SlurmctldPidFile={d}/ctld/slurmctld.pid",
        f"SlurmctldLogFile={d}/log/slurmctld.log",
        f"SlurmdSpoolDir={d}/%n/spool",
        f"SlurmdPidFile={d}/%n/slurmd.pid",
        f"SlurmdLogFile={d}/%n/slurmd.log",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        # Distinct job ids per cluster: cgroup and spool paths of concurrent clusters never meet.
        f"FirstJobId={spec.port_base * 100 + 1}",
        "SlurmdParameters=config_overrides",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU",
        "SchedulerType=sched/backfill",
        # dynamic clusters get it from confgen (with the hooks' settings); static ones race for nothing
        *([f"SchedulerParameters={spec.scheduler_parameters}"]
          if spec.mode == "static" and spec.scheduler_parameters else []),
        "MinJobAge=600",
        "KillWait=2",
        "InactiveLimit=0",
        "SlurmdTimeout=60",
        "ReturnToService=2",
        "MpiDefault=none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "",
    ]
    return "\n".join(lines)


def _inventory(spec: ClusterSpec, host: str):
    from slurm_gpu.confgen.inventory import Inventory, NodeGroup, gpu_models

    groups = []
    for i, name in enumerate(node_names(spec), start=1):
        # Each node its own address/port: several slurmd on one host (slurm-facts: slurmd -N).
        address = (("NodeHostname", host), ("NodeAddr", "127.0.0.1"), ("Port", str(spec.port_base + i)))
        common = {"cpus": spec.cpus, "memory_mib": spec.memory_mib, "slurm": address}
        if spec.mode == "static":
            groups.append(_static_group(spec, name, common))
        else:
            groups.append(NodeGroup(names=name, gpus=gpu_models(spec.node_gpus(i)), **common))
    return Inventory(groups=tuple(groups), max_count_per_node=spec.max_count_per_node)


def _static_group(spec: ClusterSpec, node: str, common: Dict[str, Any]):
    """The node's group as the driver reports it after the layout was made (typed gres, sandbox files)."""
    from slurm_gpu.confgen.from_driver import node_group_from_driver
    from slurm_gpu.devices.open import open_driver

    base = os.path.join(spec.dir, node)
    driver = open_driver("sim", sim_state=os.path.join(base, "gpus.json"))
    try:
        return node_group_from_driver(driver, node, "static", dev_dir=os.path.join(base, "sandbox", "dev"),
                                      **common)
    finally:
        driver.close()


def apply_layout(driver: Any, layout: str) -> List[Any]:
    """Create the profiles of ``layout`` (comma list) on every GPU through the driver, first fit."""
    from slurm_gpu.core.catalog import load_catalog

    catalog = load_catalog()
    made = []
    for gpu in driver.gpus():
        model = catalog.model(gpu.model)
        used = [(i.start, i.end) for i in driver.instances(gpu.index)]
        for name in (x.strip() for x in layout.split(",") if x.strip()):
            profile = model.profile(name)
            start = next((s for s, z in profile.placements
                          if all(s + z <= a or s >= b for a, b in used)), None)
            if start is None:
                raise BadInputError(f"layout {layout!r}: no room for {name} on GPU {gpu.index} ({model.key})",
                                    part=name)
            inst = driver.create(gpu.index, profile.profile_id, start)
            used.append((inst.start, inst.end))
            made.append(inst)
    return made


def _hook_config(spec: ClusterSpec) -> str:
    d = spec.dir
    return (
        "# slurm-gpu configuration of the local test cluster ({node} is the node's name).\n"
        "version: 1\n"
        "driver:\n"
        "  kind: sim\n"
        f"  sim_state: {d}/{{node}}/gpus.json\n"
        f"  sim_sandbox: {d}/{{node}}/sandbox\n"
        f"state_dir: {d}/{{node}}/state\n"
        f"policy:\n  max_count_per_node: {spec.max_count_per_node}\n"
        f"slurm:\n  conf: {spec.conf}\n"
    )


def _task_prolog_script() -> Optional[str]:
    import slurm_gpu

    path = os.path.join(os.path.dirname(os.path.abspath(slurm_gpu.__file__)), "hooks", "task_prolog.py")
    return path if os.path.isfile(path) else None


def _hook_script(spec: ClusterSpec, command: str) -> str:
    script = _task_prolog_script()
    if command == "task-prolog" and script:
        # Runs as the job's user, per task: the system python (a venv's may sit in a private home) on the
        # standard-library-only script; {node} in the state dir is replaced by the script itself.
        python = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
        return f"#!/bin/sh\nexec {python} -I -S {script} {spec.dir}/{{node}}/state\n"
    # Prolog and Epilog through the hooks' own entry (no click: they start for every job), as the shipped
    # prolog.d/epilog.d scripts do; anything else through the CLI.
    module = "slurm_gpu.hooks.entry" if command in ("prolog", "epilog") else "slurm_gpu"
    return (
        "#!/bin/sh\n"
        f"export SLURM_GPU_CONFIG={spec.dir}/config.yaml\n"
        f"export SLURM_CONF={spec.conf}\n"
        f"exec {sys.executable} -m {module} {command} \"$@\"\n"
    )


def write_config(spec: ClusterSpec) -> Dict[str, str]:
    """Write every file of the cluster (configs, hook wrappers, GPU states); returns name -> path."""
    from slurm_gpu.confgen import render as confgen

    host = socket.gethostname().split(".")[0]
    d = spec.dir
    for sub in ("etc", "ctld", "log", "hooks"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    os.chmod(d, 0o755)  # noqa: S103 - test users read slurm.conf through it
    with_hooks = wired_hooks(spec)
    hooks: Dict[str, Optional[str]] = {}
    for key, command in _HOOKS:
        path = os.path.join(d, "hooks", command)
        if with_hooks:
            _write(path, _hook_script(spec, command), mode=0o755)
        hooks[key] = path if with_hooks else None
    options = confgen.Options(prolog=hooks["prolog"], epilog=hooks["epilog"],
                              task_prolog=hooks["task_prolog"], constrain_cores=False, constrain_ram=False,
                              scheduler_parameters=spec.scheduler_parameters)
    _init_gpus(spec)  # first: a static node's gres come from the layout made on its GPUs
    inventory = _inventory(spec, host)
    files = confgen.render_all(inventory, options)
    files["slurm.conf"] = (_base_conf(spec, host) + files["slurm.conf"]
                           + "PartitionName=gpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n")
    paths = {}
    for name, text in files.items():
        paths[name] = os.path.join(d, "etc", name)
        _write(paths[name], text)
    _write(os.path.join(d, "config.yaml"), _hook_config(spec))
    _write(os.path.join(d, SPEC_FILE), json.dumps(asdict(spec), indent=2) + "\n")
    return paths


def _init_gpus(spec: ClusterSpec) -> None:
    from slurm_gpu.confgen.inventory import gpu_models

    try:
        from slurm_gpu.devices.simnvml import init_state
    except ImportError:
        from slurm_gpu.devices.simstate import init_state
    for i, node in enumerate(node_names(spec), start=1):
        runs: List[List[Any]] = []  # (model, count) in GPU order
        for model in gpu_models(spec.node_gpus(i)):
            if runs and runs[-1][0] == model.key:
                runs[-1][1] += 1
            else:
                runs.append([model.key, 1])
        base = os.path.join(spec.dir, node)
        for sub in ("spool", "state", "sandbox"):
            os.makedirs(os.path.join(base, sub), exist_ok=True)
        state = os.path.join(base, "gpus.json")
        init_state(state, [tuple(r) for r in runs], mig_enabled=True, sandbox=os.path.join(base, "sandbox"))
        if spec.mode == "static":
            from slurm_gpu.devices.open import open_driver

            driver = open_driver("sim", sim_state=state)
            try:
                apply_layout(driver, spec.layout)
            finally:
                driver.close()


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
    _validate(spec)
    if os.geteuid() != 0:
        raise SlurmError("the local cluster needs root (slurmd, munge, mknod)")
    down(spec)
    ensure_munge()
    ensure_users()
    write_config(spec)
    pids = _pid_files(spec)
    _run(["slurmctld", "-f", spec.conf], spec)
    for node in node_names(spec):
        _run(["slurmd", "-N", node, "-f", spec.conf], spec)
    started = {"slurmctld": _wait_pid_file(pids["slurmctld"], 15)}
    for node in node_names(spec):
        started[f"slurmd:{node}"] = _wait_pid_file(pids[f"slurmd:{node}"], 15)
    _write(os.path.join(spec.dir, PIDS_FILE), json.dumps(started) + "\n")
    wait_idle(spec, timeout)
    return status(spec)


def wait_idle(spec: ClusterSpec, timeout: float = 60) -> None:
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


def _our_stepds(spec: ClusterSpec) -> List[int]:
    """slurmstepd processes of this cluster: their environment names its slurm.conf."""
    marker = f"SLURM_CONF={spec.conf}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm", "rb") as fh:
                if not fh.read().startswith(b"slurmstepd"):
                    continue
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if marker in fh.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found


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
    for name, path in _pid_files(spec).items():
        # A daemon removes its pid file when it starts to shut down: the pids recorded at `up` still count.
        for pid in (_read_pid(path), recorded.get(name)):
            if pid and _alive(pid) and _comm(pid) == name.split(":")[0]:
                out[name] = pid
                break
    for pid in _our_stepds(spec):
        out[f"slurmstepd:{pid}"] = pid
    return out


def down(spec: ClusterSpec, timeout: float = 20) -> Dict[str, Any]:
    """Cancel the cluster's jobs and stop every daemon it started; idempotent."""
    running = processes(spec)
    if not running:
        return {"stopped": [], "dir": spec.dir}
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
    return {"stopped": sorted(running), "dir": spec.dir}


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
        "hooks": wired_hooks(spec),
        "processes": processes(spec),
        "nodes": node_states(spec) if _read_pid(_pid_files(spec)["slurmctld"]) else {},
    }


def load_spec(directory: str) -> ClusterSpec:
    """The spec a cluster in ``directory`` was started with (for ``down``/``status`` without options)."""
    path = os.path.join(directory, SPEC_FILE)
    try:
        with open(path, encoding="utf-8") as fh:
            return ClusterSpec(**json.load(fh))
    except FileNotFoundError:
        return ClusterSpec(dir=directory)
    except (OSError, ValueError, TypeError) as exc:
        raise BadInputError(f"cannot read {path}: {exc}", part=path) from exc
