"""Start-up time of `slurm-gpu --help`, as a ratio to `python3 -c pass` measured in the same run.

Hooks start a `slurm-gpu` process for every job, so the command line must cost little more than the
interpreter itself. Target: `slurm-gpu --help` under 3x the bare interpreter (median of N runs each).

    python bench/bench_startup.py [--runs 30]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence

TARGET_RATIO = 3.0


def _time_once(argv: Sequence[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def median_seconds(cases: Dict[str, Sequence[str]], runs: int) -> Dict[str, float]:
    """Median per case; the cases take turns each round so that load changes hit all of them alike."""
    for argv in cases.values():
        _time_once(argv)  # warm the page cache and .pyc files; not counted
    samples: Dict[str, List[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, argv in cases.items():
            samples[name].append(_time_once(argv))
    return {name: statistics.median(values) for name, values in samples.items()}


def _console_script() -> str:
    beside = Path(sys.executable).with_name("slurm-gpu")
    found = str(beside) if beside.exists() else shutil.which("slurm-gpu")
    if not found:
        raise SystemExit("slurm-gpu console script not found (pip install -e . first)")
    return found


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="runs per command (median taken)")
    args = parser.parse_args(argv)

    cases: Dict[str, Sequence[str]] = {
        "python3 -c pass (baseline)": [sys.executable, "-c", "pass"],
        "python3 -c 'import click'": [sys.executable, "-c", "import click"],
        "slurm-gpu --help": [_console_script(), "--help"],
        "python -m slurm_gpu --help": [sys.executable, "-m", "slurm_gpu", "--help"],
        "slurm-gpu catalog H100-80GB": [_console_script(), "catalog", "H100-80GB"],
    }
    times = median_seconds(cases, args.runs)
    base = times["python3 -c pass (baseline)"]
    print(f"median of {args.runs} runs each, ratio to `python3 -c pass`")
    for name, seconds in times.items():
        print(f"  {name:<32} {seconds / base:5.2f}x")
    ratio = times["slurm-gpu --help"] / base
    verdict = "meets" if ratio < TARGET_RATIO else "MISSES"
    print(f"slurm-gpu --help: {ratio:.2f}x, {verdict} the target of < {TARGET_RATIO:.0f}x")
    return 0 if ratio < TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
