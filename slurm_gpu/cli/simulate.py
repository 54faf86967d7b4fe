"""``slurm-gpu simulate``: replay a job trace through one admission/placement policy and report."""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import click

from slurm_gpu.cli.output import emit_json, emit_pairs, json_option


def model_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--window, --create-time, --destroy-time: the measurement window and the instance-time model."""
    f = click.option(
        "--destroy-time",
        default=None,
        help="Seconds to destroy an instance: S or PROFILE=S,... (default: as --create-time).",
    )(f)
    f = click.option(
        "--create-time",
        default=None,
        help="Seconds to create an instance (dynamic policies): S for every profile or PROFILE=S,...; "
        "default 0.25 s (1 compute slice) to 1.5 s (whole GPU); 0 turns the model off.",
    )(f)
    f = click.option(
        "--window",
        default=None,
        help="Measurement window START:END in seconds after the first submission (default: first to "
        "last submission).",
    )(f)
    return f


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
    type=click.Choice(["default", "features", "oracle", "shards", "static", "ideal"]),
    default="default",
    show_default=True,
    help="Admission and placement policy (default: count admission, what ships; features: fit features "
    "with one start per pass; ideal: the bound with fluid slices, no placement alignment).",
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
    help="features: which node Slurm picks among admitted ones (first = node order, as Slurm).",
)
@click.option(
    "--publish",
    type=click.Choice(["exact", "safe", "prefer"]),
    default="exact",
    show_default=True,
    help="features: fit features as they are, or only those every count-admitted start would fit.",
)
@click.option(
    "--publish-interval",
    type=float,
    default=5.0,
    show_default=True,
    help="default: seconds between the node agents' re-plans of their counts (`publish --watch`).",
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
    help="Backfill interval (s); default: what ships for the policy's admission (features: 5, "
    "the others: Slurm's own 30).",
)
@click.option(
    "--max-starts",
    type=int,
    default=None,
    help="sched_max_job_start/bf_max_job_start, 0 = no limit; default: what ships for the policy's "
    "admission (features: 1, the others: Slurm's own 0).",
)
@click.option(
    "--priority",
    default="submit",
    show_default=True,
    help="The queue's priority order: submit (Slurm without priority factors), small-first or "
    "large-first (fewer / more compute slices per job first, as a site's job-size priority; then submit "
    "order).",
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
@click.option("--strict", is_flag=True, help="Fail (exit 3) when any job of the trace could never run.")
@click.option("--vs-ideal", is_flag=True,
              help="Also replay the ideal bound (fluid slices) and report it beside: how far the policy is "
              "from what geometry allows.")
@model_options
@json_option
def cmd(
    trace_path: str,
    cluster_spec: str,
    policy: str,
    layout: Optional[str],
    order: str,
    publish: str,
    publish_interval: float,
    shard_cost: str,
    bf_interval: Optional[float],
    max_starts: Optional[int],
    priority: str,
    requeue_delay: Optional[float],
    plot_path: Optional[str],
    strict: bool,
    vs_ideal: bool,
    window: Optional[str],
    create_time: Optional[str],
    destroy_time: Optional[str],
    as_json: bool,
) -> None:
    """Replay TRACE on CLUSTER with POLICY: misfits, utilization, waits, drains.

    \b
    Example:
      slurm-gpu simulate --trace traces/steady.jsonl --cluster 16x8xH100-80GB --policy default --json
    """
    from slurm_gpu.simulate.cluster import parse_cluster
    from slurm_gpu.simulate.engine import SimConfig, Simulation, stderr_progress
    from slurm_gpu.simulate.policies import make_policy
    from slurm_gpu.simulate.traces import read_trace

    jobs = read_trace(trace_path)
    cluster = parse_cluster(cluster_spec)
    chosen = make_policy(policy, layout=layout, order=order, shard_cost=shard_cost, publish=publish,
                         publish_interval=publish_interval)
    if plot_path:
        from slurm_gpu.simulate.plot import check_available

        check_available()
    config = SimConfig(requeue_delay=requeue_delay, record_series=bool(plot_path), progress=stderr_progress(),
                       priority=priority)
    if bf_interval is not None:
        config.bf_interval = bf_interval
    if max_starts is not None:
        config.max_starts = max_starts
    apply_model_options(config, window, create_time, destroy_time)
    sim = Simulation(jobs, cluster, chosen, config)
    report_rejected(sim.rejected_reasons, strict)
    result = sim.run()
    if plot_path:
        from slurm_gpu.simulate.plot import plot_result

        plot_result(result, plot_path, title=f"{policy} on {cluster_spec}: {trace_path}")
    payload = result.to_dict()
    if vs_ideal:
        config.record_series, config.progress = False, None
        bound = Simulation(jobs, cluster, make_policy("ideal"), config).run().to_dict()
        payload["ideal"] = {k: bound[k] for k in IDEAL_KEYS}
    payload.update({"trace": trace_path, "cluster": cluster_spec, "total_slices": result.total_slices,
                    "priority": priority})
    if as_json:
        emit_json("simulate", payload)
        return
    emit_pairs([(k, _fmt(v)) for k, v in payload.items()])


IDEAL_KEYS = ("mean_wait_s", "p95_wait_s", "p99_wait_s", "compute_utilization", "stranded_capacity",
              "fragmentation", "request_fragmented")


def parse_window(text: Optional[str]) -> Optional[Tuple[float, float]]:
    from slurm_gpu.core.errors import BadInputError

    if not text:
        return None
    start, sep, end = text.partition(":")
    try:
        a, b = float(start), float(end)
    except ValueError:
        a = b = -1.0
    if not sep or a < 0 or b <= a:
        raise BadInputError(f"--window {text!r}: START:END seconds, 0 <= START < END", part=text)
    return a, b


def apply_model_options(config: Any, window: Optional[str], create: Optional[str],
                        destroy: Optional[str]) -> None:
    """Set the window and the instance times on a SimConfig (times on by default)."""
    from slurm_gpu.simulate.overhead import InstanceTimes, parse_times

    config.window = parse_window(window)
    per_c, all_c = parse_times(create)
    per_d, all_d = parse_times(destroy)
    if destroy is None:  # destroying defaults to what creating was given
        per_d, all_d = per_c, all_c
    config.instance_times = InstanceTimes(per_c, per_d, all_c, all_d)


def report_rejected(reasons: Dict[str, int], strict: bool) -> None:
    """Jobs that can never run: a warning on stderr, or with ``--strict`` an input error (exit 3)."""
    if not reasons:
        return
    total = sum(reasons.values())
    lines = "; ".join(f"{n} x {why}" for why, n in reasons.items())
    if strict:
        from slurm_gpu.core.errors import BadInputError

        raise BadInputError(f"{total} jobs could never run: {lines}", part="trace")
    click.echo(f"warning: {total} jobs could never run and are counted as rejected: {lines}", err=True)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_fmt_inner(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list) and value and isinstance(value[0], dict):
        # the static layout: one "N x model: layout" per kind of GPU
        return "; ".join(f"{d['gpus']} x {d['model']}: {d['layout']}" for d in value)
    if isinstance(value, list):
        return _fmt_inner(value)
    return str(value)


def _fmt_inner(value: object) -> str:
    if isinstance(value, list):
        return " ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in value)
    if isinstance(value, dict):  # instance times: create/destroy seconds
        return "/".join(str(v) for v in value.values())
    return str(value)
