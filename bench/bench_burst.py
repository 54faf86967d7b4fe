"""Burst fill on a real local Slurm cluster: N held jobs released at once, seconds until all run.

Three rows in one run on the same cluster kind (Slurm's default scheduler settings, nodes x 8 H100):
- plain: N jobs without gres (the baseline: what Slurm itself reaches);
- counts: N ``--gres=gpu:1g.10gb`` jobs under count admission (what `admission: counts` ships);
- features: the same under fit-feature admission with the start limit it needs
  (``sched_max_job_start=1,bf_max_job_start=1,bf_interval=5``).
Each MIG row is printed as a ratio to plain. It also counts the node updates of the controller
(``update_node`` lines of slurmctld.log: gres or features set) per job and times ``squeue`` during the burst
against idle (controller response).

Run as root: ``.venv/bin/python bench/bench_burst.py [--nodes 4] [--jobs 32]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Dict, List

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from slurm_gpu.confgen.render import SCHEDULER_PARAMETERS  # noqa: E402
from tests.conftest import start_cluster, stop_cluster  # noqa: E402


def _squeue_ms(cluster) -> float:
    t = time.monotonic()
    cluster.run(["squeue", "-h", "-o", "%i"], check=True)
    return (time.monotonic() - t) * 1000


def _burst(cluster, jobs: int, gres: List[str]) -> Dict[str, float]:
    ids = []
    for _ in range(jobs):
        out = cluster.sbatch("-H", *gres, wrap="sleep 60").stdout.strip()
        if not out.isdigit():
            raise SystemExit(f"sbatch failed: {out}")
        ids.append(out)
    time.sleep(3)  # the nodes' re-plan loops see the held queue
    log = os.path.join(cluster.spec.dir, "log", "slurmctld.log")
    with open(log, encoding="utf-8", errors="replace") as fh:
        before = fh.read().count("update_node")
    idle_ms = statistics.median(_squeue_ms(cluster) for _ in range(5))
    t0 = time.monotonic()
    cluster.run(["scontrol", "release", *ids], check=True)
    busy: List[float] = []
    while True:
        busy.append(_squeue_ms(cluster))
        out = cluster.run(["squeue", "-h", "-t", "R", "-o", "%i"], check=True).stdout.split()
        if len(out) >= jobs:
            break
        if time.monotonic() - t0 > 600:
            raise SystemExit(f"only {len(out)} of {jobs} running after 600 s")
        time.sleep(0.1)
    fill = time.monotonic() - t0
    with open(log, encoding="utf-8", errors="replace") as fh:
        updates = fh.read().count("update_node") - before
    cluster.run(["scancel", *ids])
    time.sleep(3)
    return {"fill_s": fill, "updates_per_job": updates / jobs, "squeue_idle_ms": idle_ms,
            "squeue_burst_ms": statistics.median(busy)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--jobs", type=int, default=32)
    ap.add_argument("--skip-features", action="store_true")
    args = ap.parse_args()
    gpus = "H100-80GB:8"
    rows = {}
    counts = start_cluster(nodes=args.nodes, gpus=gpus, prefix="sg-bench-burst-", admission="counts",
                           scheduler_parameters="", publish_interval_s=1.0, cpus=args.jobs)
    try:
        rows["plain"] = _burst(counts, args.jobs, [])
        print("plain", rows["plain"], flush=True)
        rows["counts"] = _burst(counts, args.jobs, ["--gres=gpu:1g.10gb"])
        print("counts", rows["counts"], flush=True)
    finally:
        stop_cluster(counts)
    if not args.skip_features:
        feats = start_cluster(nodes=args.nodes, gpus=gpus, prefix="sg-bench-burst-", admission="features",
                              scheduler_parameters=SCHEDULER_PARAMETERS, cpus=args.jobs)
        try:
            rows["features"] = _burst(feats, args.jobs, ["--gres=gpu:1g.10gb"])
        finally:
            stop_cluster(feats)
    base = rows["plain"]["fill_s"]
    print(f"burst fill: {args.jobs} held jobs released at once, {args.nodes} nodes x 8 H100-80GB, "
          "Slurm 22.05")
    print(f"{'admission':10} {'fill_s':>8} {'x plain':>8} {'updates/job':>12} {'squeue idle ms':>15} "
          f"{'squeue burst ms':>16}")
    for name, r in rows.items():
        print(f"{name:10} {r['fill_s']:8.2f} {r['fill_s'] / base:8.2f} {r['updates_per_job']:12.2f} "
              f"{r['squeue_idle_ms']:15.1f} {r['squeue_burst_ms']:16.1f}")


if __name__ == "__main__":
    main()
