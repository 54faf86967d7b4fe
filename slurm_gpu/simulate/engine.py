"""Discrete-event replay with a Slurm-like queue: priority order (submit order unless ``SimConfig.priority``
says otherwise) plus EASY backfill.

Like slurmctld, two kinds of scheduling pass run over the same policy:
- the main scheduler, after every batch of events at one instant (job ends, submissions, requeues): jobs
  in priority order until the first that cannot start (it then blocks the rest of the partition);
- the backfill scheduler, at most every ``bf_interval`` seconds: the top blocked job gets a reservation
  (the earliest time and nodes where it fits once running jobs end at their time limits); any later job
  may start now if it avoids the reserved nodes or ends (by its limit) before the reservation starts.
  ``bf_max_job_test`` jobs are looked at per pass, as in slurm.conf.
A pass is evaluated against one view of the cluster (the policy's); prologs then run in allocation order
on the real GPU state. A misfit is requeued, eligible again after ``requeue_delay`` seconds.
"""

from __future__ import annotations

import heapq
import math
import operator
import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

from slurm_gpu.core.catalog import Catalog, load_catalog
from slurm_gpu.core.errors import BadInputError, SlurmGpuError
from slurm_gpu.core.geometry import GpuState
from slurm_gpu.simulate.accounting import canonical_keys, reason_counts
from slurm_gpu.simulate.base import (
    SHIPPED_BF_INTERVAL,
    SHIPPED_MAX_STARTS,
    SLURM_BF_INTERVAL,
    SLURM_MAX_STARTS,
    Policy,
)
from slurm_gpu.simulate.cluster import ClusterSpec
from slurm_gpu.simulate.measure import Meter, View
from slurm_gpu.simulate.metrics import Result, Series, summarise
from slurm_gpu.simulate.overhead import InstanceTimes
from slurm_gpu.simulate.slots import ModelTable
from slurm_gpu.simulate.state import SimJob, SimNode
from slurm_gpu.simulate.traces import TraceJob, parse_job_gres

__all__ = [
    "SimConfig",
    "Simulation",
    "PRIORITIES",
    "simulate",
    "SHIPPED_MAX_STARTS",
    "SHIPPED_BF_INTERVAL",
    "SLURM_MAX_STARTS",
    "SLURM_BF_INTERVAL",
]

# SimConfig.priority: each order's sign on a job's compute slices (0: submit order alone)
PRIORITIES = {"submit": 0, "small-first": 1, "large-first": -1}
_END, _SUBMIT, _WAKE = 0, 1, 2  # at one instant: ends free room before submissions are looked at
_BY_LIMIT = operator.attrgetter("limit_end", "index")  # backfill's end of a running job; ties by priority


@dataclass
class SimConfig:
    # slurm.conf SchedulerParameters; None: what ships for the policy's admission (``Policy.max_starts``,
    # ``Policy.bf_interval``): Slurm's defaults (0 and 30) for count admission (``default``) and the
    # baselines, sched_max_job_start=1,bf_max_job_start=1,bf_interval=5 for ``features``
    bf_interval: Optional[float] = None
    bf_max_job_test: int = 500  # bf_max_job_test (default 500)
    # seconds before a requeued job is eligible again; None: the policy's (0 for our prolog's requeue,
    # 120 for a failed prolog, which Slurm requeues held)
    requeue_delay: Optional[float] = None
    # sched_max_job_start / bf_max_job_start (0: no limit), and how soon a pass that hit it runs again:
    # slurmctld does not re-run a limited pass by itself; the node agent's feature update queues one, which
    # its background thread runs at most every batch_sched_delay (3 s; measured 1-3.5 s between starts)
    max_starts: Optional[int] = None
    pass_interval: float = 3.0
    record_series: bool = False
    # the pending queue's priority order: "submit" (FIFO: Slurm's order without priority factors), or
    # "small-first" / "large-first" (fewer / more compute slices per job first, then submit order: what a
    # site's job-size priority, or a job_submit.lua nice by profile, gives)
    priority: str = "submit"
    check_invariants: bool = False  # verify the whole cluster after every instant (tests; slow)
    progress: Optional[Callable[[int, int], None]] = None
    # the measurement window, seconds after the first submission (None: first to last submission)
    window: Optional[Tuple[float, float]] = None
    samples: int = 500  # evenly spaced instants of the window for stranded capacity and fragmentation
    # seconds to create / destroy each instance (dynamic policies); None: instances take no time
    instance_times: Optional[InstanceTimes] = None


@dataclass
class _Pass:
    misfits: int = 0
    started: List[SimJob] = field(default_factory=list)
    limited: bool = False  # stopped at max_starts: Slurm runs again after pass_interval


class Simulation:
    def __init__(
        self,
        trace: Sequence[TraceJob],
        cluster: ClusterSpec,
        policy: Policy,
        config: Optional[SimConfig] = None,
        catalog: Optional[Catalog] = None,
    ):
        if not trace:
            raise BadInputError("the trace has no jobs", part="trace")
        self.config = cfg = config or SimConfig()
        self.policy = policy
        cat = catalog or load_catalog()
        parsed = [parse_job_gres(j.gres) for j in trace]
        self.keys: List[str] = list(dict.fromkeys(k for k, _ in parsed))
        key_index = {k: i for i, k in enumerate(self.keys)}
        tables: Dict[str, ModelTable] = {}
        for spec in cluster.nodes:
            if spec.model not in tables:
                tables[spec.model] = ModelTable(cat.model(spec.model), self.keys)
        self.nodes = [SimNode(i, s.name, tables[s.model], s.gpus) for i, s in enumerate(cluster.nodes)]
        self.total_slices = sum(n.total for n in self.nodes)
        self.total_compute = sum(n.table.model.compute_slices_total * len(n.gpus) for n in self.nodes)
        # equivalent spellings (gpu:1 and gpu:7g.80gb:1 on H100s) are one request for every policy
        canon = canonical_keys(list(tables.values()))
        # Slurm's `mig` gres count per instance: the largest over the cluster's models (job_submit.lua)
        slices_of = []
        self._compute_of: List[int] = []  # compute slices per instance, the same way (request fragmentation)
        for k in range(len(self.keys)):
            sizes = [p.memory_slices for t in tables.values() for p in (t.profiles[k],) if p is not None]
            slices_of.append(max(sizes) if sizes else 0)
            gpcs = [p.compute_slices for t in tables.values() for p in (t.profiles[k],) if p is not None]
            self._compute_of.append(max(gpcs) if gpcs else 0)
        self._slices_of = slices_of
        self.jobs = [
            SimJob(i, j.id, j.submit, j.duration, j.limit, canon[key_index[k]], c, j.nodes)
            for i, (j, (k, c)) in enumerate(zip(trace, parsed))
        ]
        self._rank = self._priority_ranks(self.config.priority)
        policy.setup(self.nodes, self.keys, slices_of)
        policy.prepare(self.nodes, self.jobs)  # e.g. static: pick the layout for this trace's mix
        # the answer depends on the request only, and a trace repeats few requests
        why: Dict[Tuple[int, int, int], Optional[str]] = {}
        for j in self.jobs:
            sig = (j.key, j.count, j.nodes)
            if sig not in why:
                why[sig] = policy.why_never(j)
        self.rejected = [j for j in self.jobs if why[(j.key, j.count, j.nodes)] is not None]
        self.rejected_reasons = reason_counts([why[(j.key, j.count, j.nodes)] or "" for j in self.rejected])
        self._rejected_ids = {j.index for j in self.rejected}
        self.series = Series() if self.config.record_series else None
        self.bf_interval = policy.bf_interval if cfg.bf_interval is None else cfg.bf_interval
        self.max_starts = policy.max_starts if cfg.max_starts is None else cfg.max_starts
        delay = self.config.requeue_delay
        self.requeue_delay = policy.requeue_delay if delay is None else delay
        self.misfits = 0
        self.version = 0  # bumps on every change the schedulers could notice
        self._node_views: Dict[int, Tuple[int, View]] = {}
        self.result: Optional[Result] = None  # set by run()

    # -- the queue -------------------------------------------------------------------------------------
    def run(self) -> Result:
        cfg = self.config
        events: List[Tuple[float, int, int, int]] = []
        seq = 0
        for job in self.jobs:
            if job.index not in self._rejected_ids:
                events.append((job.submit, _SUBMIT, seq, job.index))
                seq += 1
        heapq.heapify(events)
        pending: List[SimJob] = []  # priority order (``_rank``: submit order unless configured)
        self.pending = pending
        self.policy.follow(pending)
        last_t = events[0][0] if events else 0.0
        first_t = last_t
        # utilization is measured while jobs arrive (the offered-load window), not in the drain-out tail
        window_end = max((e[0] for e in events), default=first_t)
        w0, w1 = (first_t, window_end) if cfg.window is None else (first_t + cfg.window[0],
                                                                    first_t + cfg.window[1])
        meter = Meter((w0, w1), cfg.samples, self.total_slices, self.total_compute)
        self._wake_at: Set[float] = set()
        self._seq = seq
        self._used = self._used_c = self._done = self._arrived = 0
        self._next_bf = -math.inf
        self._bf_stamp: Optional[Tuple[int, int]] = None
        total = len(events)
        step, reported = max(1, min(1000, total // 50)), 0
        while events:
            t = events[0][0]
            meter.advance(last_t, t, self._used, self._used_c, len(pending), self._view)
            last_t = t
            self._take_events(t, events)
            changed, due = self.policy.publish_at(t)
            if changed:
                self.version += 1
            if due is not None:
                self._wake(events, due)
            self._main_passes(t, events)
            if pending:
                self._backfill(t, events)
            if self.series is not None:
                self.series.add(t, self._used, len(pending), self.misfits)
            if cfg.check_invariants:
                self.check()
            if cfg.progress is not None and self._done >= reported + step:
                reported = self._done
                cfg.progress(self._done, total)
        if cfg.progress is not None:
            cfg.progress(total, total)  # the bar ends full, whatever the step
        self.result = summarise(
            self.policy.name,
            self.jobs,
            misfits=self.misfits,
            drains=self.policy.drains,
            rejected=len(self.rejected),
            rejected_reasons=self.rejected_reasons,
            layout=self.policy.describe(),
            total_slices=self.total_slices,
            series=self.series,
            busy_area=meter.busy_m,
            span=(w0, last_t, w1),
            first_submit=first_t,
        )
        self.result.measures = meter.summary(final=self._view() if w1 > last_t else None)
        self.result.measures["request_fragmented"] = sum(1 for j in self.jobs if j.fragmented)
        self.result.samples = meter.samples()
        times = cfg.instance_times
        if times is not None and self.policy.creates_instances:
            self.result.measures["instance_times"] = times.to_dict(self.nodes[0].table.model)
        return self.result

    def _view(self) -> View:
        """Free, stranded compute, free and lost memory slices of the whole cluster now; a node's sums
        are kept until its ``version`` changes (every change of its GPUs bumps it)."""
        fc = sc = fm = lm = 0
        free_view = self.policy.free_view
        cache = self._node_views
        for node in self.nodes:
            kept = cache.get(node.index)
            if kept is None or kept[0] != node.version:
                sums = [0, 0, 0, 0]
                for view in free_view(node):
                    for i in range(4):
                        sums[i] += view[i]
                kept = cache[node.index] = (node.version, (sums[0], sums[1], sums[2], sums[3]))
            a, b, c, d = kept[1]
            fc += a
            sc += b
            fm += c
            lm += d
        return fc, sc, fm, lm

    def _take_events(self, t: float, events: List[Tuple[float, int, int, int]]) -> None:
        """Every event at time ``t``: jobs ending, jobs arriving, wake-ups."""
        while events and events[0][0] == t:
            _, kind, _, idx = heapq.heappop(events)
            if kind == _END:
                job = self.jobs[idx]
                self._used -= job.slices
                self._used_c -= job.compute
                self.policy.release(job)
                for n in job.alloc_nodes:
                    self.nodes[n].jobs.discard(idx)
                self._done += 1
                self.version += 1
            elif kind == _SUBMIT:
                self._enqueue(self.jobs[idx])
                self._arrived += 1
            else:
                self._wake_at.discard(t)

    def _main_passes(self, t: float, events: List[Tuple[float, int, int, int]]) -> None:
        """The main scheduler; a pass with misfits changes features, so Slurm runs again at once."""
        while True:
            p = self._main_pass(t)
            self._used += self._account(p, t, events)
            if p.limited:
                self._wake(events, t + self.config.pass_interval)
            if not p.misfits or p.limited:
                return
            if self.requeue_delay > 0 or not p.started:
                self._wake(events, t + max(self.requeue_delay, 1.0))
                return

    def _backfill(self, t: float, events: List[Tuple[float, int, int, int]]) -> None:
        """A backfill pass when one is due and anything changed since the last one that started nothing."""
        stamp = (self.version, self._arrived)
        if t >= self._next_bf and stamp != self._bf_stamp:
            p = self._backfill_pass(t)
            self._used += self._account(p, t, events)
            self._next_bf = t + self.bf_interval
            self._bf_stamp = None if p.started or p.misfits else (self.version, self._arrived)
        if (self.version, self._arrived) != self._bf_stamp and self._next_bf > t:
            self._wake(events, self._next_bf)

    def _priority_ranks(self, priority: str) -> List[Tuple[int, int]]:
        """Each job's place in the queue, by index: (size rank, index)."""
        if priority not in PRIORITIES:
            raise BadInputError(f"priority {priority!r} is not one of {', '.join(PRIORITIES)}", part=priority)
        sign = PRIORITIES[priority]
        return [(sign * self._compute_of[j.key] * j.count * j.nodes, j.index) for j in self.jobs]

    def _enqueue(self, job: SimJob) -> None:
        pending, rank = self.pending, self._rank
        if not pending or rank[pending[-1].index] < rank[job.index]:
            pending.append(job)
        else:
            import bisect

            keys = [rank[j.index] for j in pending]
            pending.insert(bisect.bisect(keys, rank[job.index]), job)

    def _wake(self, events: list, at: float) -> None:
        if at not in self._wake_at:
            self._wake_at.add(at)
            heapq.heappush(events, (at, _WAKE, self._next_seq(), -1))

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _account(self, p: _Pass, t: float, events: list) -> int:
        """Started jobs run to their end; returns the memory slices they took. With instance times, a
        job runs once its instances are made (one after the other on a node) and holds them until they
        are destroyed."""
        added = 0
        times = self.config.instance_times if self.policy.creates_instances else None
        for job in p.started:
            profiles = [(self.nodes[n].table, self.nodes[n].table.profiles[job.key]) for n, _ in job.alloc]
            setup = teardown = 0.0
            if times is not None:
                setup = max(times.create_s(tb.model, pr) for tb, pr in profiles if pr) * job.count
                teardown = max(times.destroy_s(tb.model, pr) for tb, pr in profiles if pr) * job.count
            job.start = t
            job.setup = setup
            job.end = t + setup + job.duration + teardown
            job.limit_end = t + setup + job.limit + teardown
            job.slices = sum(pr.memory_slices for _, pr in profiles if pr) * job.count
            job.compute = sum(pr.compute_slices for _, pr in profiles if pr) * job.count
            self._used_c += job.compute
            job.alloc_nodes = tuple(n for n, _ in job.alloc)
            for n in job.alloc_nodes:
                self.nodes[n].jobs.add(job.index)
            added += job.slices
            heapq.heappush(events, (job.end, _END, self._next_seq(), job.index))
        if p.started or p.misfits:
            self.version += 1
            for job in p.started:  # few per pass, the queue can be long: remove() scans in C
                self.pending.remove(job)
        return added

    def _try(self, job: SimJob, exclude: Set[int], p: _Pass, t: float) -> Optional[bool]:
        """Allocate then run the prologs; None when the scheduler found no room (or may start no more)."""
        limit = self.max_starts
        if limit and len(p.started) + p.misfits >= limit:
            p.limited = True
            return None
        nodes = self.policy.allocate(job, exclude)
        if nodes is None:
            if not exclude and not job.fragmented:
                # refused (no reservation in play) while the cluster's free slices would hold it
                n = job.count * job.nodes
                job.fragmented = (self._slices_of[job.key] * n <= self.total_slices - self._used
                                  and self._compute_of[job.key] * n <= self.total_compute - self._used_c)
            return None
        job.attempts += 1
        if self.policy.prolog(job, nodes):
            p.started.append(job)
            return True
        p.misfits += 1
        self.misfits += 1
        job.eligible = t + self.requeue_delay
        return False

    def _main_pass(self, t: float) -> _Pass:
        p = _Pass()
        policy = self.policy
        policy.begin_pass()
        for job in self.pending:
            if job.eligible > t:
                continue
            if job.blocked_at == self.version:
                break  # nothing changed since it was refused
            outcome = self._try(job, set(), p, t)
            if outcome is None:
                if not p.limited:
                    job.blocked_at = self.version if not p.started and not p.misfits else -1
                break
        policy.end_pass()
        return p

    def _backfill_pass(self, t: float) -> _Pass:
        p = _Pass()
        policy = self.policy
        policy.begin_pass()
        shadow: float = math.inf
        reserved: Set[int] = set()
        head = None
        refused: Set[Tuple[int, int, int, bool]] = set()
        for tested, job in enumerate(self.pending):
            if tested >= self.config.bf_max_job_test:
                break
            if job.eligible > t:
                continue
            if p.limited:
                break
            if head is None:
                outcome = self._try(job, set(), p, t)
                if outcome is None and not p.limited:
                    head = job
                    shadow, reserved = self._reservation(job, t)
                continue
            early = t + job.limit <= shadow
            sig = (job.key, job.count, job.nodes, early)
            if sig in refused:
                continue
            outcome = self._try(job, set() if early else reserved, p, t)
            if outcome is None:
                refused.add(sig)
        policy.end_pass()
        return p

    def _reservation(self, job: SimJob, t: float) -> Tuple[float, Set[int]]:
        """Earliest time (by time limits) and nodes where ``job`` fits: Slurm's backfill reservation."""
        when: List[Tuple[float, int]] = []
        for node in self.nodes:
            running = sorted((self.jobs[i] for i in node.jobs), key=_BY_LIMIT)
            ended = self.policy.fit_after_ends(node, job, running)
            found = max(t, running[ended - 1].limit_end) if ended else math.inf
            when.append((found, node.index))
        when.sort()
        chosen = when[: job.nodes]
        if len(chosen) < job.nodes or chosen[-1][0] == math.inf:
            return math.inf, set()
        return chosen[-1][0], {n for _, n in chosen}

    # -- checks ----------------------------------------------------------------------------------------
    def check(self) -> None:
        """Raise if any GPU holds overlapping or invalid instances, or the books do not balance: every
        GPU is rebuilt instance by instance through ``slurm_gpu.core.geometry`` (the readable rules)."""
        for node in self.nodes:
            table = node.table
            for g, slots in enumerate(node.gpus):
                rebuilt = GpuState(g, table.model)
                for start, size, pid in slots:
                    try:
                        profile = table.model.profile_by_id(pid)
                        rebuilt = rebuilt.place(profile, start)
                    except SlurmGpuError as exc:  # unknown profile id, or geometry refuses it
                        raise AssertionError(f"{node.name} gpu {g}: invalid slots {slots}: {exc}") from exc
                    if size != profile.memory_slices:
                        raise AssertionError(f"{node.name} gpu {g}: slot {start} has the wrong size")
            if node.free != node.total - sum(table.used_slices(s) for s in node.gpus):
                raise AssertionError(f"{node.name}: free slice count drifted")


def simulate(
    trace: Sequence[TraceJob], cluster: ClusterSpec, policy: Policy, config: Optional[SimConfig] = None
) -> Result:
    if not trace:
        raise BadInputError("the trace has no jobs", part="trace")
    return Simulation(trace, cluster, policy, config).run()


def stderr_progress(label: str = "", width: int = 40) -> Optional[Callable[[int, int], None]]:
    """A one-line progress bar on stderr (after ``label``, right-aligned to 8), only on a terminal."""
    if not sys.stderr.isatty():
        return None
    head = f"{label:>8} " if label else ""

    def show(done: int, total: int) -> None:
        filled = width * done // max(total, 1)
        sys.stderr.write(f"\r{head}[{'#' * filled}{'.' * (width - filled)}] {done}/{total} jobs")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show
