"""``slurm-gpu config gres|slurm|cgroup|job-submit|all``: render Slurm configuration for MIG nodes."""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

import click

from slurm_gpu.cli.main import driver_options, get_context
from slurm_gpu.cli.output import emit_json
from slurm_gpu.confgen.inventory import MODES
from slurm_gpu.core.vocab import ADMISSION_MODES, DEFAULT_ADMISSION

KIND_CHOICES = ("gres", "slurm", "cgroup", "job-submit", "all")
CGROUP_CHOICES = {"auto": "autodetect", "v1": "cgroup/v1", "v2": "cgroup/v2"}


@click.command("config")
@click.argument("kind", type=click.Choice(KIND_CHOICES))
@click.option("--inventory", "inventory_path", type=click.Path(dir_okay=False),
              help="YAML inventory of node groups (schema in docs/confgen.md).")
@click.option("--gpus", help="Inventory of one node group from a GPU list, e.g. H100-80GB:8.")
@click.option("--from-driver", is_flag=True,
              help="Inventory of this node from its GPU driver (configured, or --driver/--sim-state).")
@driver_options
@click.option("--mode", type=click.Choice(MODES), default="dynamic", show_default=True,
              help="With --from-driver: static binds a typed gpu gres to every MIG device that exists now.")
@click.option("--nodes", "node_names",
              help="Node names (Slurm hostlist) for --gpus/--from-driver [default: localhost / this host].")
@click.option("--dev-dir", help="Where the GPU device files are (static gres File= paths) [default: /dev, "
              "or <sandbox>/dev of a simulated driver].")
@click.option("--max-count", type=click.IntRange(1, 64), help="Largest k of mig.<profile>.<k> features.")
@click.option("--prolog", help="Prolog path to write into slurm.conf, e.g. '/etc/slurm/prolog.d/*' (the "
              "shipped prolog.d script runs slurm-gpu-hook prolog).")
@click.option("--epilog", help="Epilog path to write into slurm.conf, e.g. '/etc/slurm/epilog.d/*'.")
@click.option("--task-prolog", help="TaskProlog path to write into slurm.conf, e.g. "
              "/etc/slurm/task-prolog.d/slurm-gpu.")
@click.option("--cgroup", "cgroup_version", type=click.Choice(CGROUP_CHOICES), default="auto",
              show_default=True, help="cgroup.conf CgroupPlugin: v1, v2 (unified hierarchy: Debian 12, "
              "RHEL 9) or Slurm's autodetect.")
@click.option("--admission", type=click.Choice(ADMISSION_MODES), default=DEFAULT_ADMISSION, show_default=True,
              help="counts: migp counts, no start limit; features: fit features with one start per pass "
              "(docs/admission.md; the nodes' config.yaml must say the same).")
@click.option("--slurm-version", help="The Slurm release the files are for, e.g. 24.11 [default: the local "
              "`scontrol --version`, else 22.05]. job_submit.lua admits `srun --gres=gpu:<profile>` "
              "allocations from 24.11 on.")
@click.option("--accounting", is_flag=True, help="The cluster runs slurmdbd: add AccountingStorageTRES so "
              "sacct records each MIG job's profile (counts) or slices (features).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Write files into this folder.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON document: each file name with its text (with --out: the paths written).")
def cmd(kind: str, inventory_path: Optional[str], gpus: Optional[str], from_driver: bool,
        driver_kind: Optional[str], sim_state: Optional[str], mode: str, node_names: Optional[str],
        dev_dir: Optional[str], max_count: Optional[int], prolog: Optional[str], epilog: Optional[str],
        task_prolog: Optional[str], cgroup_version: str, admission: str, slurm_version: Optional[str],
        accounting: bool, out_dir: Optional[str], as_json: bool) -> None:
    """Render gres.conf, slurm.conf lines, cgroup.conf or job_submit.lua.

    \b
    Example:
      slurm-gpu config all --inventory cluster.yaml --out /etc/slurm/generated
      slurm-gpu config slurm --gpus H100-80GB:8 --nodes 'gpu[01-16]'
      slurm-gpu config gres --from-driver --mode static
      slurm-gpu config cgroup --gpus H100-80GB:8 --cgroup v2
      slurm-gpu config all --gpus H100-80GB:8 --nodes 'gpu[01-16]' --admission counts
    """
    import dataclasses

    from slurm_gpu.confgen import render as confgen
    from slurm_gpu.confgen.inventory import inventory_from_dict, load_inventory
    from slurm_gpu.core.errors import BadInputError

    if sum(map(bool, (inventory_path, gpus, from_driver))) != 1:
        raise BadInputError("give exactly one of --inventory FILE, --gpus MODEL[:COUNT] or --from-driver")
    if mode == "static" and not from_driver:
        raise BadInputError("--mode static needs --from-driver (or a layout in an --inventory file)",
                            part=mode)
    if inventory_path:
        inventory = load_inventory(inventory_path)
    elif gpus:
        inventory = inventory_from_dict({"version": 1, "nodes": [{"names": node_names or "localhost",
                                                                   "gpus": gpus}]})
    else:
        inventory, sandbox = _from_driver(driver_kind, sim_state, mode, node_names)
        if sandbox and not dev_dir:
            dev_dir = f"{sandbox}/dev"
    if max_count:
        inventory = dataclasses.replace(inventory, max_count_per_node=max_count)
    options = confgen.Options(prolog=prolog, epilog=epilog, task_prolog=task_prolog,
                              dev_dir=dev_dir or "/dev", cgroup_plugin=CGROUP_CHOICES[cgroup_version],
                              admission=admission, slurm_version=_slurm_version(slurm_version),
                              accounting=accounting)
    kinds = confgen.KINDS if kind == "all" else (kind,)
    files = {confgen.FILENAMES[k]: confgen.render(k, inventory, options) for k in kinds}
    _emit(files, out_dir, as_json)


def _slurm_version(given: Optional[str]) -> str:
    """``--slurm-version``, checked; else the local scontrol's release; else 22.05 (its limits are the
    safe side: srun-made MIG allocations are refused with a pointer to salloc)."""
    import shutil

    from slurm_gpu.confgen.render import slurm_release
    from slurm_gpu.core.errors import SlurmError
    from slurm_gpu.slurm.client import SlurmCli

    if given:
        slurm_release(given)
        return given
    scontrol = shutil.which("scontrol")
    if scontrol:
        try:
            major, minor = SlurmCli(os.path.dirname(scontrol)).version()
            return f"{major}.{minor:02d}"
        except SlurmError:
            pass
    return "22.05"


def _emit(files: Dict[str, str], out_dir: Optional[str], as_json: bool) -> None:
    """Write the files to ``out_dir`` (saying which), or print them (as one JSON document)."""
    from slurm_gpu.confgen import render as confgen

    if out_dir:
        paths = confgen.write_files(files, out_dir)
        if as_json:
            emit_json("config.written", {"written": paths})
        else:
            for path in paths:
                click.echo(f"wrote {path}")
        return
    if as_json:
        emit_json("config", files)  # {"schema": ..., "<file name>": "<text>", ...}
        return
    for name, text in files.items():
        if len(files) > 1:
            click.echo(f"# ===== {name}")
        click.echo(text, nl=False)


def _from_driver(driver_kind: Optional[str], sim_state: Optional[str], mode: str,
                 node_names: Optional[str]) -> Tuple[Any, Optional[str]]:
    """The node's inventory and, for a simulated driver with a sandbox, the sandbox (its /dev lives there)."""
    import socket

    from slurm_gpu.confgen.from_driver import inventory_from_driver

    names = node_names or socket.gethostname().split(".")[0]  # slurmd's default NodeName
    context = get_context()
    with context.driver(driver_kind, sim_state) as driver:
        inventory = inventory_from_driver(driver, names, mode)
    sandbox = None
    if driver_kind != "nvml":
        state = sim_state
        if not state and not driver_kind and context.config.driver.kind == "sim":
            state = context.config.driver.sim_state
        if state:
            from slurm_gpu.devices.simstate import load_state

            sandbox = load_state(state).get("sandbox")
    return inventory, sandbox
