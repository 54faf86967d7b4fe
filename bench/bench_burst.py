"""Burst fill on a real local Slurm cluster: N held jobs released at once, seconds until all run.

Three rows in one run on the same cluster kind (Slurm's default scheduler settings, nodes x 8 H100):
- plain: N jobs without gres (the baseline: what Slurm itself reaches);
- counts: N ``--gres=gpu:1g.10gb`` jobs under count admission (what `admission: counts` ships);
- features: the same under fit-feature admission with the start limit it needs
  (``sched_max_job_start=1,bf_max_job_start=1,bf_interval=5``).
Each MIG row is printed as a ratio to plain. It also counts the node updates of the controller
(``update_node`` lines of slurmctld.log: gres or features set) per job and times ``squeue`` during the burst
against idle (controller response).

"All run" is the moment no job of the burst is pending any more (with ``--sleep`` shorter than the burst,
early jobs may have ended by then); starts per second are jobs over that time.

Run as root: ``.venv/bin/python bench/bench_burst.py [--nodes 4] [--jobs 32]``; the large burst:
``bench/bench_burst.py --nodes 36 --jobs 2000 --sleep 20 --skip-features`` (36 x 56 1g.10gb slots).
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


def _burst(cluster, jobs: int, gres: List[str], sleep_s: int) -> Dict[str, float]:
    ids = []
    for lo in range(0, jobs, 1000):  # Slurm's MaxArraySize is 1001
        hi = min(lo + 1000, jobs) - 1
        out = cluster.sbatch("-H", f"--array=0-{hi - lo}", *gres, wrap=f"sleep {sleep_s}").stdout.strip()
        if not out.isdigit():
            raise SystemExit(f"sbatch failed: {out}")
        ids.append(out)
    time.sleep(5)  # the nodes' re-plan loops see the held queue
    log = os.path.join(cluster.spec.dir, "log", "slurmctld.log")
    with open(log, encoding="utf-8", errors="replace") as fh:
        before = fh.read().count("update_node")
    idle_ms = statistics.median(_squeue_ms(cluster) for _ in range(5))
    t0 = time.monotonic()
    cluster.run(["scontrol", "release", *ids], check=True)
    busy: List[float] = []
    while True:
        busy.append(_squeue_ms(cluster))
        pending = cluster.run(["squeue", "-h", "-r", "-t", "PD", "-o", "%i"], check=True).stdout.split()
        if not pending:
            break
        if time.monotonic() - t0 > 900:
            raise SystemExit(f"{len(pending)} of {jobs} still pending after 900 s")
        time.sleep(0.1)
    fill = time.monotonic() - t0
    with open(log, encoding="utf-8", errors="replace") as fh:
        updates = fh.read().count("update_node") - before
    cluster.run(["scancel", *ids])
    while cluster.run(["squeue", "-h", "-o", "%i"], check=True).stdout.strip():
        time.sleep(1)  # every Epilog done: the next row starts on empty nodes
    return {"fill_s": fill, "starts_per_s": jobs / fill, "updates_per_job": updates / jobs,
            "squeue_idle_ms": idle_ms, "squeue_burst_ms": statistics.median(busy)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--jobs", type=int, default=32)
    ap.add_argument("--sleep", type=int, default=60, help="seconds each job runs")
    ap.add_argument("--publish-interval", type=float, default=5.0,
                    help="seconds between a node's re-plans (the shipped unit runs `publish --watch 5`)")
    ap.add_argument("--skip-features", action="store_true")
    args = ap.parse_args()
    gpus = "H100-80GB:8"
    cpus = min(args.jobs, 56)  # a node holds at most 56 1g.10gb: plain jobs get as many CPUs
    rows = {}
    counts = start_cluster(nodes=args.nodes, gpus=gpus, prefix="sg-bench-burst-", admission="counts",
                           scheduler_parameters="", publish_interval_s=args.publish_interval, cpus=cpus)
    try:
        rows["plain"] = _burst(counts, args.jobs, [], args.sleep)
        print("plain", rows["plain"], flush=True)
        rows["counts"] = _burst(counts, args.jobs, ["--gres=gpu:1g.10gb"], args.sleep)
        print("counts", rows["counts"], flush=True)
    finally:
        stop_cluster(counts)
    if not args.skip_features:
        feats = start_cluster(nodes=args.nodes, gpus=gpus, prefix="sg-bench-burst-", admission="features",
                              scheduler_parameters=SCHEDULER_PARAMETERS, cpus=cpus)
        try:
            rows["features"] = _burst(feats, args.jobs, ["--gres=gpu:1g.10gb"], args.sleep)
        finally:
            stop_cluster(feats)
    base = rows["plain"]["fill_s"]
    print(f"burst fill: {args.jobs} held jobs released at once, {args.nodes} nodes x 8 H100-80GB, "
          "Slurm 22.05")
    print(f"{'admission':10} {'fill_s':>8} {'x plain':>8} {'starts/s':>9} {'updates/job':>12} "
          f"{'squeue idle ms':>15} {'squeue burst ms':>16}")
    for name, r in rows.items():
        print(f"{name:10} {r['fill_s']:8.2f} {r['fill_s'] / base:8.2f} {r['starts_per_s']:9.1f} "
              f"{r['updates_per_job']:12.2f} {r['squeue_idle_ms']:15.1f} {r['squeue_burst_ms']:16.1f}")


if __name__ == "__main__":
    main()
