"""Admission in the simulator: count admission (``default``, what ships) against feature admission with the
shipped start limit and with Slurm's defaults, the exact oracle and static layouts, on the reference
traces (traces/*.jsonl, 90 % offered load, 16x8xH100-80GB, instance times on), and the burst fill:
32 x 1g.10gb submitted at once on 4x8xH100-80GB, seconds until the last one started.

    python bench/bench_admission_sim.py [--traces steady,bursty] [--no-burst]

Prints Markdown tables (bench/RESULTS.md, docs/simulator.md "Count admission in the simulator").
"""

from __future__ import annotations

import argparse
import time
from typing import Dict, List, Optional, Tuple

from slurm_gpu.simulate import traces as tr
from slurm_gpu.simulate.base import (
    SHIPPED_BF_INTERVAL,
    SHIPPED_MAX_STARTS,
    SLURM_BF_INTERVAL,
    SLURM_MAX_STARTS,
)
from slurm_gpu.simulate.cluster import parse_cluster
from slurm_gpu.simulate.engine import SimConfig, Simulation
from slurm_gpu.simulate.overhead import InstanceTimes
from slurm_gpu.simulate.policies import make_policy

# label, policy, (max_starts, bf_interval): None is what ships for that admission
ROWS: Tuple[Tuple[str, str, Optional[Tuple[int, float]]], ...] = (
    ("counts (default)", "default", None),
    ("features, shipped 1 start/pass", "features", (SHIPPED_MAX_STARTS, SHIPPED_BF_INTERVAL)),
    ("features, Slurm defaults", "features", (SLURM_MAX_STARTS, SLURM_BF_INTERVAL)),
    ("oracle", "oracle", None),
    ("static", "static", None),
)
COLUMNS = ("misfits", "compute_utilization", "mean_wait_s", "p95_wait_s")


def _config(settings: Optional[Tuple[int, float]], times: Optional[InstanceTimes]) -> SimConfig:
    cfg = SimConfig(instance_times=times)
    if settings is not None:
        cfg.max_starts, cfg.bf_interval = settings
    return cfg


def _cell(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if v < 10 else f"{v:,.1f}"
    return str(v)


def traces_table(names: List[str]) -> None:
    cluster = parse_cluster("16x8xH100-80GB")
    print("| trace | admission | " + " | ".join(COLUMNS) + " | CPU s |")
    print("|---|---|" + "---:|" * (len(COLUMNS) + 1))
    for name in names:
        trace = tr.read_trace(f"traces/{name}.jsonl")
        for label, policy, settings in ROWS:
            t0 = time.process_time()
            cfg = _config(settings, InstanceTimes())
            d = Simulation(trace, cluster, make_policy(policy), cfg).run().to_dict()
            cells = " | ".join(_cell(d[k]) for k in COLUMNS)
            print(f"| {name} | {label} | {cells} | {time.process_time() - t0:.1f} |", flush=True)


def burst(at: float) -> List[tr.TraceJob]:
    return [tr.TraceJob(str(i), at, 600.0, "gpu:1g.10gb:1", time_limit=3600.0) for i in range(32)]


def burst_table() -> None:
    cluster = parse_cluster("4x8xH100-80GB")
    print("\nburst fill: 32 x 1g.10gb submitted at once on 4x8xH100-80GB (no instance times): seconds from "
          "the submission until the last start\n")
    print("| admission | submitted on a re-plan tick | submitted just after one | misfits |")
    print("|---|---:|---:|---:|")
    for label, policy, settings in ROWS[:4]:
        fills: Dict[float, float] = {}
        misfits = 0
        for at in (0.0, 0.01):
            sim = Simulation(burst(at), cluster, make_policy(policy), _config(settings, None))
            result = sim.run()
            fills[at] = max(j.start or 0.0 for j in sim.jobs) - at
            misfits = max(misfits, result.misfits)
        print(f"| {label} | {fills[0.0]:.1f} | {fills[0.01]:.1f} | {misfits} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--traces", default="steady,bursty,mostly-large,mostly-small,daynight")
    ap.add_argument("--no-burst", action="store_true")
    args = ap.parse_args()
    if args.traces:
        traces_table(args.traces.split(","))
    if not args.no_burst:
        burst_table()


if __name__ == "__main__":
    main()
