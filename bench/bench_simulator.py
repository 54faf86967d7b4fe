"""Simulator throughput: jobs per second replayed on a 100-node cluster (100x8xH100-80GB), per policy.

Baseline, measured in the same run: the bare event loop (each job's submit and end pushed on and popped
off a heap, no scheduling) over the same trace. Figures: CPU time, jobs/s, and the ratio to the
baseline (so machines compare). Times are CPU seconds of this process, so other load on the machine
does not inflate them. Target: 100,000 jobs under a minute with the default policy.

    python bench/bench_simulator.py [--jobs 100000] [--cluster 100x8xH100-80GB] [--policies default,features]
"""

from __future__ import annotations

import argparse
import heapq
import time

from slurm_gpu.core.catalog import load_catalog
from slurm_gpu.simulate.cluster import parse_cluster
from slurm_gpu.simulate.engine import SimConfig, Simulation
from slurm_gpu.simulate.policies import make_policy
from slurm_gpu.simulate.traces import generate


def baseline(trace) -> float:
    start = time.process_time()
    events = [(j.submit, 1, i) for i, j in enumerate(trace)]
    heapq.heapify(events)
    while events:
        t, kind, i = heapq.heappop(events)
        if kind == 1:
            heapq.heappush(events, (t + trace[i].duration, 0, i))
    return time.process_time() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--cluster", default="100x8xH100-80GB")
    ap.add_argument("--policies", default="default,features,oracle,static,shards")
    ap.add_argument("--kind", default="steady")
    args = ap.parse_args()
    cluster = parse_cluster(args.cluster)
    model = load_catalog().model(cluster.models[0])
    trace = generate(args.kind, args.jobs, model, cluster.memory_slices(), load=0.9, seed=1)
    base = baseline(trace)
    print(f"{args.jobs} {args.kind} jobs at 90% offered load on {args.cluster}")
    heads = ("cpu_s", "jobs/s", "x baseline", "misfits", "utilization")
    print(f"{'policy':8s} " + " ".join(h.rjust(w) for h, w in zip(heads, (8, 9, 11, 8, 11))))
    print(f"{'(loop)':8s} {base:8.2f} {args.jobs / base:9.0f} {1.0:11.1f}")
    for name in args.policies.split(","):
        start = time.process_time()
        result = Simulation(trace, cluster, make_policy(name), SimConfig()).run()
        wall = time.process_time() - start
        print(f"{name:8s} {wall:8.2f} {args.jobs / wall:9.0f} {wall / base:11.1f} {result.misfits:8d} "
              f"{result.utilization:11.4f}")


if __name__ == "__main__":
    main()
