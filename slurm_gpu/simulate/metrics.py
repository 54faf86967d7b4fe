"""What a replay reports: the summary (stable JSON keys) and, on request, time series for plots.

- ``misfits``: starts on a node where the job's instances could not be placed (requeued, or for ``shards``
  a failed prolog); ``misfit_rate`` = misfits / (started + misfits), i.e. per start attempt.
- ``utilization``: memory-slice-seconds held by running jobs / (the cluster's memory slices x the time),
  over the arrival window (first to last submission), the window the offered load is defined on; the
  drain-out tail after the last submission is left out. Memory slices, because they are what MIG
  partitions (8 per H100) and what the ``mig`` gres counts.
- ``mean_wait_s`` / ``p50_wait_s`` / ``p95_wait_s`` / ``p99_wait_s``: from submission to the start that
  ran (misfit attempts included), its instances made (with the instance-time model); nearest rank.
- the time-averaged metrics of ``slurm_gpu.simulate.measure`` (``compute_utilization``,
  ``stranded_capacity``, ``fragmentation``, ``request_fragmented``, ...), in ``measures``.
- ``makespan_s``: first submission to last end (one long job sets it); ``last_start_s``: first submission
  to the last start, which long jobs do not stretch. ``drains``: node drains Slurm would do (``shards``).
- ``rejected`` / ``rejected_reasons``: jobs that could never run under the policy, counted by reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from slurm_gpu.simulate.state import SimJob

__all__ = ["Result", "Series", "summarise", "percentile", "SUMMARY_KEYS"]

SUMMARY_KEYS = (
    "policy",
    "jobs",
    "started",
    "misfits",
    "misfit_rate",
    "utilization",
    "mean_wait_s",
    "p95_wait_s",
    "makespan_s",
    "drains",
)


@dataclass
class Series:
    """Per-instant samples: time, memory slices in use, pending jobs, misfits so far."""

    t: List[float] = field(default_factory=list)
    used: List[int] = field(default_factory=list)
    queued: List[int] = field(default_factory=list)
    misfits: List[int] = field(default_factory=list)

    def add(self, t: float, used: int, queued: int, misfits: int) -> None:
        self.t.append(t)
        self.used.append(used)
        self.queued.append(queued)
        self.misfits.append(misfits)


@dataclass
class Result:
    policy: str
    jobs: int
    started: int
    misfits: int
    misfit_rate: float
    utilization: float
    mean_wait_s: float
    p95_wait_s: float
    makespan_s: float
    drains: int
    rejected: int = 0
    total_slices: int = 0
    rejected_reasons: Dict[str, int] = field(default_factory=dict)
    layout: Optional[List[Dict[str, Any]]] = None  # static: the layouts used, [{"layout", "gpus"}]
    last_start_s: float = 0.0
    series: Optional[Series] = None
    waits: Sequence[float] = ()
    p50_wait_s: float = 0.0
    p99_wait_s: float = 0.0
    measures: Dict[str, Any] = field(default_factory=dict)  # slurm_gpu.simulate.measure's summary
    samples: Dict[str, List[float]] = field(default_factory=dict)  # per sample instant, for plots

    def to_dict(self) -> Dict[str, Any]:
        out = {k: getattr(self, k) for k in SUMMARY_KEYS}
        out["p50_wait_s"] = self.p50_wait_s
        out["p99_wait_s"] = self.p99_wait_s
        out.update(self.measures)
        out["last_start_s"] = self.last_start_s
        out["rejected"] = self.rejected
        out["rejected_reasons"] = dict(self.rejected_reasons)
        if self.layout is not None:
            out["static_layout"] = [dict(item) for item in self.layout]
        return out


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return float(ordered[rank - 1])


def summarise(
    policy: str,
    jobs: Sequence[SimJob],
    misfits: int,
    drains: int,
    rejected: int,
    total_slices: int,
    series: Optional[Series],
    busy_area: float,
    span: Tuple[float, float, float],
    rejected_reasons: Optional[Dict[str, int]] = None,
    layout: Optional[List[Dict[str, Any]]] = None,
    first_submit: Optional[float] = None,
) -> Result:
    """The summary of a finished replay. ``busy_area``: memory-slice-seconds held within the window;
    ``span``: (window start, last event, window end) in seconds; ``first_submit``: the first submission
    (default: the window start)."""
    w0, last_t, w1 = span
    first_t = w0 if first_submit is None else first_submit
    waits = [j.start + j.setup - j.submit for j in jobs if j.start is not None]
    attempts = len(waits) + misfits
    window = w1 - w0
    return Result(
        policy=policy,
        jobs=len(jobs),
        started=len(waits),
        misfits=misfits,
        misfit_rate=round(misfits / attempts, 6) if attempts else 0.0,
        utilization=round(busy_area / (total_slices * window), 6) if window > 0 else 0.0,
        mean_wait_s=round(sum(waits) / len(waits), 3) if waits else 0.0,
        p95_wait_s=round(percentile(waits, 95), 3),
        p50_wait_s=round(percentile(waits, 50), 3),
        p99_wait_s=round(percentile(waits, 99), 3),
        makespan_s=round(last_t - first_t, 3),
        drains=drains,
        rejected=rejected,
        total_slices=total_slices,
        series=series,
        waits=waits,
        rejected_reasons=dict(rejected_reasons or {}),
        layout=layout,
        last_start_s=round(max((j.start for j in jobs if j.start is not None), default=first_t) - first_t, 3),
    )
