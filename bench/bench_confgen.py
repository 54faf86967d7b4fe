"""Config generation for 10,000 nodes, as a ratio to a baseline measured in the same run.

Baseline: rendering a one-node inventory 10,000 times (what a per-node loop would cost). Measured: one
inventory of 10,000 node groups (every node its own line), rendered once, all four files.
Run: .venv/bin/python bench/bench_confgen.py [--nodes 10000]
"""

from __future__ import annotations

import argparse
import time

from slurm_gpu.confgen import render as confgen
from slurm_gpu.confgen.inventory import inventory_from_dict


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=10000)
    n = parser.parse_args().nodes
    one = inventory_from_dict({"version": 1, "nodes": [{"names": "gpu00001", "gpus": "H100-80GB:8"}]})
    many = inventory_from_dict({"version": 1, "nodes": [
        {"names": f"gpu{i:05d}", "gpus": "H100-80GB:8" if i % 4 else "A100-80GB:4"} for i in range(n)]})
    confgen.render_all(one)  # warm the template cache

    t0 = time.perf_counter()
    for _ in range(n):
        confgen.render("slurm", one)
    baseline = time.perf_counter() - t0

    t0 = time.perf_counter()
    files = confgen.render_all(many)
    measured = time.perf_counter() - t0

    size = sum(len(t) for t in files.values())
    print(f"nodes: {n}, output: {size / 1e6:.1f} MB in {len(files)} files")
    print(f"one inventory of {n} nodes, all files / one node slurm.conf x {n}: {measured / baseline:.3f}")


if __name__ == "__main__":
    main()
