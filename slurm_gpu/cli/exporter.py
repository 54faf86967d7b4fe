"""``slurm-gpu exporter``: the node's MIG metrics for Prometheus, over HTTP or as a node_exporter textfile.

Metric reference, DCGM join and alert rules: docs/monitoring.md.
"""

from __future__ import annotations

import os
import time
from typing import Any, Optional

import click

from slurm_gpu.cli.main import driver_options, get_context
from slurm_gpu.cli.output import emit_json, json_option

DEFAULT_PORT = 9470  # 9400 is dcgm-exporter's, 9341 a Slurm exporter's, 9394 HAMi's


def build_collector(node: Optional[str], driver: Any, slurm_interval_s: float, pending: bool) -> Any:
    from slurm_gpu.cli.collector import NodeCollector
    from slurm_gpu.core.catalog import load_catalog
    from slurm_gpu.node.config import load_config, node_name
    from slurm_gpu.slurm.client import SlurmCli
    from slurm_gpu.state.journal import Journal

    name = node_name(node)
    config = load_config(get_context().config_path, node=name)
    slurm = None
    if slurm_interval_s > 0:
        env = None
        if config.slurm.conf:
            env = {"SLURM_CONF": config.slurm.conf, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        slurm = SlurmCli(config.slurm.bin_dir, env=env)
    journal = Journal(config.state_dir)
    hooks_log = config.log.file or os.path.join(config.state_dir, "hooks.log")
    return NodeCollector(name, driver, journal, load_catalog(), config.policy.max_count_per_node, hooks_log,
                         slurm=slurm, slurm_interval_s=slurm_interval_s, pending=pending)


def _registry(collector: Any) -> Any:
    from prometheus_client import CollectorRegistry, ProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    ProcessCollector(namespace="slurm_gpu_exporter", registry=registry)
    return registry


def _open_driver(driver_kind: Optional[str], sim_state: Optional[str], node: Optional[str]) -> Any:
    from slurm_gpu.devices.open import open_driver
    from slurm_gpu.node.config import load_config, node_name

    if driver_kind or sim_state:
        return open_driver(driver_kind or "sim", sim_state=sim_state)
    return open_driver(load_config(get_context().config_path, node=node_name(node)))


@click.command("exporter")
@driver_options
@click.option("--node", default=None, help="Node name (default: SLURMD_NODENAME, else the host name).")
@click.option("--address", default="0.0.0.0", show_default=True,  # noqa: S104 - Prometheus scrapes it
              help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True,
              help="HTTP port (/metrics).")
@click.option("--textfile", type=click.Path(dir_okay=False),
              help="Write node_exporter's textfile (atomic rename) instead of serving HTTP; name it *.prom.")
@click.option("--interval", type=click.FloatRange(0), default=0, show_default=True,
              help="With --textfile: rewrite it every INTERVAL seconds (0: once, then exit).")
@click.option("--slurm-interval", type=click.FloatRange(0), default=60, show_default=True,
              help="Ask Slurm (running jobs, node features) at most every N seconds; 0: never.")
@click.option("--pending", is_flag=True, help="Also export pending demand by profile (run on one host).")
@click.option("--once", is_flag=True, help="Print the exposition once and exit.")
@json_option
def cmd(driver_kind: Optional[str], sim_state: Optional[str], node: Optional[str], address: str, port: int,
        textfile: Optional[str], interval: float, slurm_interval: float, pending: bool, once: bool,
        as_json: bool) -> None:
    """Export this node's MIG metrics for Prometheus (port 9470 by default).

    Instances by GPU and profile with dcgm-exporter's labels (gpu, UUID, GPU_I_ID, GPU_I_PROFILE) plus
    mig_uuid and ci_id; the owning job and user on slurm_gpu_mig_instance_job_info; what still fits per
    profile (what Slurm was told); fragmentation and MIG mode per GPU; histograms of hook and NVML
    create/destroy times and counters of requeues, refusals, repairs and errors from the hooks' logs.
    Reads the driver and journal without the node lock. Metric reference: docs/monitoring.md.

    \b
    Example:
      slurm-gpu exporter                                   # http://0.0.0.0:9470/metrics
      slurm-gpu exporter --textfile /var/lib/node_exporter/textfile/slurm_gpu.prom --interval 30
      slurm-gpu exporter --once | promtool check metrics
      slurm-gpu exporter --json | jq '.families[] | select(.name=="slurm_gpu_profile_fit_instances")'
    """
    driver = _open_driver(driver_kind, sim_state, node)
    try:
        collector = build_collector(node, driver, slurm_interval, pending)
        if as_json:
            emit_json("exporter", _document(collector))
            return
        registry = _registry(collector)
        if once:
            from prometheus_client import generate_latest

            click.echo(generate_latest(registry).decode("utf-8"), nl=False)
            return
        if textfile:
            _textfile(registry, textfile, interval)
            return
        _serve(registry, address, port)
    finally:
        driver.close()


def _document(collector: Any) -> Any:
    families = collector.families()
    return {
        "node": collector.node,
        "families": [
            {"name": f.name + ("_info" if f.kind == "info" else ""), "type": "gauge" if f.kind == "info"
             else f.kind, "help": f.help, "labels": list(f.labels),
             "samples": [{"labels": dict(zip(f.labels, v)), "value": x} for v, x in f.samples],
             "histograms": [{"labels": dict(zip(f.labels, v)), "count": h.count, "sum": h.total,
                             "buckets": h.cumulative()} for v, h in f.histograms]}
            for f in families
        ],
    }


def _textfile(registry: Any, path: str, interval: float) -> None:
    from prometheus_client import write_to_textfile

    while True:
        write_to_textfile(path, registry)  # a temporary file renamed over ``path``
        if interval <= 0:
            return
        time.sleep(interval)


def _serve(registry: Any, address: str, port: int) -> None:
    from prometheus_client import start_http_server

    server, thread = start_http_server(port, addr=address, registry=registry)
    click.echo(f"slurm-gpu exporter: serving http://{address}:{port}/metrics", err=True)
    try:
        while thread.is_alive():
            thread.join(3600)
    finally:
        server.shutdown()
