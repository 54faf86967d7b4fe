"""TaskProlog cost: a fresh interpreter that reads the task file, as a ratio to a bare interpreter.

Also the journal's write path: one full prepare+release cycle of a 2-instance job, as a ratio to one
plain atomic_write of the same record (both fsync). Prints figures measured in this run only.

    python bench/bench_task_env.py [runs]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time


def _best(cmd, runs):
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("runs", nargs="?", type=int, default=20, help="runs of each case (default 20)")
    runs = parser.parse_args().runs
    from slurm_gpu.state.journal import Journal
    from slurm_gpu.state.records import Actual, Planned

    state = tempfile.mkdtemp()
    journal = Journal(os.path.join(state, "s"), boot_id="bench")
    journal.write_task_env("1", os.getuid(), os.getgid(), ["MIG-8d2f41c6-0b7e-5a3d-9c1f-6e4b2a7d9c30"])
    bare = _best([sys.executable, "-c", "pass"], runs)
    read = (
        "import os, sys; from slurm_gpu.state.task_env import read_task_env; "
        "print('export CUDA_VISIBLE_DEVICES=' + ','.join(read_task_env(sys.argv[1], os.getuid(), '1')))"
    )
    task = _best([sys.executable, "-c", read, journal.state_dir], runs)
    full = _best([sys.executable, "-c", "import slurm_gpu.state.journal"], runs)
    print(f"bare interpreter           {bare * 1000:7.1f} ms  1.00")
    for label, t in (("TaskProlog read (task_env)", task), ("import slurm_gpu.state.journal", full)):
        print(f"{label:26s} {t * 1000:7.1f} ms  {t / bare:.2f}  (+{(t - bare) * 1000:.1f} ms)")

    from slurm_gpu.state.fsutil import atomic_write

    plan = [Planned(0, "GPU-x", 9, "3g.40gb", 0, 4), Planned(0, "GPU-x", 9, "3g.40gb", 4, 4)]
    n = max(5, runs)
    t0 = time.perf_counter()
    for _ in range(n):
        atomic_write(os.path.join(state, "plain.json"), "x" * 900)
    one_write = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for k in range(n):
        job = str(100 + k)
        with journal.lock():
            journal.begin_prepare(job, 1, 1, "gpu:3g.40gb:2", plan)
            for i in range(2):
                journal.record_created(job, i, Actual(i + 1, 0, f"MIG-{k:04d}-{i}"))
            journal.finish_prepare(job)
            journal.begin_release(job)
            for i in range(2):
                journal.record_released(job, i)
            journal.finish_release(job)
    cycle = (time.perf_counter() - t0) / n
    print(f"one atomic_write           {one_write * 1000:7.2f} ms  1.00")
    print(f"prepare+release, 2 inst.   {cycle * 1000:7.2f} ms  {cycle / one_write:.2f}  (8 writes + history)")


if __name__ == "__main__":
    main()
