"""``slurm-gpu cluster up|down|status``: a real local Slurm cluster with simulated MIG GPUs."""

from __future__ import annotations

from typing import Any, Optional

import click

from slurm_gpu.cli.output import emit_json, json_option
from slurm_gpu.confgen.inventory import MODES
from slurm_gpu.core.vocab import ADMISSION_MODES, DEFAULT_ADMISSION
from slurm_gpu.testbed.spec import DEFAULT_DIR, DEFAULT_PORT_BASE, HOST_SLURM, SLURM_VERSIONS

DIR_OPTION = click.option(
    "--dir",
    "directory",
    default=DEFAULT_DIR,
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where configs, logs and GPU states live.",
)


def _echo_json(command: str, result: Any) -> None:
    """``slurm-gpu.cluster.<command>/v1``: the testbed's result, keys sorted as they always were."""
    emit_json(f"cluster.{command}", _sorted(result))


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    return value


def _saved_spec(directory: str) -> Any:
    """The ClusterSpec that ``up`` saved in ``directory``."""
    import os

    from slurm_gpu.testbed.spec import load_spec

    return load_spec(os.path.abspath(directory))


@click.group("cluster")
def cmd() -> None:
    """Start, stop or inspect a local Slurm cluster (root; the host's Slurm 22.05, or 24.11/26.05 from a
    cached Debian root with --slurm).

    \b
    Example:
      slurm-gpu cluster up --nodes 2 --gpus H100-80GB:4
      export SLURM_CONF=/var/tmp/slurm-gpu-cluster/etc/slurm.conf
      sbatch --gres=gpu:1g.10gb --wrap 'echo $CUDA_VISIBLE_DEVICES'
      slurm-gpu cluster down
    """


@cmd.command("up")
@click.option("--nodes", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--gpus",
    default="H100-80GB:4",
    show_default=True,
    help="GPUs per node: MODEL[:COUNT][,...]; per node split by ';' (node i takes entry i, cycling).",
)
@DIR_OPTION
@click.option(
    "--port-base",
    default=DEFAULT_PORT_BASE,
    show_default=True,
    type=click.IntRange(1024, 65000),
    help="slurmctld port; node i listens on port-base + i.",
)
@click.option(
    "--max-count",
    default=8,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Largest k of the mig.<profile>.<k> features (--admission features).",
)
@click.option(
    "--mode",
    type=click.Choice(MODES),
    default="dynamic",
    show_default=True,
    help="static: make --layout on every GPU and declare typed gpu gres (today's practice).",
)
@click.option("--layout", default="", help="With --mode static: profiles per GPU, e.g. 3g.40gb,1g.10gb.")
@click.option("--hooks/--no-hooks", default=None, help="Wire our hooks [default: if dynamic].")
@click.option(
    "--admission",
    type=click.Choice(ADMISSION_MODES),
    default=DEFAULT_ADMISSION,
    show_default=True,
    help="counts: migp counts re-planned by a `slurm-gpu publish --watch` per node (what `slurm-gpu config` "
    "ships); features: fit features (docs/admission.md). Both on every --slurm version.",
)
@click.option(
    "--scheduler",
    type=click.Choice(["shipped", "test"]),
    default="shipped",
    show_default=True,
    help="SchedulerParameters: 'shipped' is what `slurm-gpu config slurm` generates for the admission "
    "(counts: Slurm's defaults; features: one start per pass); 'test' runs quick passes with no start "
    "limit, as the test suite does.",
)
@click.option(
    "--slurm",
    "slurm_version",
    type=click.Choice(SLURM_VERSIONS),
    default=HOST_SLURM,
    show_default=True,
    help="Slurm version: 22.05 is the host's packages; 24.11 (Debian trixie) and 26.05 (sid) run in a "
    "cached Debian root (built on first use, about a minute; docs/cluster.md).",
)
@click.option("--accounting", is_flag=True,
              help="Run a real slurmdbd over the cluster's own MariaDB, so sacct works (Slurm 22.05).")
@click.option("--features", "node_features", default="", metavar="F[,F];...",
              help="Site node features (slurm.conf Features=) per node split by ';', e.g. 'ib;' (node 1).")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for idle nodes.")
@json_option
def up_cmd(
    nodes: int,
    gpus: str,
    directory: str,
    port_base: int,
    max_count: int,
    mode: str,
    layout: str,
    hooks: Optional[bool],
    admission: str,
    scheduler: str,
    slurm_version: str,
    accounting: bool,
    node_features: str,
    timeout: float,
    as_json: bool,
) -> None:
    """Start (or restart) the cluster and wait until every node is idle.

    \b
    Example:
      slurm-gpu cluster up --nodes 2 --gpus H100-80GB:4 --dir /var/tmp/slurm-gpu-cluster --port-base 17000
      slurm-gpu cluster up --nodes 2 --gpus "H100-80GB:1;A100-40GB:1" --json
      slurm-gpu cluster up --slurm 26.05 --dir /var/tmp/sg-2605 --port-base 17400
      slurm-gpu cluster up --admission features --scheduler shipped
      slurm-gpu cluster up --accounting && sacct -X -o JobID,AllocTRES%60,AdminComment%40
      slurm-gpu cluster up --features "ib;" && sbatch --constraint=ib --gres=gpu:1g.10gb --wrap true
    """
    import os

    from slurm_gpu.confgen import render as confgen
    from slurm_gpu.testbed import local
    from slurm_gpu.testbed.spec import TEST_SCHEDULER_PARAMETERS, ClusterSpec

    spec = ClusterSpec(
        dir=os.path.abspath(directory),
        nodes=nodes,
        gpus=gpus,
        port_base=port_base,
        max_count_per_node=max_count,
        mode=mode,
        layout=layout,
        hooks=hooks,
        scheduler_parameters=(
            confgen.scheduler_parameters(confgen.Options(admission=admission))
            if scheduler == "shipped" else TEST_SCHEDULER_PARAMETERS
        ),
        admission=admission,
        slurm=slurm_version,
        accounting=accounting,
        features=node_features,
    )
    result = local.up(spec, timeout=timeout)
    if as_json:
        _echo_json("up", result)
        return
    from slurm_gpu.testbed import rooted

    click.echo(
        f"cluster {result['name']} up: {', '.join(sorted(result['nodes']))} idle"
        f" (Slurm {spec.slurm}, {result['mode']}, {spec.admission} admission,"
        f" hooks {'wired' if result['hooks'] else 'not wired'})"
    )
    example = f"gpu:{spec.layout.split(',')[0].strip()}:1" if spec.mode == "static" else "gpu:1g.10gb"
    submit = ["sbatch", f"--gres={example}", "--wrap", "'env | grep CUDA'"]
    if rooted.in_root(spec):
        click.echo(f"  {' '.join(rooted.command(spec, submit))}")
    else:
        click.echo(f"  export SLURM_CONF={result['slurm_conf']}")
        click.echo(f"  {' '.join(submit)}")
    click.echo(f"  slurm-gpu cluster down --dir {result['dir']}")


@cmd.command("down")
@DIR_OPTION
@json_option
def down_cmd(directory: str, as_json: bool) -> None:
    """Cancel the cluster's jobs and stop its daemons (idempotent).

    \b
    Example:
      slurm-gpu cluster down --dir /var/tmp/slurm-gpu-cluster
    """
    from slurm_gpu.testbed import local

    result = local.down(_saved_spec(directory))
    if as_json:
        _echo_json("down", result)
    else:
        stopped = ", ".join(result["stopped"]) or "nothing was running"
        click.echo(f"cluster in {result['dir']}: stopped {stopped}")


@cmd.command("status")
@DIR_OPTION
@json_option
def status_cmd(directory: str, as_json: bool) -> None:
    """Show the cluster's daemons and node states.

    \b
    Example:
      slurm-gpu cluster status --dir /var/tmp/slurm-gpu-cluster --json
    """
    from slurm_gpu.testbed import local

    result = local.status(_saved_spec(directory))
    if as_json:
        _echo_json("status", result)
        return
    click.echo(f"cluster {result['name']} in {result['dir']} (SLURM_CONF={result['slurm_conf']})")
    for name, pid in sorted(result["processes"].items()):
        click.echo(f"  {name}: pid {pid}")
    for node, state in sorted(result["nodes"].items()):
        click.echo(f"  {node}: {state}")
    if not result["processes"]:
        click.echo("  not running")
