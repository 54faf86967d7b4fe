"""Time-averaged metrics of a replay over a measurement window, comparable with published MIG results.

- ``compute_utilization`` / ``memory_utilization``: compute-slice (GPC) and memory-slice seconds held by
  jobs / (the cluster's slices x the window), integrated exactly between events.
- ``stranded_capacity``: the share of free compute slices that no further instance could use, by the
  placement rules (``ModelTable.spare``; ``static``: what its layout leaves unpartitioned), summed over
  GPUs and averaged over ``samples`` evenly spaced instants of the window: sum(stranded) / sum(free).
  ``stranded_of_total`` is the same stranded slices over all compute slices.
- ``fragmentation``: the share of free memory slices beyond the largest instance each GPU could still
  take (the ``core.fragmentation`` ratio, weighted by free slices), sampled the same way;
  ``over_time`` gives it with the utilizations and stranded capacity per tenth of the window.
- ``request_fragmented`` (counted by the engine): jobs a scheduling pass tried and found no room for,
  with no backfill reservation in play, while the cluster's total free compute and memory slices
  would have held their whole request: what kept them waiting was how the free slices lay, not how
  many there were.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

__all__ = ["Meter", "BUCKETS"]

BUCKETS = 10  # over_time: one value per tenth of the window
View = Tuple[int, int, int, int]  # free compute, stranded compute, free memory, lost memory


def _ratio(num: float, den: float) -> float:
    return round(num / den, 6) if den > 0 else 0.0


class Meter:
    """Fed by the engine: ``advance`` before each instant's events, ``instant`` after its passes."""

    def __init__(self, window: Tuple[float, float], samples: int, total_m: int, total_c: int):
        self.w0, self.w1 = window
        self.total_m, self.total_c = total_m, total_c
        self.n = samples if self.w1 > self.w0 and samples > 0 else 0
        self.step = (self.w1 - self.w0) / self.n if self.n else 0.0
        self.busy_m = self.busy_c = 0.0
        # per sample instant: memory used, compute used, pending jobs, then the View sums
        self.ticks: List[Tuple[int, int, int, int, int, int, int]] = []

    def tick_time(self, i: int) -> float:
        return self.w0 + (i + 0.5) * self.step

    def advance(self, last_t: float, t: float, used_m: int, used_c: int, pending: int,
                view: Callable[[], View]) -> None:
        """The state after the events of ``last_t`` held until ``t``."""
        a, b = min(max(last_t, self.w0), self.w1), min(max(t, self.w0), self.w1)
        if b > a:
            self.busy_m += used_m * (b - a)
            self.busy_c += used_c * (b - a)
        i = len(self.ticks)
        if i < self.n and self.tick_time(i) < t:
            sample = (used_m, used_c, pending, *view())
            while i < self.n and self.tick_time(i) < t:
                self.ticks.append(sample)
                i += 1

    def summary(self, final: Optional[View] = None) -> Dict[str, Any]:
        if final is not None:  # a window running past the last event: the cluster stays as it ended
            while len(self.ticks) < self.n:
                self.ticks.append((0, 0, 0, *final))
        span = self.w1 - self.w0
        ticks = self.ticks
        stranded = sum(s[4] for s in ticks)
        return {
            "window_s": [round(self.w0, 3), round(self.w1, 3)],
            "compute_utilization": _ratio(self.busy_c, self.total_c * span),
            "memory_utilization": _ratio(self.busy_m, self.total_m * span),
            "stranded_capacity": _ratio(stranded, sum(s[3] for s in ticks)),
            "stranded_of_total": _ratio(stranded, self.total_c * len(ticks)),
            "fragmentation": _ratio(sum(s[6] for s in ticks), sum(s[5] for s in ticks)),
            "over_time": self.over_time(),
        }

    def over_time(self) -> Dict[str, Any]:
        """Per tenth of the window: compute and memory utilization, stranded capacity, fragmentation."""
        out: Dict[str, Any] = {"bucket_s": round((self.w1 - self.w0) / BUCKETS, 3), "compute_utilization": [],
                               "memory_utilization": [], "stranded_capacity": [], "fragmentation": []}
        per = max(1, len(self.ticks) // BUCKETS) if self.ticks else 0
        for b in range(BUCKETS if per else 0):
            part = self.ticks[b * per:(b + 1) * per] if b < BUCKETS - 1 else self.ticks[b * per:]
            n = len(part)
            if not n:
                continue
            out["compute_utilization"].append(_ratio(sum(s[1] for s in part), self.total_c * n))
            out["memory_utilization"].append(_ratio(sum(s[0] for s in part), self.total_m * n))
            out["stranded_capacity"].append(_ratio(sum(s[4] for s in part), sum(s[3] for s in part)))
            out["fragmentation"].append(_ratio(sum(s[6] for s in part), sum(s[5] for s in part)))
        return out

    def samples(self) -> Dict[str, List[float]]:
        """Every sample instant (for plots): seconds into the window, utilizations, pending jobs."""
        return {
            "t": [round(self.tick_time(i) - self.w0, 3) for i in range(len(self.ticks))],
            "compute_utilization": [s[1] / self.total_c for s in self.ticks],
            "memory_utilization": [s[0] / self.total_m for s in self.ticks],
            "pending": [float(s[2]) for s in self.ticks],
            "stranded_capacity": [s[4] / s[3] if s[3] else 0.0 for s in self.ticks],
        }
