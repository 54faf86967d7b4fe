"""The reference traces and a saturated mixed workload with the metrics published Kubernetes dynamic-MIG
results use: GPC utilization, P95 wait, stranded capacity; every policy, the ideal bound, with and
without the instance-time model. Prints Markdown tables (bench/RESULTS.md).

    python bench/bench_metrics.py [--traces steady,bursty] [--policies default,ideal] [--saturated-only]
                                  [--bounded-jobs 150] [--seeds 5] [--priority submit|small-first|large-first]

Saturated workload (the issue's item 6): 2 x 4 H100-80GB, offered load 1.4, equal shares of 1g.10gb,
2g.20gb, 3g.40gb and 7g.80gb, one instance per job, Poisson arrivals, log-normal run times (median 30 min),
seeded; measured over the middle of the arrival window (its first and last tenth left out).
"""

from __future__ import annotations

import argparse
import time
from typing import List, Optional

from slurm_gpu.core.catalog import load_catalog
from slurm_gpu.simulate import traces as tr
from slurm_gpu.simulate.cluster import parse_cluster
from slurm_gpu.simulate.engine import SimConfig, Simulation
from slurm_gpu.simulate.overhead import InstanceTimes
from slurm_gpu.simulate.policies import make_policy

COLUMNS = ("mean_wait_s", "p50_wait_s", "p95_wait_s", "p99_wait_s", "compute_utilization",
           "memory_utilization", "stranded_capacity", "stranded_of_total", "fragmentation",
           "request_fragmented", "misfits", "rejected")


def saturated(jobs: int = 3000, seed: int = 1) -> List[tr.TraceJob]:
    model = load_catalog().model("H100-80GB")
    tr.MIXES["k8s-mixed"] = (0.25, 0.0, 0.25, 0.25, 0.0, 0.25)  # 1g.10gb, 2g.20gb, 3g.40gb, 7g.80gb
    return tr.generate("steady", jobs, model, parse_cluster("2x4xH100-80GB").memory_slices(), load=1.4,
                       seed=seed, mix="k8s-mixed", multi=0.0)


def row(label: str, policy: str, trace: List[tr.TraceJob], cluster: str, times: Optional[InstanceTimes],
        window: Optional[tuple] = None, priority: str = "submit") -> str:
    cfg = SimConfig(instance_times=times, window=window, priority=priority)
    t0 = time.process_time()
    result = Simulation(trace, parse_cluster(cluster), make_policy(policy), cfg).run()
    d = result.to_dict()
    cells = [f"{d[k]:.4f}" if isinstance(d[k], float) and d[k] < 10 else f"{d[k]:,.1f}"
             if isinstance(d[k], float) else str(d[k]) for k in COLUMNS]
    return f"| {label} | {policy} | " + " | ".join(cells) + f" | {time.process_time() - t0:.1f} |"


def header() -> str:
    cols = ["trace", "policy", *COLUMNS, "CPU s"]
    return "| " + " | ".join(cols) + " |\n|" + "---|" * 2 + "---:|" * (len(cols) - 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--traces", default="steady,bursty,mostly-large,mostly-small,daynight")
    ap.add_argument("--policies", default="default,features,oracle,static,shards,ideal")
    ap.add_argument("--saturated-only", action="store_true")
    ap.add_argument("--bounded-jobs", type=int, default=150)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--priority", default="submit", help="the queue's order (SimConfig.priority)")
    args = ap.parse_args()
    policies = args.policies.split(",")
    times = InstanceTimes()
    if not args.saturated_only:
        print(header())
        for name in args.traces.split(","):
            trace = tr.read_trace(f"traces/{name}.jsonl")
            for p in policies:
                print(row(name, p, trace, "16x8xH100-80GB", times, priority=args.priority), flush=True)
    trace = saturated()
    span = max(j.submit for j in trace)
    window = (0.1 * span, 0.9 * span)
    print("\nsaturated mixed workload, 2x4xH100-80GB, offered load 1.4, window = middle 80 % of arrivals\n")
    print(header())
    for p in policies:
        print(row("saturated", p, trace, "2x4xH100-80GB", times, window, args.priority), flush=True)
    for p in ("default", "ideal"):
        print(row("saturated, no instance times", p, trace, "2x4xH100-80GB", None, window, args.priority),
              flush=True)
    bounded(policies, times, args.bounded_jobs, args.seeds, args.priority)


def bounded(policies: List[str], times: InstanceTimes, jobs: int, seeds: int,
            priority: str = "submit") -> None:
    """The same workload, short enough that the queue stays bounded: means over seeds."""
    print(f"\nbounded saturated workload: {jobs} jobs, mean of seeds 1-{seeds}, window = middle 80 %, "
          f"queue order {priority}\n")
    keys = ("mean_wait_s", "p95_wait_s", "compute_utilization", "stranded_of_total", "stranded_capacity")
    print("| policy | " + " | ".join(keys) + " |\n|---|" + "---:|" * len(keys))
    for p in policies:
        runs = []
        for seed in range(1, seeds + 1):
            trace = saturated(jobs, seed)
            span = max(j.submit for j in trace)
            cfg = SimConfig(instance_times=times, window=(0.1 * span, 0.9 * span), priority=priority)
            sim = Simulation(trace, parse_cluster("2x4xH100-80GB"), make_policy(p), cfg)
            runs.append(sim.run().to_dict())
        means = [sum(r[k] for r in runs) / len(runs) for k in keys]
        print(f"| {p} | " + " | ".join(f"{v:,.0f}" if v >= 10 else f"{v:.4f}" for v in means) + " |")


if __name__ == "__main__":
    main()
