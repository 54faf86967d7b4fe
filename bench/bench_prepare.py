"""NVML calls of one Prolog and one Epilog on a simulated node, as a ratio to one read of the node.

    python bench/bench_prepare.py [--gpus 8] [--count 2] [--profile 1g.10gb]

Runs the real ``NodeAgent.prepare``/``release`` over ``NvmlDriver(CountingNvml(SimNvml))`` with a
temporary journal and an in-memory Slurm, and prints the NVML calls by function. The baseline, measured
in the same run on the same node, is one read of it by a fresh driver (``gpus()``, ``instances()`` and one
profile table): a hook that reads its node once costs that plus its own creates or destroys. The budget
test (tests/node/test_snapshot.py) holds the prepare to its figure; this prints where the calls go.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fakes import FakeSlurm, counted_agent  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--count", type=int, default=2)
    ap.add_argument("--profile", default="1g.10gb")
    args = ap.parse_args()
    from slurm_gpu.node.context import JobContext

    uid, gid = os.getuid(), os.getgid()
    with tempfile.TemporaryDirectory() as tmp:
        agent, _ = counted_agent(tmp, args.gpus)
        slurm: FakeSlurm = agent.slurm
        # Another job already runs on the node: a prepare reads a node that is not empty.
        slurm.add(1, "3g.40gb", 1, slices=4)
        agent.prepare(JobContext("1", uid, gid))
        slurm.add(2, args.profile, args.count, slices=args.count)
        reader, nv = counted_agent(tmp, args.gpus, slurm=slurm, reuse=True)
        reader.snapshot()
        one_read = nv.total
        print(f"one read of the node (baseline): {one_read} NVML calls on {args.gpus} GPUs")
        for hook in ("prepare", "release"):
            agent, nv = counted_agent(tmp, args.gpus, slurm=slurm, reuse=True)  # a fresh hook process
            out = getattr(agent, hook)(JobContext("2", uid, gid))
            print(f"{hook} of {args.count}x{args.profile}: {out.action}; {nv.total} NVML calls, "
                  f"{nv.total / one_read:.2f}x one read")
            for name, n in sorted(nv.counts.items(), key=lambda kv: -kv[1]):
                print(f"  {n:5d}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
