"""``slurm-gpu simulate``: replay a job trace through one admission/placement policy and report."""

from __future__ import annotations

from typing import Optional

import click

from slurm_gpu.cli.output import emit_json, emit_pairs, json_option


@click.command("simulate")
@click.option(
    "--trace",
    "trace_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Job trace, JSON lines (see `slurm-gpu trace generate`).",
)
@click.option(
    "--cluster",
    "cluster_spec",
    required=True,
    help="NODESxGPUSxMODEL (e.g. 16x8xH100-80GB) or a YAML file for mixed clusters.",
)
@click.option(
    "--policy",
    type=click.Choice(["default", "oracle", "shards", "static"]),
    default="default",
    show_default=True,
    help="Admission and placement policy.",
)
@click.option(
    "--layout",
    default=None,
    help="static: per-GPU layout, e.g. '3g.40gb,3g.40gb' or '4g.40gb,3g.40gb;1g.10gb*7' "
    "(GPUs take the ';' parts in turn). Default: the best static layout for the trace's mix.",
)
@click.option(
    "--order",
    type=click.Choice(["first", "tight", "spread"]),
    default="first",
    show_default=True,
    help="default: which node Slurm picks among admitted ones (first = node order, as Slurm).",
)
@click.option(
    "--publish",
    type=click.Choice(["exact", "safe", "prefer"]),
    default="exact",
    show_default=True,
    help="default: fit features as they are, or only those every count-admitted start would fit.",
)
@click.option(
    "--shard-cost",
    type=click.Choice(["compute", "memory"]),
    default="compute",
    show_default=True,
    help="shards: shards per GPU and per profile from compute or memory slices.",
)
@click.option(
    "--bf-interval",
    type=float,
    default=None,
    help="Backfill interval (s); default: the policy's (5 for default, else Slurm's 30).",
)
@click.option(
    "--max-starts",
    type=int,
    default=None,
    help="sched_max_job_start/bf_max_job_start, 0 = no limit; default: the policy's (1 for default, else 0).",
)
@click.option(
    "--requeue-delay",
    type=float,
    default=None,
    help="Seconds before a requeued job is eligible (default: 121, as Slurm; 120 after a failed prolog).",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write a PNG of utilization, queue length and misfits over time (needs matplotlib).",
)
@json_option
def cmd(
    trace_path: str,
    cluster_spec: str,
    policy: str,
    layout: Optional[str],
    order: str,
    publish: str,
    shard_cost: str,
    bf_interval: Optional[float],
    max_starts: Optional[int],
    requeue_delay: Optional[float],
    plot_path: Optional[str],
    as_json: bool,
) -> None:
    """Replay TRACE on CLUSTER with POLICY: misfits, utilization, waits, drains.

    \b
    Example:
      slurm-gpu simulate --trace traces/steady.jsonl --cluster 16x8xH100-80GB --policy default --json
    """
    from slurm_gpu.simulate.cluster import parse_cluster
    from slurm_gpu.simulate.engine import SimConfig, simulate, stderr_progress
    from slurm_gpu.simulate.policies import make_policy
    from slurm_gpu.simulate.traces import read_trace

    jobs = read_trace(trace_path)
    cluster = parse_cluster(cluster_spec)
    chosen = make_policy(policy, layout=layout, order=order, shard_cost=shard_cost, publish=publish)
    if plot_path:
        from slurm_gpu.simulate.plot import check_available

        check_available()
    config = SimConfig(
        bf_interval=bf_interval,
        max_starts=max_starts,
        requeue_delay=requeue_delay,
        record_series=bool(plot_path),
        progress=stderr_progress(),
    )
    result = simulate(jobs, cluster, chosen, config)
    if plot_path:
        from slurm_gpu.simulate.plot import plot_result

        plot_result(result, plot_path, title=f"{policy} on {cluster_spec}: {trace_path}")
    payload = result.to_dict()
    payload.update({"trace": trace_path, "cluster": cluster_spec, "total_slices": result.total_slices})
    if as_json:
        emit_json("simulate", payload)
        return
    emit_pairs([(k, _fmt(v)) for k, v in payload.items()])


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)
