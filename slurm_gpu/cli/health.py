"""``slurm-gpu health``: the node check for Slurm's ``HealthCheckProgram`` (logic in ``node.health``)."""

from __future__ import annotations

import os
import socket
import sys
from typing import Any, Optional

import click

from slurm_gpu.cli.main import driver_options, get_context
from slurm_gpu.cli.output import emit_json, json_option


@click.command("health")
@driver_options
@click.option("--state-dir", type=click.Path(file_okay=False),
              help="Journal directory (default: from config).")
@click.option("--orphan-minutes", type=float, default=30.0, show_default=True,
              help="An instance no journal record claims fails the check once it is this old.")
@click.option("--drain/--no-drain", default=False, show_default=True,
              help="On a hard failure, drain this node with the reason (Slurm leaves that to the program).")
@click.option("--node", default=None,
              help="Node name for --drain (default: $SLURMD_NODENAME, else the host).")
@json_option
def cmd(driver_kind: Optional[str], sim_state: Optional[str], state_dir: Optional[str], orphan_minutes: float,
        drain: bool, node: Optional[str], as_json: bool) -> None:
    """Check the node: driver answers, MIG mode as configured, no old orphan, journal clean.

    Prints one line per check (with --json: {"schema": "slurm-gpu.health/v1", "healthy", "reason",
    "checks": [...], "drained"}). Exit 0 when healthy or when only our own passing problems were seen
    (a busy node lock, a journal file being replaced: reported as warn, never drained); else the first
    failing check's code: 5 driver, 7 MIG mode not as configured, 6 old orphans or journal problems.
    With --drain a hard failure drains the node once (`scontrol update nodename=N state=drain
    reason="slurm-gpu health: ..."`), which `sinfo -R` shows; it never resumes a node.

    \b
    Example:
      slurm-gpu health --json | jq -r .reason
      slurm-gpu health --drain --node gpu01   # what HealthCheckProgram's wrapper runs
      # slurm.conf: HealthCheckProgram=<wrapper> HealthCheckInterval=300 HealthCheckNodeState=ANY,CYCLE
    """
    from slurm_gpu.core.errors import DriverError
    from slurm_gpu.node.health import Check, HealthReport, check_health, summary
    from slurm_gpu.state.journal import Journal

    context = get_context()
    journal = Journal(context.state_dir(state_dir))
    try:
        with context.driver(driver_kind, sim_state) as driver:
            report = check_health(driver, journal, orphan_minutes)
    except DriverError as exc:  # NVML did not even initialise
        report = HealthReport([Check("driver", False, str(exc), exc.exit_code)])
    drained = False
    if drain and report.failed is not None:
        drained = _drain(context, node, report.reason)
    if as_json:
        emit_json("health", dict(report.to_dict(), drained=drained))
    else:
        for line in summary(report):
            click.echo(line)
        if report.reason:
            click.echo(report.reason + (" (node drained)" if drained else ""))
    sys.exit(report.exit_code)


def _drain(context: Any, node: Optional[str], reason: str) -> bool:
    from slurm_gpu.core.errors import SlurmError
    from slurm_gpu.slurm.client import SlurmCli

    name = node or os.environ.get("SLURMD_NODENAME") or socket.gethostname().split(".")[0]
    config = context.config
    try:
        SlurmCli(config.slurm.bin_dir).drain(name, reason)
        return True
    except SlurmError as exc:
        click.echo(f"slurm-gpu: health: drain of {name} failed: {exc}", err=True)
        return False
