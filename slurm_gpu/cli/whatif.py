"""``slurm-gpu whatif``: from sacct output to a short report comparing current practice, static MIG,
slurm-gpu's default and the ideal bound on the site's own history."""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

import click

from slurm_gpu.cli.output import emit_json, json_option
from slurm_gpu.cli.simulate import apply_model_options, model_options, report_rejected
from slurm_gpu.cli.trace import convert_sacct, sacct_options


def _progress(label: str) -> Optional[Callable[[int, int], None]]:
    """A progress bar per scenario on stderr when it is a terminal."""
    from slurm_gpu.simulate.engine import stderr_progress

    return stderr_progress(label, width=30)


@click.command("whatif")
@click.argument("source", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--cluster", "cluster_spec", required=True,
              help="The site's GPUs: NODESxGPUSxMODEL (e.g. 4x8xH100-80GB) or a YAML file.")
@click.option("--current-layout", default=None,
              help="The site's static MIG layout as `simulate --layout` takes it (default: whole GPUs).")
@click.option("-o", "--out", "outdir", type=click.Path(file_okay=False), default="whatif-report",
              show_default=True, help="Folder for report.md, report.json and the PNG plots.")
@click.option("--no-plots", is_flag=True, help="Only the table and report files, no PNGs (no matplotlib).")
@click.option("--strict", is_flag=True, help="Fail (exit 3) when any job could never run on the cluster.")
@sacct_options
@model_options
@json_option
def cmd(source: str, cluster_spec: str, current_layout: Optional[str], outdir: str, no_plots: bool,
        strict: bool, model: Optional[str], types_path: Optional[str], margin: float,
        peak_column: Optional[str], shards_per_gpu: Optional[int], window: Optional[str],
        create_time: Optional[str], destroy_time: Optional[str], as_json: bool) -> None:
    """Would dynamic MIG help this cluster? Replay SOURCE (sacct -P output) five ways.

    \b
    current: the jobs as they asked on whole GPUs (or --current-layout); static: the jobs right-sized
    (smallest profile holding their recorded GPU memory peak plus --margin) on the best static MIG
    layout; default: slurm-gpu's count admission and placement; features: the earlier feature admission
    (one start per pass); ideal: fluid slices, the geometry bound.
    Writes report.md, report.json, waits.png, utilization.png and capacity.png into --out.

    \b
    Example:
      sacct -P -a -S 2024-05-01 -E 2024-06-01 -o JobID,Submit,Start,End,ReqTRES,AllocTRES,NNodes,\\
        Timelimit,AdminComment,TRESUsageInMax > sacct.txt
      slurm-gpu whatif sacct.txt --cluster 4x8xH100-80GB -o may-report
    """
    from slurm_gpu.simulate.accounting import account_trace
    from slurm_gpu.simulate.cluster import parse_cluster
    from slurm_gpu.simulate.engine import SimConfig
    from slurm_gpu.simulate.whatif import markdown, run_whatif, table_lines
    from slurm_gpu.state.fsutil import atomic_write

    cluster = parse_cluster(cluster_spec)
    if not no_plots:
        from slurm_gpu.simulate.plot import check_available

        check_available()
    done = convert_sacct(source, model or cluster.models[0], types_path, True, margin, peak_column,
                         shards_per_gpu)
    if done.jobs:
        report_rejected(account_trace(done.jobs, cluster).rejected_reasons, strict)

    def make_config() -> SimConfig:
        config = SimConfig()
        apply_model_options(config, window, create_time, destroy_time)
        return config

    report: Any = run_whatif(done, cluster, make_config, current_layout, progress=_progress)
    report["source"] = source
    os.makedirs(outdir, exist_ok=True)
    pictures = []
    if not no_plots:
        from slurm_gpu.simulate.plot import plot_whatif

        pictures = plot_whatif(report, outdir)
    atomic_write(os.path.join(outdir, "report.md"), markdown(report, pictures), mode=0o644)
    public = {k: v for k, v in report.items() if k not in ("samples", "waits")}
    public["files"] = ["report.md", "report.json", *pictures]
    import json

    atomic_write(os.path.join(outdir, "report.json"), json.dumps(public, indent=2) + "\n", mode=0o644)
    if as_json:
        emit_json("whatif", {"out": outdir, **public})
        return
    click.echo("\n".join(table_lines(report)))
    s = report["summary"]
    click.echo(f"\nright-sized {s['rightsized_jobs']} of {s['whole_gpu_jobs']} whole-GPU jobs: "
               f"{s['compute_freed']:.1%} of their compute freed; default vs current mean wait "
               f"x{s['mean_wait_default_vs_current']}")
    click.echo(f"report: {os.path.join(outdir, 'report.md')}", err=True)
