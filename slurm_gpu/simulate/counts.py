"""Count admission (``default``, what slurm-gpu ships): each node publishes a target layout as typed
count-only gres ``migp:<profile>:<n>``, Slurm consumes the counts live within a pass, the Prolog places.

The model, per node:
- a target ``T`` (counts per profile) chosen by ``core.target.choose_target_slots`` (the node agent's
  rules on the simulator's slot tuples): what the node holds, the pending queue's demand in priority
  order where it still fits, then a fill of the largest base profiles;
- ``T`` is re-planned after every job end on the node (its Epilog) and every ``publish_interval`` seconds
  (the ``slurm-gpu publish --watch`` loop, at multiples of the interval) from the queue of that instant;
  a job's start changes no count;
- Slurm may allocate ``count`` instances of ``p`` on a node while ``T[p] - allocated[p] >= count``, nodes
  in node order (select/cons_tres without weights), decremented at once (live within a pass);
- the Prolog places with ``core.target.place_slots``: slots of one packing of the whole promise. The
  invariant (the promise fits together) makes every start fit: a misfit is a broken invariant, asserted.

Instances are created at allocation (no claims in flight): the simulator's prolog runs within the pass.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Set, Tuple

from slurm_gpu.core.errors import BadInputError
from slurm_gpu.core.target import choose_target_slots, held_slots, place_slots
from slurm_gpu.simulate.base import Policy
from slurm_gpu.simulate.slots import GpuSlots
from slurm_gpu.simulate.state import SimJob, SimNode

__all__ = ["CountsPolicy", "PUBLISH_INTERVAL"]

PUBLISH_INTERVAL = 5.0  # `slurm-gpu publish --watch 5` in the shipped systemd unit

Demand = Tuple[Tuple[str, int], ...]


class CountsPolicy(Policy):
    """Typed count-only gres of a target layout that follows the queue; never misfits."""

    name = "default"

    def __init__(self, publish_interval: float = PUBLISH_INTERVAL):
        if not publish_interval > 0:
            raise BadInputError(f"publish interval {publish_interval!r} must be positive seconds",
                                part=str(publish_interval))
        self.publish_interval = float(publish_interval)

    def setup(self, nodes: List[SimNode], keys: Sequence[str], slices_of: Sequence[int]) -> None:
        super().setup(nodes, keys, slices_of)
        self.target: List[Dict[str, int]] = [{} for _ in nodes]
        self.free: List[Dict[str, int]] = [{} for _ in nodes]  # T - allocated, what Slurm sees free
        self.names: List[List[Optional[str]]] = [
            [None if p is None else p.name for p in n.table.profiles] for n in nodes]
        # A re-plan is asked for with the demand of its instant and computed when Slurm first looks at the
        # node (the node cannot change in between: a start needs the look, an end asks again).
        self.asked: List[Optional[Tuple[int, Demand]]] = [None] * len(nodes)  # (node version, demand)
        self.want: List[Optional[Demand]] = [None] * len(nodes)  # asked, not computed yet
        self.dirty: Set[int] = set()  # Epilogs not yet asked for
        self.pending: Sequence[SimJob] = ()
        self.next_tick = -math.inf
        self.replans = 0  # choose_target calls (not memo hits)
        # (table, slots, demand) -> (T, T - held): both follow from the key alone
        self._memo: Dict[Tuple[int, Tuple[GpuSlots, ...], Demand], Tuple[Dict[str, int], Dict[str, int]]] = {}
        self._queue_seen = False  # the last tick planned for a non-empty queue

    def follow(self, pending: Sequence[SimJob]) -> None:
        self.pending = pending

    # -- the node agents' side: targets --------------------------------------------------------------
    def publish_at(self, t: float) -> Tuple[bool, Optional[float]]:
        changed = False
        demands: Dict[int, Demand] = {}
        if self.next_tick == -math.inf:
            # the agents ran before the first job came: their counts are the idle fill; the watch loop's
            # ticks fall on multiples of the interval (one may be now)
            for n in range(len(self.nodes)):
                self._ask(n, ())
            self.next_tick = math.ceil(t / self.publish_interval) * self.publish_interval
            changed = True
        if t >= self.next_tick:
            # the watch loop's tick at the latest multiple of the interval: every node, from the queue now
            self.next_tick = (math.floor(t / self.publish_interval) + 1) * self.publish_interval
            for n in range(len(self.nodes)):
                changed |= self._ask(n, self._demand_of(n, demands))
            self.dirty.clear()
            self._queue_seen = bool(self.pending)
        elif self.dirty:
            for n in sorted(self.dirty):
                changed |= self._ask(n, self._demand_of(n, demands))
            self.dirty.clear()
        # while the queue (or the last plan) is non-empty the loop matters; an idle cluster sleeps
        wake = self.next_tick if self.pending or self._queue_seen else None
        return changed, wake

    def _demand_of(self, n: int, built: Dict[int, Demand]) -> Demand:
        """The queue's ``(profile, count)`` per job in priority order on node ``n``'s model (``built``:
        per model table, those of this instant)."""
        node = self.nodes[n]
        found = built.get(id(node.table))
        if found is None:
            names = self.names[n]
            found = built[id(node.table)] = tuple(
                (nm, j.count) for j in self.pending for nm in (names[j.key],) if nm is not None)
        return found

    def _ask(self, n: int, demand: Demand) -> bool:
        """A re-plan of node ``n`` from ``demand``; False when it is the one already asked for."""
        stamp = (self.nodes[n].version, demand)
        if self.asked[n] == stamp:
            return False
        self.asked[n] = stamp
        self.want[n] = demand
        return True

    def counts(self, n: int) -> Tuple[Dict[str, int], Dict[str, int]]:
        """The node's published counts ``T`` and what Slurm sees free of them (``T - allocated``)."""
        demand = self.want[n]
        if demand is not None:
            self.want[n] = None
            node = self.nodes[n]
            key = (id(node.table), tuple(node.gpus), demand)
            found = self._memo.get(key)
            if found is None:
                held = held_slots(node.table.model, node.gpus)
                if node.free == 0:
                    target = held  # a full node promises nothing more
                else:
                    self.replans += 1
                    target = choose_target_slots(node.table.model, node.gpus, {}, demand)
                if len(self._memo) >= 1 << 15:
                    self._memo.clear()
                found = self._memo[key] = (target, {p: c - held.get(p, 0) for p, c in target.items()})
            self.target[n] = found[0]
            self.free[n] = dict(found[1])  # Slurm's allocations decrement it
        return self.target[n], self.free[n]

    # -- Slurm's side --------------------------------------------------------------------------------
    def allocate(self, job: SimJob, exclude: Set[int]) -> Optional[List[int]]:
        count = job.count
        chosen: List[int] = []
        for n in range(len(self.nodes)):
            name = self.names[n][job.key]
            # a promise must fit in the free space: where the profile alone no longer fits, no count can
            # offer it (the planner's capacity, kept per node), and the target need not be computed
            if name is None or self.nodes[n].cap[job.key] < count or n in exclude:
                continue
            free = self.free[n] if self.want[n] is None else self.counts(n)[1]
            if free.get(name, 0) >= count:
                chosen.append(n)
                if len(chosen) == job.nodes:
                    break
        if len(chosen) < job.nodes:
            return None
        for n in chosen:
            name = self.names[n][job.key]
            self.free[n][name] -= count  # type: ignore[index]  # found above
        return chosen

    def prolog(self, job: SimJob, nodes: List[int]) -> bool:
        done: List[Tuple[int, List[Tuple[int, int]]]] = []
        for n in nodes:
            node = self.nodes[n]
            table = node.table
            profile = table.profiles[job.key]
            assert profile is not None  # noqa: S101 - allocate admitted it by name
            planned = place_slots(table.model, node.gpus, self.counts(n)[0], profile.name, job.count)
            # the invariant: the promise fits together, so the job's slots are always there
            assert len(planned) == job.count, "count admission admitted a job that does not fit"  # noqa: S101
            for inst in planned:
                node.set_gpu(inst.gpu_index, table.add(node.gpus[inst.gpu_index], inst.start, profile))
            done.append((n, [(inst.gpu_index, inst.start) for inst in planned]))
        job.alloc = done
        return True

    def release(self, job: SimJob) -> None:
        for n, _ in job.alloc:
            name = self.names[n][job.key]
            if name is not None and self.want[n] is None:
                self.free[n][name] = self.free[n].get(name, 0) + job.count  # Slurm frees the gres
            self.dirty.add(n)  # its Epilog re-plans the node
        super().release(job)

    def fit_after_ends(self, node: SimNode, job: SimJob, ending: Sequence[SimJob]) -> int:
        # Slurm's backfill counts the gres the running jobs give back, on today's counts
        name = self.names[node.index][job.key]
        if name is None:
            return 0
        free = self.counts(node.index)[1].get(name, 0)
        for i, other in enumerate(ending, 1):
            if self.names[node.index][other.key] == name:
                free += other.count
            if free >= job.count:
                return i
        return 0

