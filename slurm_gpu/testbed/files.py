"""Every file of a local test cluster: slurm.conf and gres.conf, the hook wrappers and their
configuration, each node's simulated GPU state and device sandbox (with the layout on a static cluster).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import socket
import sys
from typing import Any, Dict, List, Optional, Tuple

import slurm_gpu
from slurm_gpu.confgen import render as confgen
from slurm_gpu.confgen.from_driver import node_group_from_driver
from slurm_gpu.confgen.inventory import Inventory, NodeGroup, gpu_models
from slurm_gpu.core.vocab import Admission
from slurm_gpu.devices.open import open_driver
from slurm_gpu.devices.simstate import init_state
from slurm_gpu.state.fsutil import atomic_write
from slurm_gpu.testbed import accounting, hookserver, rooted
from slurm_gpu.testbed.layouts import apply_layout
from slurm_gpu.testbed.spec import ClusterSpec, node_names, save_spec

__all__ = ["write_config", "init_gpus", "wired_hooks", "hooks_available", "publisher_script"]

_HOOKS = (("prolog", "prolog"), ("epilog", "epilog"), ("task_prolog", "task-prolog"))


def publisher_script(spec: ClusterSpec) -> str:
    """The wrapper of ``slurm-gpu publish`` (count admission's re-plan loop), at the same path inside a
    root as outside."""
    return os.path.join(spec.dir, "hooks", "publish")


def _write(path: str, text: str, mode: int = 0o644) -> None:
    atomic_write(path, text, mode=mode)


def hooks_available() -> bool:
    """The hooks' entry is importable (an installed package without it runs the cluster without hooks)."""
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
        *(accounting.slurm_conf_lines(spec) if spec.accounting else
          ["JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none"]),
        "JobCompType=jobcomp/none",
        "",
    ]
    return "\n".join(lines)


def _inventory(spec: ClusterSpec, host: str) -> Inventory:
    groups = []
    for i, name in enumerate(node_names(spec), start=1):
        # Each node its own address/port: several slurmd on one host (slurm-facts: slurmd -N).
        address = (("NodeHostname", host), ("NodeAddr", "127.0.0.1"), ("Port", str(spec.port_base + i)))
        common: Dict[str, Any] = {"cpus": spec.cpus, "memory_mib": spec.memory_mib, "slurm": address}
        if spec.mode == "static":
            groups.append(_static_group(spec, name, common))
        else:
            groups.append(NodeGroup(names=name, gpus=gpu_models(spec.node_gpus(i)),
                                    features=spec.node_features(i), **common))
    return Inventory(groups=tuple(groups), max_count_per_node=spec.max_count_per_node)


def _static_group(spec: ClusterSpec, node: str, common: Dict[str, Any]) -> NodeGroup:
    """The node's group as the driver reports it after the layout was made (typed gres, sandbox files)."""
    base = os.path.join(spec.dir, node)
    driver = open_driver("sim", sim_state=os.path.join(base, "gpus.json"))
    try:
        return node_group_from_driver(driver, node, "static", dev_dir=os.path.join(base, "sandbox", "dev"),
                                      **common)
    finally:
        driver.close()


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
        f"admission:\n  mode: {spec.admission}\n"
    )


def _task_prolog_script() -> Optional[str]:
    path = os.path.join(os.path.dirname(os.path.abspath(slurm_gpu.__file__)), "hooks", "task_prolog.py")
    return path if os.path.isfile(path) else None


def _hook_script(spec: ClusterSpec, command: str) -> str:
    script = _task_prolog_script()
    package = os.path.dirname(os.path.abspath(slurm_gpu.__file__))
    runtime = rooted.hook_runtime(spec, sys.executable, package)
    if command == "task-prolog" and script:
        # Runs as the job's user, per task: the system python (a venv's may sit in a private home) on the
        # standard-library-only script; {node} in the state dir is replaced by the script itself.
        if rooted.in_root(spec):
            python = runtime["python"]
            script = os.path.join(runtime["package"], "hooks", "task_prolog.py")
        else:
            python = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
        return f"#!/bin/sh\nexec {python} -I -S {script} {spec.dir}/{{node}}/state\n"
    # Prolog and Epilog through the hooks' own entry (no click: they start for every job), as the shipped
    # prolog.d/epilog.d scripts do; anything else through the CLI.
    module = "slurm_gpu.hooks.entry" if command in ("prolog", "epilog") else "slurm_gpu"
    return (
        "#!/bin/sh\n"
        f"export SLURM_GPU_CONFIG={spec.dir}/config.yaml\n"
        f"export SLURM_CONF={spec.conf}\n"
        f"export SLURM_GPU_HOOK_SOCKET={hookserver.socket_path(spec)}\n"
        f"{runtime['env']}"
        f"exec {runtime['python']} -m {module} {command} \"$@\"\n"
    )


def write_config(spec: ClusterSpec) -> Dict[str, str]:
    """Write every file of the cluster (configs, hook wrappers, GPU states); returns name -> path."""
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
    if with_hooks and spec.admission == Admission.COUNTS:
        # the re-plan loop's wrapper (testbed.local starts one per node), on the hooks' interpreter
        _write(publisher_script(spec), _hook_script(spec, "publish"), mode=0o755)
    options = confgen.Options(prolog=hooks["prolog"], epilog=hooks["epilog"],
                              task_prolog=hooks["task_prolog"], constrain_cores=False, constrain_ram=False,
                              scheduler_parameters=spec.scheduler_parameters, admission=spec.admission,
                              slurm_version=spec.slurm, accounting=spec.accounting)
    if not spec.cgroups:
        options = dataclasses.replace(options, proctrack_type="proctrack/linuxproc", task_plugin="task/none")
    init_gpus(spec)  # first: a static node's gres come from the layout made on its GPUs
    inventory = _inventory(spec, host)
    files = rooted.adapt(spec, confgen.render_all(inventory, options))
    files["slurm.conf"] = (_base_conf(spec, host) + files["slurm.conf"]
                           + "PartitionName=gpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n")
    paths = {}
    for name, text in files.items():
        paths[name] = os.path.join(d, "etc", name)
        _write(paths[name], text)
    _write(os.path.join(d, "config.yaml"), _hook_config(spec))
    save_spec(spec)
    return paths


def init_gpus(spec: ClusterSpec) -> None:
    """Each node's simulated GPU state and sandbox; on a static cluster, the layout made on every GPU."""
    for i, node in enumerate(node_names(spec), start=1):
        runs: List[Tuple[str, int]] = []  # (model, count) in GPU order
        for model in gpu_models(spec.node_gpus(i)):
            if runs and runs[-1][0] == model.key:
                runs[-1] = (model.key, runs[-1][1] + 1)
            else:
                runs.append((model.key, 1))
        base = os.path.join(spec.dir, node)
        for sub in ("spool", "state", "sandbox"):
            os.makedirs(os.path.join(base, sub), exist_ok=True)
        state = os.path.join(base, "gpus.json")
        init_state(state, runs, mig_enabled=True, sandbox=os.path.join(base, "sandbox"))
        if spec.mode == "static":
            driver = open_driver("sim", sim_state=state)
            try:
                apply_layout(driver, spec.layout)
            finally:
                driver.close()
