"""The ``ideal`` bound: the same queue with fluid slices, so a report shows what MIG geometry costs.

Each GPU is two counters, free compute slices and free memory slices. An instance of a profile fits on a
GPU wherever both counters hold the profile's slices: placement alignment (which starts a profile may
use), the order instances were made in and the holes between them are ignored. Scheduling, node choice
(node order, as Slurm and ``default`` take nodes) and the instance-time model are the same as for
``default``, so the gap between ``default`` and ``ideal`` is what the placement rules themselves cost. It
bounds what geometry allows, not what the queue does: on a given trace, queue dynamics (which job a
backfill pass starts first) can make either a little faster.
"""

from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple

from slurm_gpu.core.catalog import GpuModel, Profile
from slurm_gpu.simulate.base import Policy
from slurm_gpu.simulate.state import SimJob, SimNode

__all__ = ["IdealPolicy", "fluid_spare"]

_spare_memo: Dict[Tuple[int, int, int], Tuple[int, int]] = {}


def fluid_spare(model: GpuModel, free_c: int, free_m: int) -> Tuple[int, int]:
    """(compute slices further instances could take, memory slices of the largest one that fits) on a
    fluid GPU with ``free_c`` compute and ``free_m`` memory slices: a knapsack over the base profiles."""
    key = (id(model), free_c, free_m)
    found = _spare_memo.get(key)
    if found is None:
        base = [p for p in model.base_profiles() if p.compute_slices and p.memory_slices]
        best = [[0] * (free_m + 1) for _ in range(free_c + 1)]  # best[c][m]: most compute usable
        for c in range(free_c + 1):
            for m in range(free_m + 1):
                for p in base:
                    if p.compute_slices <= c and p.memory_slices <= m:
                        got = p.compute_slices + best[c - p.compute_slices][m - p.memory_slices]
                        if got > best[c][m]:
                            best[c][m] = got
        largest = max((p.memory_slices for p in base
                       if p.compute_slices <= free_c and p.memory_slices <= free_m), default=0)
        found = _spare_memo[key] = (best[free_c][free_m], largest)
    return found


class IdealPolicy(Policy):
    """Exact admission on fluid slices (see the module); never misfits."""

    name = "ideal"

    def setup(self, nodes: List[SimNode], keys: Sequence[str], slices_of: Sequence[int]) -> None:
        super().setup(nodes, keys, slices_of)
        # per node, per GPU: [free compute, free memory]
        self.fluid: List[List[List[int]]] = [
            [[n.table.model.compute_slices_total, n.table.model.memory_slices_total] for _ in n.gpus]
            for n in nodes
        ]

    @staticmethod
    def _fit(gpus: List[List[int]], profile: Optional[Profile], count: int) -> Optional[List[int]]:
        """GPUs for ``count`` instances (first fit: the lowest GPU that holds one, which keeps the last
        GPUs whole for whole-GPU jobs; best fit by free memory waited longer on mixed traces), taken
        from ``gpus`` in place; None (and ``gpus`` untouched) when they do not all fit."""
        if profile is None:
            return None
        c, m = profile.compute_slices, profile.memory_slices
        chosen: List[int] = []
        for _ in range(count):
            i = next((i for i, g in enumerate(gpus) if g[0] >= c and g[1] >= m), -1)
            if i < 0:
                for j in chosen:
                    gpus[j][0] += c
                    gpus[j][1] += m
                return None
            gpus[i][0] -= c
            gpus[i][1] -= m
            chosen.append(i)
        return chosen

    def _fits(self, gpus: List[List[int]], profile: Optional[Profile], count: int) -> bool:
        if profile is None:
            return False
        if count == 1:
            c, m = profile.compute_slices, profile.memory_slices
            return any(g[0] >= c and g[1] >= m for g in gpus)
        return self._fit([list(g) for g in gpus], profile, count) is not None

    def allocate(self, job: SimJob, exclude: Set[int]) -> Optional[List[int]]:
        fitting = []
        for node in self.nodes:
            if node.index in exclude:
                continue
            if self._fits(self.fluid[node.index], node.table.profiles[job.key], job.count):
                fitting.append((sum(g[1] for g in self.fluid[node.index]), node.index))
        if len(fitting) < job.nodes:
            return None
        chosen = [n for _, n in fitting[: job.nodes]]  # node order, as Slurm and default take them
        job.alloc = []
        for n in chosen:
            gpus = self._fit(self.fluid[n], self.nodes[n].table.profiles[job.key], job.count)
            assert gpus is not None  # noqa: S101 - it fitted a moment ago
            job.alloc.append((n, [(g, 0) for g in gpus]))
            self.nodes[n].version += 1  # the node's GPUs changed (the engine's metrics cache by it)
        return chosen

    def prolog(self, job: SimJob, nodes: List[int]) -> bool:
        return True  # fluid slices: nothing to place

    def release(self, job: SimJob) -> None:
        for n, placed in job.alloc:
            p = self.nodes[n].table.profiles[job.key]
            if p is None:
                continue
            for g, _ in placed:
                self.fluid[n][g][0] += p.compute_slices
                self.fluid[n][g][1] += p.memory_slices
            self.nodes[n].version += 1
        job.alloc = []

    def free_view(self, node: SimNode) -> Iterator[Tuple[int, int, int, int]]:
        model = node.table.model
        for free_c, free_m in self.fluid[node.index]:
            usable, largest = fluid_spare(model, free_c, free_m)
            yield free_c, free_c - usable, free_m, free_m - largest

    def fit_after_ends(self, node: SimNode, job: SimJob, ending: Sequence[SimJob]) -> int:
        gpus = [list(g) for g in self.fluid[node.index]]
        profile = node.table.profiles[job.key]
        for i, other in enumerate(ending, 1):
            p = node.table.profiles[other.key]
            for n, placed in other.alloc:
                if n == node.index and p is not None:
                    for g, _ in placed:
                        gpus[g][0] += p.compute_slices
                        gpus[g][1] += p.memory_slices
            if self._fits(gpus, profile, job.count):
                return i
        return 0
