"""Cost of one exporter scrape on a simulated 8 x H100 node holding 56 instances, against an empty node.

    python bench/bench_exporter.py [--gpus 8] [--runs 30]

Both nodes run the real collector (``cli/collector.py``: one ``read_snapshot`` over the simulated NVML,
a journal scan, the log tails) and prometheus_client's text exposition; the full node has one journal
record per instance (56 jobs of 1g.10gb, made by ``NodeAgent.prepare``) and their hook log lines. Prints
the median scrape time of each and the ratio full / empty (tests/monitoring/test_monitoring_bench.py
holds the ratio under a bound).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fakes import FakeSlurm  # noqa: E402


def _node(tmp: str, gpus: int, jobs: int) -> Any:
    from slurm_gpu.cli.collector import NodeCollector
    from slurm_gpu.core.catalog import load_catalog
    from slurm_gpu.devices import simstate
    from slurm_gpu.devices.open import open_driver
    from slurm_gpu.node.agent import NodeAgent
    from slurm_gpu.node.context import AgentPolicy, JobContext
    from slurm_gpu.state.journal import Journal

    state = os.path.join(tmp, "gpus.json")
    simstate.init_state(state, [("H100-80GB", gpus)], sandbox=os.path.join(tmp, "sb"))
    driver = open_driver("sim", sim_state=state)
    journal = Journal(os.path.join(tmp, "state"))
    slurm = FakeSlurm("n1")
    policy = AgentPolicy(admission="features", caps_dir=os.path.join(tmp, "sb", "dev", "nvidia-caps"),
                         cgroup_root=None)
    agent = NodeAgent("n1", driver, journal, slurm, policy)
    log = os.path.join(tmp, "hooks.log")
    with open(log, "w") as f:
        for j in range(1, jobs + 1):
            slurm.add(j, "1g.10gb", 1, slices=1)
            out = agent.prepare(JobContext(str(j), os.getuid(), os.getgid()))
            assert out.action == "created", out
            f.write(json.dumps({"hook": "prolog", "seconds": 0.2, **out.to_dict()}) + "\n")
    driver.close()
    reader = open_driver("sim", sim_state=state)  # the exporter's own driver, kept across scrapes
    return NodeCollector("n1", reader, journal, load_catalog(), 8, log), reader


def scrape_times(collector: Any, runs: int) -> float:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    generate_latest(registry)  # the first scrape reads the logs whole and fills the driver's caches
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        generate_latest(registry)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(gpus: int = 8, runs: int = 30) -> Dict[str, float]:
    with tempfile.TemporaryDirectory() as full_dir, tempfile.TemporaryDirectory() as empty_dir:
        full, d1 = _node(full_dir, gpus, 7 * gpus)
        empty, d2 = _node(empty_dir, gpus, 0)
        try:
            instances = len(d1.instances())
            t_empty = scrape_times(empty, runs)
            t_full = scrape_times(full, runs)
        finally:
            d1.close()
            d2.close()
    return {"gpus": gpus, "instances": instances, "empty_s": t_empty, "full_s": t_full,
            "ratio": t_full / t_empty}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    m = measure(args.gpus, args.runs)
    print(f"scrape of {m['gpus']} GPUs, {m['instances']} instances: {m['full_s'] * 1000:.1f} ms; empty node: "
          f"{m['empty_s'] * 1000:.1f} ms; ratio {m['ratio']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
