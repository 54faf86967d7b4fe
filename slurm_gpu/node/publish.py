"""What a node tells Slurm about the MIG instances it can still host, and where the Prolog may put a
job's instances under that promise: the one replaceable piece of admission on the node side.

- ``CountPublisher`` (``admission.mode: counts``): typed count-only gres ``migp:<profile>:<n>``, a target
  layout Slurm consumes exactly within a scheduling pass (``core.target``); needs no start limit.
- ``FeaturePublisher`` (``admission.mode: features``): fit features ``mig.<profile>.<k>``, exact only with
  one start per scheduling pass.

Any object with the ``Publisher`` methods may stand in (``NodeAgent(publisher=...)``)."""

from __future__ import annotations

import contextlib
from typing import (
    TYPE_CHECKING,
    Callable,
    ContextManager,
    Dict,
    Iterator,
    List,
    NamedTuple,
    Optional,
    Protocol,
    Sequence,
    Tuple,
)

from slurm_gpu.core.errors import SlurmError, SlurmGpuError
from slurm_gpu.core.features import active_features, all_features, is_fit_feature
from slurm_gpu.core.planner import capacity, plan
from slurm_gpu.core.target import (
    GRES_NAME,
    PAD_TYPE,
    by_profile,
    choose_typed_target,
    gres_type,
    held,
    lowered,
    node_types,
    place,
    profile_of_type,
    total_slots,
)
from slurm_gpu.core.vocab import Admission
from slurm_gpu.slurm.parse import (
    AWAIT_MARK,
    BAD_CONSTRAINTS,
    GresCount,
    NodeGres,
    PendingJob,
    parse_admin_comment,
    parse_gres_counts,
)

if TYPE_CHECKING:
    from slurm_gpu.core.geometry import NodeState
    from slurm_gpu.core.planner import PlannedInstance
    from slurm_gpu.slurm.api import GresAdapter, SlurmAdapter

__all__ = ["Publisher", "FeaturePublisher", "CountPublisher", "publisher_for", "demand_of"]

# Re-plans after a race (an allocation landed while a count was lowered) before giving up for this call.
_REPLANS = 3


class Publisher(Protocol):
    updates: int  # times this object changed what Slurm has (the hooks log it, the exporter counts)
    wait_for_release_s: float  # how long a Prolog with no room waits for other jobs' Epilogs

    def prefetch(self) -> None:
        """Read from Slurm, *before* the node lock is taken, what the next ``publish`` needs and exactness
        does not rest on (the pending queue), so that no hook waits on the lock behind a slow read. Never
        raises: after a failed read the publish reads again itself (and reports what fails)."""
        ...

    def reading(self, node: str) -> ContextManager[None]:
        """Under the node lock, around the read of its GPUs: asks Slurm at entry for what the first
        ``place`` or ``publish`` of ``node`` within reads, so that Slurm answers while the GPUs are read;
        a read nothing used is waited for at exit, never left behind."""
        ...

    def plan_ahead(self, node: str, state: NodeState) -> None:
        """Work out, *outside* the node lock, from ``state`` and Slurm as they are now, what the next
        ``publish`` would decide, so that the publish under the lock only confirms it when its own reads
        come out the same (and decides anew when they do not): other hooks of the node do not wait on the
        lock behind the search. Never raises."""
        ...

    def publish(self, node: str, state: NodeState) -> Tuple[str, ...]:
        """Tell Slurm what ``state`` can still host (under the node lock); returns what was published."""
        ...

    def after_claim(self, node: str, state: NodeState) -> None:
        """A Prolog claimed placements (``state`` includes them), under the node lock."""
        ...

    def place(self, node: str, state: NodeState, profile: str, count: int) -> Tuple[PlannedInstance, ...]:
        """Where ``count`` instances of ``profile`` go now (``NoFitError`` if the promise has no room)."""
        ...


class FeaturePublisher:
    """Sets the node's fit features in Slurm, keeping the admin's other features."""

    def __init__(self, slurm: SlurmAdapter, max_count_per_node: int, enabled: bool = True):
        self.slurm = slurm
        self.max_count = max_count_per_node
        self.enabled = enabled
        self.wait_for_release_s = 0.0  # a stale feature is a race: requeue at once
        self.updates = 0  # times this object changed Slurm's features (the hooks log it, the exporter counts)

    def fit_features(self, state: NodeState) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
        """(every fit feature of the node's models, the ones true now)."""
        models = [g.model for g in state.gpus]  # one per GPU: counts add up over the node
        return all_features(models, self.max_count), active_features(capacity(state), self.max_count)

    def prefetch(self) -> None:
        return None  # fit features depend on the node alone

    def reading(self, node: str) -> ContextManager[None]:
        return contextlib.nullcontext()  # placement reads the GPUs alone

    def plan_ahead(self, node: str, state: NodeState) -> None:
        return None  # fit features are a cheap function of the node

    def publish(self, node: str, state: NodeState) -> Tuple[str, ...]:
        fit_all, fit_active = self.fit_features(state)
        if not self.enabled:
            return fit_active
        avail, active = self.slurm.node_features(node)
        new_avail = _merged(avail, fit_all)
        new_active = _merged(active, fit_active)
        if new_avail != sorted(set(avail)) or new_active != sorted(set(active)):
            self.slurm.set_features(node, new_avail, new_active)
            self.updates += 1
        return fit_active

    def after_claim(self, node: str, state: NodeState) -> None:
        self.publish(node, state)  # the claimed slices are gone from every fit feature now

    def place(self, node: str, state: NodeState, profile: str, count: int) -> Tuple[PlannedInstance, ...]:
        return plan(state, profile, count)


class CountPublisher:
    """Publishes the node's target layout as ``migp`` counts (``core.target``), following the demand of
    the pending queue; keeps every other gres of the node as it is."""

    def __init__(self, slurm: GresAdapter, follow_queue: bool = True):
        self.slurm = slurm
        self.follow_queue = follow_queue
        self.wait_for_release_s = 30.0  # Slurm counts a slot free once the job ends, before its Epilog
        self.updates = 0
        self.replans = 0  # races seen: an allocation landed while a count was lowered
        self.released = 0  # held jobs naming this node released (_release_waiting)
        self._last: Optional[Tuple[object, Dict[str, int]]] = None
        self._queue: Optional[Tuple[PendingJob, ...]] = None  # prefetched for the next publish only
        self._started: Optional[Tuple[str, Callable[[], NodeGres]]] = None

    @contextlib.contextmanager
    def reading(self, node: str) -> Iterator[None]:
        try:
            self._started = (node, self.slurm.node_gres_started(node))
        except SlurmError:
            self._started = None  # could not even start: the read itself says what is wrong
        try:
            yield
        finally:
            self._drop_read()

    def _drop_read(self) -> None:
        started, self._started = self._started, None
        if started is not None:
            _settle(started[1])

    def _read(self, node: str, state: NodeState) -> _View:
        # The first read within ``reading`` is the one it began (asked under this lock, before the GPUs
        # were read: Slurm's counts move only by this node's publishes, which take the lock); later reads
        # ask anew.
        started, self._started = self._started, None
        if started is not None and started[0] != node:
            _settle(started[1])
            started = None
        configured, used = started[1]() if started is not None else self.slurm.node_gres(node)
        alloc = _typed(used)
        promised = _typed(configured)
        # The node's types: its profiles and the aliases Slurm knows for it (slurm.conf lists them: a
        # mixed-model cluster's memory sizes and whole GPUs, core.aliases), each meaning one profile here.
        types = node_types(state, [*promised, *alloc])
        # After `scontrol reconfigure` or a slurmctld restart, Slurm 22.05 was seen counting fewer migp
        # allocated than the running jobs hold (2 jobs, GresUsed 1): it is published that much lower, so
        # that what Slurm sees free stays exactly the promise. Instances count per profile, whatever type
        # their jobs asked for; the difference stays with the profile's own type.
        allocated = by_profile(alloc, types)
        under = {p: n - allocated.get(p, 0) for p, n in held(state).items() if n > allocated.get(p, 0)}
        for p, n in under.items():
            promised[p] = promised.get(p, 0) + n
        return _View([g for g in configured if g.name != GRES_NAME], promised, alloc, under, types)

    def prefetch(self) -> None:
        # The queue only steers which free slots are promised: a read a moment old costs no exactness
        # (that rests on the node's counts read under the lock), while a squeue of thousands of jobs on a
        # busy controller takes seconds that every Prolog of the node would wait.
        try:
            self._queue = self.slurm.pending_jobs() if self.follow_queue else ()
        except SlurmError:
            self._queue = None

    def plan_ahead(self, node: str, state: NodeState) -> None:
        if self._queue is None:
            return  # no queue read: the publish reads it under the lock, a guess here would not match
        try:
            view = self._read(node, state)
            self._target(state, view.alloc, demand_of(self._queue), view.types)  # kept in _last
        except SlurmGpuError:
            pass  # Slurm unreadable, or its allocations no longer fit: the publish finds and says so

    def publish(self, node: str, state: NodeState) -> Tuple[str, ...]:
        view = self._read(node, state)
        queue, self._queue = self._queue, None
        if queue is None:
            queue = self.slurm.pending_jobs() if self.follow_queue else ()
        counts = self._publish(node, state, view, demand_of(queue))
        self._release_waiting(node, queue, counts, view.alloc)
        return _terms(counts)

    def _publish(self, node: str, state: NodeState, view: _View,
                 demand: List[Tuple[str, int]]) -> Dict[str, int]:
        current = view.promised
        for _ in range(_REPLANS):
            target = self._target(state, view.alloc, demand, view.types)
            if _same(current, target):
                return current
            low = lowered(current, target)
            if not _same(low, current):
                self._set(node, state, view, low)
                current = low
                view = self._read(node, state)
                if any(n > low.get(p, 0) - view.under.get(p, 0) for p, n in view.alloc.items()):
                    self.replans += 1  # Slurm allocated on a count we were giving up: plan again
                    continue
            self._set(node, state, view, target)
            return target
        return current

    def _release_waiting(self, node: str, queue: Sequence[PendingJob], counts: Dict[str, int],
                         alloc: Dict[str, int]) -> None:
        """Release the held MIG jobs that name this node (``--nodelist``) once it publishes their slots.

        slurmctld refuses such a job at submit while none of its nodes publishes the profile, so
        job_submit.lua holds it (``AWAIT_MARK``), and holds an admitted one (``BadConstraints``, priority 0)
        when its nodes stop publishing it; held, it is in the queue every node plans for. A release never
        weakens exactness (Slurm still allocates within the counts), so a job released a moment early just
        waits again. Decided on Slurm's fields and our admin-comment record only."""
        free = {p: n - alloc.get(p, 0) for p, n in counts.items()}
        for job in queue:
            waiting = AWAIT_MARK in job.admin_comment.split() or job.reason == BAD_CONSTRAINTS
            if not (job.held and waiting and parse_admin_comment(job.admin_comment)
                    and node in job.req_nodes):
                continue
            # What Slurm will allocate: the type job_submit.lua set (a profile's, or an alias of one).
            asked = _profile_counts(parse_gres_counts(job.tres_per_node))
            if len(asked) == 1 and free.get(asked[0][0], 0) >= asked[0][1]:
                free[asked[0][0]] -= asked[0][1]
                try:
                    self.slurm.release(job.job_id, job.admin_comment)
                except SlurmError:
                    continue  # released meanwhile (another of its nodes), or gone: the next publish sees
                self.released += 1

    def _target(self, state: NodeState, alloc: Dict[str, int], demand: List[Tuple[str, int]],
                types: Dict[str, str]) -> Dict[str, int]:
        # The watch loop asks every few seconds with, mostly, the same node and queue: the last answer
        # is kept (the node state is a frozen value, compared whole).
        key = (state, tuple(sorted(alloc.items())), tuple(demand), tuple(sorted(types.items())))
        if self._last is None or self._last[0] != key:
            self._last = (key, choose_typed_target(state, alloc, demand, types))
        return dict(self._last[1])

    def _set(self, node: str, state: NodeState, view: _View, counts: Dict[str, int]) -> None:
        # Every type of the node (its profiles, the aliases slurm.conf gives it) stays listed, 0 when none is
        # promised: the type list never changes; the padding keeps the total what slurmd reports.
        typed = [GresCount(GRES_NAME, gres_type(p), max(counts.get(p, 0) - view.under.get(p, 0), 0))
                 for p in sorted(view.types)]
        pad = total_slots(state) - sum(g.count for g in typed)
        self.slurm.set_gres(node, list(view.others) + typed + [GresCount(GRES_NAME, PAD_TYPE, max(pad, 0))])
        self.updates += 1

    def after_claim(self, node: str, state: NodeState) -> None:
        return None  # a claim fills a promised slot: the counts stay what they are

    def place(self, node: str, state: NodeState, profile: str, count: int) -> Tuple[PlannedInstance, ...]:
        view = self._read(node, state)
        return place(state, by_profile(view.promised, view.types), profile, count)


def _settle(read: Callable[[], NodeGres]) -> None:
    """Wait for a started read nothing will use: never left behind, its failure no one's concern."""
    try:
        read()
    except SlurmError:
        pass


class _View(NamedTuple):
    """One read of the node's gres: the other gres names, per type the counts as promised (published plus
    what Slurm undercounts) and Slurm's allocations, the undercount per profile, and the node's types
    (type -> the profile it means here)."""

    others: List[GresCount]
    promised: Dict[str, int]
    alloc: Dict[str, int]
    under: Dict[str, int]
    types: Dict[str, str]


def publisher_for(slurm: SlurmAdapter, admission: str, max_count_per_node: int,
                  enabled: bool = True) -> Publisher:
    """The publisher of an ``admission.mode``."""
    if admission == Admission.COUNTS:
        return CountPublisher(slurm)  # type: ignore[arg-type]  # SlurmCli is both adapters
    return FeaturePublisher(slurm, max_count_per_node, enabled)


def demand_of(queue: Sequence[PendingJob]) -> List[Tuple[str, int]]:
    """``(profile, count)`` per pending request naming ``migp`` types, in the queue's order."""
    return [pc for job in queue for pc in _profile_counts(parse_gres_counts(job.tres_per_node))]


def _profile_counts(terms: Sequence[GresCount]) -> List[Tuple[str, int]]:
    """``(profile, count)`` of every ``migp`` term of a profile (the padding type is none)."""
    return [(profile_of_type(g.type), g.count) for g in terms
            if g.name == GRES_NAME and g.type and g.type != PAD_TYPE]


def _typed(terms: Sequence[GresCount]) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for name, count in _profile_counts(terms):
        out[name] = out.get(name, 0) + count
    return out


def _same(a: Dict[str, int], b: Dict[str, int]) -> bool:
    return {k: v for k, v in a.items() if v} == {k: v for k, v in b.items() if v}


def _terms(counts: Dict[str, int]) -> Tuple[str, ...]:
    return tuple(f"{GRES_NAME}:{gres_type(p)}:{n}" for p, n in sorted(counts.items()) if n)


def _merged(current: Sequence[str], fit: Sequence[str]) -> List[str]:
    return sorted({f for f in current if not is_fit_feature(f)} | set(fit))
