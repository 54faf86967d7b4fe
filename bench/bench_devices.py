"""Cost of the driver's operations on a simulated 8-GPU node, as ratios to one plain file write.

The baseline is one atomic, not fsynced replace of a file the size of the simulated state
(``state.fsutil.atomic_write``, what each simulated change ends with), measured in the same run: a cost
the simulator's own code does not move. Figures: one locked change of the state (read, change, write),
a full listing (``instances()`` over 8 GPUs with 7 instances each, 56 MIG devices), and one ``create`` +
``destroy`` pair on a busy GPU (four state changes: GPU and compute instance each).

    python bench/bench_devices.py [--runs 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, List

from slurm_gpu.devices.open import open_driver
from slurm_gpu.devices.simstate import init_state, locked_state
from slurm_gpu.state.fsutil import atomic_write


def _median(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm caches; not counted
    samples: List[float] = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "sim.json")
        init_state(path, [("H100-80GB", 8)])
        drv = open_driver("sim", path)
        for gpu in range(8):
            for start in range(7 if gpu else 6):  # GPU 0 keeps slice 6 free for the create/destroy pair
                drv.create(gpu, 19, start)

        text = Path(path).read_bytes()
        plain = str(Path(tmp) / "plain.json")

        def plain_write() -> None:
            atomic_write(plain, text, durable=False)

        def state_write() -> None:
            with locked_state(path) as body:
                body["next_serial"] += 1

        def create_destroy() -> None:
            inst = drv.create(0, 19, 6)
            drv.destroy(0, inst.gi_id)

        base = _median(plain_write, args.runs)
        change = _median(state_write, args.runs)
        listing = _median(drv.instances, args.runs)
        pair = _median(create_destroy, args.runs)
        drv.close()
    print(f"baseline: one plain atomic write    {base * 1e3:8.2f} ms  (1.0x; {len(text):,} bytes)")
    print(f"one locked change of the state      {change * 1e3:8.2f} ms  ({change / base:.1f}x)")
    print(f"instances() 8 GPUs / 56 MIG devices {listing * 1e3:8.2f} ms  ({listing / base:.1f}x)")
    print(f"create + destroy on a busy GPU      {pair * 1e3:8.2f} ms  ({pair / base:.1f}x)")


if __name__ == "__main__":
    main()
