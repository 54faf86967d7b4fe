"""``slurm-gpu trace``: make job traces for ``slurm-gpu simulate``."""

from __future__ import annotations

import sys
from typing import Any, Optional

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


def sacct_options(f: Any) -> Any:
    """The conversion options shared by ``trace from-sacct`` and ``whatif``."""
    for opt in reversed([
        click.option("--model", default=None,
                     help="GPU model the history ran on (shards, right-sizing and type names use it); "
                     "default H100-80GB, for whatif the cluster's first model."),
        click.option("--types", "types_path", type=click.Path(dir_okay=False), default=None,
                     help="YAML mapping of site gres type names to a profile or 'gpu' (whole GPU)."),
        click.option("--margin", type=float, default=0.1, show_default=True,
                     help="Right-sizing: memory headroom over the recorded peak (0.1 = 10 %)."),
        click.option("--peak-column", default=None,
                     help="Right-sizing: a column of the file holding each job's peak GPU memory (MiB, "
                     "or with a K/M/G/T unit) instead of the steps' TRESUsageInMax gres/gpumem."),
        click.option("--shards-per-gpu", type=int, default=None,
                     help="gres/shard count of one GPU at the site (default: its compute slices)."),
    ]):
        f = opt(f)
    return f


def convert_sacct(source: str, model_key: Optional[str], types_path: Optional[str], rightsize: bool,
                  margin: float, peak_column: Optional[str], shards_per_gpu: Optional[int]) -> Any:
    """Read and convert; warnings on stderr."""
    from slurm_gpu.core.catalog import load_catalog
    from slurm_gpu.core.errors import BadInputError
    from slurm_gpu.simulate.sacct import SacctOptions, convert, load_types
    from slurm_gpu.simulate.traces import read_lines

    if margin < 0 or (shards_per_gpu is not None and shards_per_gpu < 1):
        raise BadInputError("--margin must be >= 0 and --shards-per-gpu >= 1", part="--margin")
    model = load_catalog().model(model_key or "H100-80GB")
    types = load_types(types_path, model) if types_path else {}
    lines = sys.stdin.read().splitlines() if source == "-" else read_lines(source)
    options = SacctOptions(model, types, rightsize, margin, peak_column, shards_per_gpu)
    return convert(lines, options, warn=lambda msg: click.echo(msg, err=True))


@cmd.command("from-sacct")
@click.argument("source", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "-o", "--output", "out", type=click.Path(dir_okay=False), default=None, help="File (default stdout)."
)
@click.option("--rightsize", is_flag=True,
              help="Map each whole-GPU job to the smallest profile whose memory holds its recorded peak.")
@sacct_options
@json_option
def from_sacct_cmd(source: str, out: Optional[str], rightsize: bool, model: Optional[str],
                   types_path: Optional[str], margin: float, peak_column: Optional[str],
                   shards_per_gpu: Optional[int], as_json: bool) -> None:
    """Convert sacct output (a file, or - for stdin) into a trace, with a report of what was done.

    \b
    TRES counts are job totals: multi-node jobs become per-node requests; gres/shard=N becomes the
    smallest profile with that share of the GPU; site type names go through --types or the catalog
    (Slurm's autodetected MIG names such as nvidia_h100_80gb_hbm3_3g.40gb). With --rightsize, whole-GPU
    jobs take the smallest profile whose memory holds their peak (steps' TRESUsageInMax gres/gpumem, so
    leave -X out, or --peak-column) plus --margin; the report says what MIG would have freed.

    \b
    Example:
      sacct -P -a -o JobID,Submit,Start,End,ReqTRES,AllocTRES,NNodes,Timelimit,\\
        AdminComment,TRESUsageInMax > s.txt
      slurm-gpu trace from-sacct s.txt --rightsize --margin 0.2 -o mysite.jsonl --json
    """
    from slurm_gpu.core.errors import BadInputError

    if as_json and (out is None or out == "-"):
        raise BadInputError("--json prints the report on stdout: write the trace with -o FILE", part="--json")
    done = convert_sacct(source, model, types_path, rightsize, margin, peak_column, shards_per_gpu)
    n = _write(done.jobs, out)
    report = done.report.to_dict()
    if as_json:
        emit_json("trace.from-sacct", {"output": out, **report})
        return
    if out:
        click.echo(f"wrote {n} jobs to {out}", err=True)
    for key, value in report.items():
        if value not in ({}, 0, 0.0, [0.0, 0.0]):
            click.echo(f"{key}: {_cell(value)}", err=True)


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
