"""Served prolog / epilog processes of two installs, alternated job by job: which one is faster, and by how
much, on a machine whose speed drifts more than the difference between them.

Each install (``--before``, ``--after``: the interpreters of two site installs, e.g. two venvs made with
``pip install .`` from two checkouts) gets its own simulated 8 x H100 node, its own hook server and the
same stream of jobs as ``bench_hooks.py`` (count admission, stand-in ``scontrol``/``squeue``). The two
servers take turns: for every job, one install's hook process runs and then the other's, the order swapped
from one job to the next, with a ``<after interpreter> -c pass`` run after each pair as the baseline. It
prints the median of each install's processes, the median of the paired differences (after - before:
negative when the after install is faster) and each hook's own time in its child (the ``seconds`` of its
log line).

Run: ``.venv/bin/python bench/bench_hooks_ab.py --before /tmp/old/bin/python --after /tmp/new/bin/python``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_hooks import PROFILES, entry_of, hook_launcher, write_node  # noqa: E402


class Node:
    """One install's simulated node, configuration, stand-in Slurm and running hook server."""

    def __init__(self, python: str, jobs):
        self.python = python
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-hooks-ab-"))
        state, sandbox = self.tmp / "gpus.json", self.tmp / "sb"
        subprocess.run([python, "-c", "import sys; from slurm_gpu.devices import simstate; "
                        "simstate.init_state(sys.argv[1], [('H100-80GB', 8)], sandbox=sys.argv[2])",
                        str(state), str(sandbox)], check=True, cwd=self.tmp)
        self.env, self.current = write_node(self.tmp, jobs)
        sock = self.env["SLURM_GPU_HOOK_SOCKET"]
        self.hook = hook_launcher(python, self.tmp)
        serve = [*entry_of(python, "slurm-gpu-hook", "slurm_gpu.hooks.entry"), "serve", "--socket", sock]
        self.server = subprocess.Popen(serve, env=self.env, cwd=self.tmp, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not os.path.exists(sock):
            if self.server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the hook server of {python} did not start")
            time.sleep(0.02)

    def run(self, hook: str, job: int) -> float:
        """Wall seconds of one hook process for ``job``."""
        self.current.write_text(f"{job}\n")
        t0 = time.perf_counter()
        subprocess.run([*self.hook, hook], env={**self.env, "SLURM_JOB_ID": str(job)}, check=True,
                       stdout=subprocess.DEVNULL, cwd=self.tmp)
        return time.perf_counter() - t0

    def child_seconds(self, hook: str):
        lines = (self.tmp / "state" / "hooks.log").read_text().splitlines()
        return [json.loads(x)["seconds"] for x in lines if f'"hook":"{hook}"' in x]

    def stop(self) -> None:
        self.server.terminate()
        self.server.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="the interpreter of the install to compare against")
    ap.add_argument("--after", required=True, help="the interpreter of the install measured")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of --jobs jobs each (default 3)")
    ap.add_argument("--jobs", type=int, default=24, help="jobs per round (default 24)")
    args = ap.parse_args()

    jobs = [(1000 + n, *PROFILES[n % len(PROFILES)]) for n in range(args.jobs * args.rounds)]
    nodes = {"before": Node(args.before, jobs), "after": Node(args.after, jobs)}
    times = {(side, hook): [] for side in nodes for hook in ("prolog", "epilog")}
    base = []
    try:
        for r in range(args.rounds):
            stream = jobs[r * args.jobs:(r + 1) * args.jobs]
            for hook in ("prolog", "epilog"):  # the node filled by the round's prologs, then emptied
                for i, (job, *_) in enumerate(stream):
                    for side in (("before", "after") if i % 2 else ("after", "before")):
                        times[(side, hook)].append(nodes[side].run(hook, job))
                    t0 = time.perf_counter()
                    subprocess.run([args.after, "-c", "pass"], check=True)
                    base.append(time.perf_counter() - t0)
    finally:
        for node in nodes.values():
            node.stop()

    ms = 1000
    print(f"{len(jobs)} jobs per hook and install, alternated; {args.after} -c pass median "
          f"{statistics.median(base) * ms:.1f} ms")
    for hook in ("prolog", "epilog"):
        before, after = times[("before", hook)], times[("after", hook)]
        diff = statistics.median(a - b for a, b in zip(after, before))
        child = {side: statistics.median(nodes[side].child_seconds(hook)) * ms for side in nodes}
        b, a = statistics.median(before) * ms, statistics.median(after) * ms
        print(f"{hook}: before {b:.1f} ms, after {a:.1f} ms (after - before, paired median {diff * ms:+.1f}"
              f" ms); in the child {child['before']:.1f} / {child['after']:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
