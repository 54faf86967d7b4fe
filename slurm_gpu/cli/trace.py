"""``slurm-gpu trace``: make job traces for ``slurm-gpu simulate``."""

from __future__ import annotations

import sys
from typing import Optional

import click

from slurm_gpu.cli.output import emit_json, emit_pairs, json_option

_KINDS = ["steady", "bursty", "mostly-large", "mostly-small", "daynight"]


@click.group("trace")
def cmd() -> None:
    """Generate traces, or convert Slurm accounting (sacct) into one.

    \b
    Example:
      slurm-gpu trace generate steady --jobs 3000 --load 0.9 --seed 1 -o steady.jsonl
      slurm-gpu trace info steady.jsonl --cluster 16x8xH100-80GB
    """


def _write(jobs: list, out: Optional[str]) -> int:
    from slurm_gpu.simulate.traces import write_trace

    if out is None or out == "-":
        return write_trace(jobs, sys.stdout)
    import io

    from slurm_gpu.state.fsutil import atomic_write

    buf = io.StringIO()
    n = write_trace(jobs, buf)
    atomic_write(out, buf.getvalue(), mode=0o644)
    return n


@cmd.command("generate")
@click.argument("kind", type=click.Choice(_KINDS))
@click.option("--jobs", "n_jobs", type=int, default=3000, show_default=True, help="Number of jobs.")
@click.option(
    "--cluster",
    "cluster_spec",
    default="16x8xH100-80GB",
    show_default=True,
    help="Cluster the load is sized for (NODESxGPUSxMODEL or YAML; its first model's profiles).",
)
@click.option(
    "--load",
    type=float,
    default=0.9,
    show_default=True,
    help="Offered load: memory-slice-seconds asked / (cluster slices x arrival span).",
)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option(
    "--mix",
    type=click.Choice(["balanced", "small", "large"]),
    default=None,
    help="Profile mix (default: the kind's own).",
)
@click.option("--median-duration", type=float, default=1800.0, show_default=True, help="Median run time (s).")
@click.option(
    "-o", "--output", "out", type=click.Path(dir_okay=False), default=None, help="File (default stdout)."
)
def generate_cmd(
    kind: str,
    n_jobs: int,
    cluster_spec: str,
    load: float,
    seed: int,
    mix: Optional[str],
    median_duration: float,
    out: Optional[str],
) -> None:
    """Generate a seeded trace of KIND at the given offered load.

    \b
    Example:
      slurm-gpu trace generate bursty --jobs 3000 --cluster 16x8xH100-80GB --load 0.9 -o bursty.jsonl
    """
    from slurm_gpu.core.catalog import load_catalog
    from slurm_gpu.simulate.cluster import parse_cluster
    from slurm_gpu.simulate.traces import generate

    cluster = parse_cluster(cluster_spec)
    model = load_catalog().model(cluster.models[0])
    jobs = generate(
        kind, n_jobs, model, cluster.memory_slices(), load=load, seed=seed, mix=mix, median_s=median_duration
    )
    n = _write(jobs, out)
    if out:
        click.echo(f"wrote {n} jobs to {out}", err=True)


@cmd.command("from-sacct")
@click.argument("source", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "-o", "--output", "out", type=click.Path(dir_okay=False), default=None, help="File (default stdout)."
)
def from_sacct_cmd(source: str, out: Optional[str]) -> None:
    """Convert sacct output (a file, or - for stdin) into a trace.

    \b
    Example:
      sacct -P -X -a -o JobID,Submit,Start,End,ReqTRES,AllocTRES,NNodes,Timelimit,AdminComment > s.txt
      slurm-gpu trace from-sacct s.txt -o mysite.jsonl
    """
    from slurm_gpu.simulate.traces import from_sacct, read_lines

    lines = sys.stdin.read().splitlines() if source == "-" else read_lines(source)
    jobs = from_sacct(lines, warn=lambda msg: click.echo(msg, err=True))
    n = _write(jobs, out)
    if out:
        click.echo(f"wrote {n} jobs to {out}", err=True)


@cmd.command("info")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--cluster", "cluster_spec", default="16x8xH100-80GB", show_default=True)
@click.option("--strict", is_flag=True, help="Fail (exit 3) when any job could never run on the cluster.")
@json_option
def info_cmd(path: str, cluster_spec: str, strict: bool, as_json: bool) -> None:
    """Jobs, span, offered load and unrunnable jobs of a trace on a cluster.

    \b
    Example:
      slurm-gpu trace info traces/steady.jsonl --cluster 16x8xH100-80GB --json
    """
    from dataclasses import asdict

    from slurm_gpu.cli.simulate import report_rejected
    from slurm_gpu.simulate.accounting import account_trace
    from slurm_gpu.simulate.cluster import parse_cluster
    from slurm_gpu.simulate.traces import read_trace

    jobs = read_trace(path)
    account = account_trace(jobs, parse_cluster(cluster_spec))
    report_rejected(account.rejected_reasons, strict)  # as simulate does: a warning, or exit 3
    payload = {"trace": path, **asdict(account)}
    if as_json:
        emit_json("trace.info", payload)
    else:
        emit_pairs((k, _cell(v)) for k, v in payload.items())


def _cell(value: object) -> object:
    if isinstance(value, dict):
        return "; ".join(f"{k}: {v}" for k, v in value.items()) or "-"
    return value
