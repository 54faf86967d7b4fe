"""``slurm-gpu sim``: create, inspect, reset the simulated GPU driver's state file, attach fake processes.

The simulated driver (``slurm_gpu.devices.simnvml`` over ``simstate``) keeps a node's GPUs and MIG
instances in one JSON state file that every process shares; these commands are thin wrappers over its
helpers (``simstate``, ``simprocs``).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import click

from slurm_gpu.cli.main import SIM_STATE_ENV, get_context, renamed_option, sim_state_option
from slurm_gpu.cli.output import emit_json, emit_pairs, emit_table, json_option


def _state_option(func: Any) -> Any:
    # --sim-state, as in inventory/status/config; --state was its name here before.
    func = renamed_option("--state", "--sim-state", "sim_state", type=click.Path(dir_okay=False))(func)
    return sim_state_option(
        f"The simulated driver's state file (env {SIM_STATE_ENV}; else the config's driver.sim_state)."
    )(func)


def _resolve_state(sim_state: Optional[str]) -> str:
    """--sim-state, else $SLURM_GPU_SIM_STATE (click), else ``sim_state`` of the node configuration."""
    if sim_state:
        return sim_state
    configured = get_context().config.driver.sim_state
    if not configured:
        raise click.UsageError(
            f"no simulated state file: give --sim-state, set {SIM_STATE_ENV}, "
            "or the config's driver.sim_state"
        )
    return str(configured)


@click.group("sim")
def cmd() -> None:
    """Create and inspect a simulated GPU driver state.

    \b
    Example:
      slurm-gpu sim init --gpus H100-80GB:4,A100-40GB:2 --sim-state /tmp/node.json
      slurm-gpu sim show --sim-state /tmp/node.json
      export SLURM_GPU_SIM_STATE=/tmp/node.json; slurm-gpu sim reset
    """


@cmd.command("init")
@click.option(
    "--gpus", required=True, metavar="MODEL:N[,MODEL:N]", help="GPUs of the node, e.g. H100-80GB:4."
)
@_state_option
@click.option(
    "--sandbox",
    type=click.Path(file_okay=False),
    help="Directory for the capability file mig-minors and, as root, device nodes under dev/.",
)
@click.option("--mig-disabled", is_flag=True, help="Start with MIG mode off on every GPU.")
@click.option("--allow-unprivileged", is_flag=True, help="Let non-root processes change the state.")
@json_option
def init(
    gpus: str,
    sim_state: Optional[str],
    sandbox: Optional[str],
    mig_disabled: bool,
    allow_unprivileged: bool,
    as_json: bool,
) -> None:
    """Create (or replace) a simulated node's state file with GPUs and no MIG instances.

    GPUs get indices 0.. in the order given, fresh UUIDs and MIG mode on (off with --mig-disabled).

    \b
    Example:
      slurm-gpu sim init --gpus H100-80GB:8 --sim-state /var/lib/slurm-gpu/sim.json
      slurm-gpu sim init --gpus A100-40GB:2,A30-24GB --sim-state /tmp/n.json --sandbox /tmp/n --mig-disabled
    """
    from slurm_gpu.core.nodespec import parse_gpus
    from slurm_gpu.devices.simstate import init_state

    sim_state = _resolve_state(sim_state)
    init_state(
        sim_state,
        parse_gpus(gpus),
        mig_enabled=not mig_disabled,
        sandbox=sandbox,
        allow_unprivileged=allow_unprivileged,
    )
    _show(sim_state, as_json)


@cmd.command("show")
@_state_option
@json_option
def show(sim_state: Optional[str], as_json: bool) -> None:
    """Show the simulated GPUs, their MIG modes, instances (with MIG UUIDs) and attached processes.

    \b
    Example:
      slurm-gpu sim show --sim-state /tmp/node.json
      slurm-gpu sim show --sim-state /tmp/node.json --json > node.json
      slurm-gpu plan --node-json node.json 1g.10gb
    """
    _show(_resolve_state(sim_state), as_json)


@cmd.command("reset")
@_state_option
@json_option
def reset(sim_state: Optional[str], as_json: bool) -> None:
    """Destroy every simulated instance and forget every process; GPUs, UUIDs and MIG modes stay.

    \b
    Example:
      slurm-gpu sim reset --sim-state /tmp/node.json
    """
    from slurm_gpu.devices.simstate import reset_state

    sim_state = _resolve_state(sim_state)
    reset_state(sim_state)
    _show(sim_state, as_json)


@cmd.command("attach")
@_state_option
@click.option("--uuid", "mig_uuid", required=True, metavar="MIG-UUID", help="The MIG instance to attach to.")
@click.option(
    "--pid", type=click.IntRange(min=1), required=True, help="Process id shown as using the instance."
)
@json_option
def attach(sim_state: Optional[str], mig_uuid: str, pid: int, as_json: bool) -> None:
    """Show process PID as running on the MIG instance MIG-UUID (until it exits).

    The simulated driver then reports the instance as in use, as NVML does for a running CUDA process,
    so destroying it fails until the process is gone.

    \b
    Example:
      sleep 600 & slurm-gpu sim attach --sim-state /tmp/node.json --uuid MIG-0b2c... --pid $!
    """
    from slurm_gpu.devices.simprocs import attach_process

    sim_state = _resolve_state(sim_state)
    attach_process(sim_state, mig_uuid, pid)
    if as_json:
        emit_json("sim.attach", {"state": sim_state, "mig_uuid": mig_uuid, "pid": pid})
    else:
        click.echo(f"attached pid {pid} to {mig_uuid}")


def describe_with_names(sim_state: str) -> Dict[str, Any]:
    """``simstate.describe`` with each instance's profile name added (``profile``)."""
    from slurm_gpu.core.catalog import load_catalog
    from slurm_gpu.devices.simstate import describe

    catalog = load_catalog()
    info = describe(sim_state)
    for gpu in info["gpus"]:
        model = catalog.model(gpu["model"])
        for inst in gpu["instances"]:
            inst["profile"] = model.profile_by_id(inst["profile_id"]).name
    return info


def _show(sim_state: str, as_json: bool) -> None:
    info = describe_with_names(sim_state)
    if as_json:
        emit_json("sim", info)
        return
    emit_pairs(
        [
            ("state", info["state"]),
            ("sandbox", info.get("sandbox")),
            ("capability major", info.get("cap_major")),
            ("unprivileged changes", info.get("allow_unprivileged")),
        ]
    )
    click.echo()
    emit_table(
        ["GPU", "MODEL", "UUID", "MIG", "MIG_PENDING", "INSTANCES"],
        [
            (g["index"], g["model"], g["uuid"], g["mig_current"], g["mig_pending"], len(g["instances"]))
            for g in info["gpus"]
        ],
    )
    rows = [
        (g["index"], i["gi_id"], i["ci_id"], i["profile"], i["start"], i["size"], i["mig_uuid"], i["pids"])
        for g in info["gpus"]
        for i in g["instances"]
    ]
    if rows:
        click.echo()
        emit_table(["GPU", "GI", "CI", "PROFILE", "START", "SIZE", "MIG_UUID", "PIDS"], rows)
