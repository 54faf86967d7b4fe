"""Decision time of the planner on an 8-GPU H100 node, against baselines measured in the same run.

Prints median and p99 of one ``plan(node, profile)`` decision with a warm cache (the node agent's steady
state) and a cold one (first sight of every GPU state), next to:
- an empty function call (the floor of any decision),
- a naive first-fit planner over the same geometry (lowest GPU, lowest start).
Also replays a random job stream on 8 H100s with both planners and counts requests that found no room.

Usage: python bench/bench_planner.py [--rounds N]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from slurm_gpu.core import planner
from slurm_gpu.core.catalog import load_catalog
from slurm_gpu.core.errors import NoFitError
from slurm_gpu.core.geometry import NodeState

H100 = load_catalog().model("H100-80GB")
MIX = ["1g.10gb"] * 5 + ["1g.20gb"] * 2 + ["2g.20gb"] * 2 + ["3g.40gb"] * 2 + ["4g.40gb", "7g.80gb"]


def realistic_node() -> NodeState:
    """Eight H100s, partly used: two empty, two full, four with a mix."""
    node = NodeState.empty(H100, 8)
    layout = {
        0: [("3g.40gb", 4), ("1g.10gb", 0)],
        1: [("4g.40gb", 0), ("2g.20gb", 4)],
        2: [("1g.10gb", s) for s in (0, 1, 2, 3, 4, 5, 6)],
        3: [("7g.80gb", 0)],
        4: [("2g.20gb", 0), ("1g.20gb", 6)],
        5: [("1g.10gb", 6), ("1g.10gb", 5)],
    }
    for gpu, items in layout.items():
        for name, start in items:
            node = node.place(gpu, name, start)
    return node


def first_fit(node: NodeState, name: str):
    """Baseline: the first GPU and the lowest start where the profile fits now."""
    for gpu in node.gpus:
        starts = gpu.free_starts(name)
        if starts:
            return gpu.index, starts[0]
    raise NoFitError(name)


def noop(node: NodeState, name: str):
    return None


def timed(fn, node, names, rounds, clear=False):
    samples = []
    for i in range(rounds):
        name = names[i % len(names)]
        if clear:
            planner.clear_caches()
        t0 = time.perf_counter_ns()
        try:
            fn(node, name)
        except NoFitError:
            pass
        samples.append(time.perf_counter_ns() - t0)
    samples.sort()
    return statistics.median(samples) / 1e3, samples[int(len(samples) * 0.99) - 1] / 1e3


def replay(choose, seed: int, steps: int = 3000):
    """Random arrivals and departures on 8 H100s; returns (requests, refused)."""
    rng = random.Random(seed)
    node = NodeState.empty(H100, 8)
    live = []
    refused = 0
    for _ in range(steps):
        if live and rng.random() < 0.45:
            gpu, start = live.pop(rng.randrange(len(live)))
            node = node.remove(gpu, start)
            continue
        name = rng.choice(MIX)
        try:
            gpu, start = choose(node, name)
        except NoFitError:
            refused += 1
            continue
        node = node.place(gpu, name, start)
        live.append((gpu, start))
    return steps, refused


def planner_choice(node, name):
    (inst,) = planner.plan(node, name)
    return inst.gpu_index, inst.start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5000)
    args = ap.parse_args()
    node = realistic_node()
    names = [p.name for p in H100.base_profiles()]
    timed(planner.plan, node, names, 200)  # warm up
    base_med, base_p99 = timed(noop, node, names, args.rounds)
    ff_med, ff_p99 = timed(first_fit, node, names, args.rounds)
    warm_med, warm_p99 = timed(planner.plan, node, names, args.rounds)
    cold_med, cold_p99 = timed(planner.plan, node, names, max(200, args.rounds // 10), clear=True)
    print("one decision on an 8-GPU H100 node (6 GPUs partly used), microseconds")
    print(f"{'':24}{'median':>10}{'p99':>10}{'x first-fit':>14}{'x empty call':>14}")
    for label, med, p99 in (
        ("empty call", base_med, base_p99),
        ("first-fit baseline", ff_med, ff_p99),
        ("planner, warm cache", warm_med, warm_p99),
        ("planner, cold cache", cold_med, cold_p99),
    ):
        print(f"{label:24}{med:10.1f}{p99:10.1f}{med / ff_med:14.2f}{med / base_med:14.1f}")
    print()
    print("random job stream on 8 H100s (3000 events per seed, 55 % arrivals): requests refused")
    total_ff = total_pl = total_req = 0
    for seed in range(5):
        n, ff = replay(first_fit, seed)
        _, pl = replay(planner_choice, seed)
        total_ff += ff
        total_pl += pl
        total_req += n
        print(f"  seed {seed}: first-fit {ff:5d}   planner {pl:5d}")
    print(f"  total: first-fit {total_ff}, planner {total_pl}, ratio planner/first-fit "
          f"{total_pl / max(1, total_ff):.2f}")


if __name__ == "__main__":
    main()
