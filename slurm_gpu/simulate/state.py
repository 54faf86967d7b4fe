"""Mutable per-node GPU state of a replay, with capacity kept incrementally."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from slurm_gpu.simulate.slots import GpuSlots, ModelTable, Placement

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
        "limit_end",
        "alloc",
        "alloc_nodes",
        "slices",
        "attempts",
        "blocked_at",
        "shard_gpu",
        "setup",
        "compute",
        "fragmented",
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
        self.limit_end = 0.0  # start + time limit: when backfill plans the job to end at the latest
        self.alloc: list = []  # [(node index, [(gpu, start), ...]), ...]
        self.alloc_nodes: Tuple[int, ...] = ()
        self.slices = 0  # memory slices held while running (for utilization)
        self.attempts = 0
        self.blocked_at = -1  # cluster version at which the main scheduler last found no room
        self.shard_gpu: dict = {}
        self.setup = 0.0  # seconds from the allocation to the job's run: creating its instances
        self.compute = 0  # compute slices held while running (for compute utilization)
        self.fragmented = False  # refused once while the cluster's free slices would have held it


def plan_on_node(
    node: SimNode, key: int, count: int, gpus: Optional[Sequence[int]] = None
) -> Optional[Placement]:
    """Where the node agent puts ``count`` instances: ``[(gpu, start, new_slots), ...]`` or None (no fit).

    The planner decides (``ModelTable.plan``); ``gpus`` restricts it to those GPUs (shards: one GPU).
    """
    indexes = range(len(node.gpus)) if gpus is None else gpus
    return node.table.plan([(g, node.gpus[g]) for g in indexes], key, count)
