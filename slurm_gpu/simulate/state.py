"""Mutable per-node GPU state of a replay, with capacity kept incrementally."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from slurm_gpu.simulate.slots import GpuSlots, ModelTable

__all__ = ["SimNode", "SimJob", "plan_on_node"]


class SimNode:
    """One node: per-GPU slot tuples, per-GPU capacity vectors and their sum (``cap``, per request key)."""

    __slots__ = ("index", "name", "table", "gpus", "caps", "cap", "free", "total", "version", "jobs")

    def __init__(self, index: int, name: str, table: ModelTable, n_gpus: int):
        self.index = index
        self.name = name
        self.table = table
        self.gpus: List[GpuSlots] = [()] * n_gpus
        empty = table.capacity(())
        self.caps: List[Tuple[int, ...]] = [empty] * n_gpus
        self.cap: List[int] = [c * n_gpus for c in empty]
        self.total = table.total_slices * n_gpus
        self.free = self.total  # memory slices not occupied by instances
        self.version = 0
        self.jobs: set = set()  # indexes of running jobs

    def set_gpu(self, g: int, slots: GpuSlots) -> None:
        table = self.table
        self.free += table.used_slices(self.gpus[g]) - table.used_slices(slots)
        self.gpus[g] = slots
        self.caps[g] = table.capacity(slots)
        self.cap = [sum(c) for c in zip(*self.caps)]
        self.version += 1


class SimJob:
    """A job of the replay (trace fields plus what happened to it)."""

    __slots__ = (
        "index",
        "id",
        "submit",
        "duration",
        "limit",
        "key",
        "count",
        "nodes",
        "eligible",
        "start",
        "end",
        "alloc",
        "alloc_nodes",
        "slices",
        "attempts",
        "blocked_at",
        "shard_gpu",
    )

    def __init__(
        self,
        index: int,
        id: str,
        submit: float,
        duration: float,
        limit: float,
        key: int,
        count: int,
        nodes: int,
    ):
        self.index = index
        self.id = id
        self.submit = submit
        self.duration = duration
        self.limit = limit
        self.key = key  # request key index
        self.count = count  # instances per node
        self.nodes = nodes
        self.eligible = submit
        self.start: Optional[float] = None
        self.end: Optional[float] = None
        self.alloc: list = []  # [(node index, [(gpu, start), ...]), ...]
        self.alloc_nodes: Tuple[int, ...] = ()
        self.slices = 0  # memory slices held while running (for utilization)
        self.attempts = 0
        self.blocked_at = -1  # cluster version at which the main scheduler last found no room
        self.shard_gpu: dict = {}


def plan_on_node(
    node: SimNode, key: int, count: int, gpus: Optional[Sequence[int]] = None
) -> Optional[List[Tuple[int, int, GpuSlots]]]:
    """Where the node agent puts ``count`` instances: ``[(gpu, start, new_slots), ...]`` or None (no fit).

    Fragmentation-aware like the planner: each instance goes where the least future capacity is lost,
    ties to the fuller GPU (packing) and then the lower index. ``gpus`` restricts the choice (shards).
    """
    table = node.table
    slots = list(node.gpus)
    out = []
    candidates = range(len(slots)) if gpus is None else gpus
    for _ in range(count):
        best = None
        best_rank = None
        for g in candidates:
            found = table.best_start(slots[g], key)
            if found is None:
                continue
            start, after, value = found
            rank = (value - table.value(slots[g]), table.used_slices(slots[g]), -g)
            if best_rank is None or rank > best_rank:
                best, best_rank = (g, start, after), rank
        if best is None:
            return None
        out.append(best)
        slots[best[0]] = best[2]
    return out


_PLANNER_CACHE: dict = {}


def plan_with_planner(
    node: SimNode, key: int, count: int, gpus: Optional[Sequence[int]] = None
) -> Optional[List[Tuple[int, int, GpuSlots]]]:
    """Same answer shape as :func:`plan_on_node`, decided by ``slurm_gpu.core.planner.plan`` (what the node
    agent runs). Slower; memoised on the per-GPU slot tuples."""
    from slurm_gpu.core.errors import NoFitError
    from slurm_gpu.core.geometry import GpuState, NodeState, Slot
    from slurm_gpu.core.planner import plan

    table = node.table
    profile = table.profiles[key]
    if profile is None:
        return None
    indexes = tuple(range(len(node.gpus))) if gpus is None else tuple(gpus)
    cache_key = (table.model.key, tuple(node.gpus[g] for g in indexes), indexes, profile.name, count)
    if cache_key in _PLANNER_CACHE:
        return _PLANNER_CACHE[cache_key]
    state = NodeState(tuple(GpuState(g, table.model, tuple(Slot(*s) for s in node.gpus[g])) for g in indexes))
    try:
        planned = plan(state, profile.name, count)
    except NoFitError:
        out = None
    else:
        slots = {g: node.gpus[g] for g in indexes}
        out = []
        for inst in planned:
            slots[inst.gpu_index] = table.add(slots[inst.gpu_index], inst.start, profile)
            out.append((inst.gpu_index, inst.start, slots[inst.gpu_index]))
    if len(_PLANNER_CACHE) > 200_000:
        _PLANNER_CACHE.clear()
    _PLANNER_CACHE[cache_key] = out
    return out
