"""Admission and placement policies, all driven by the same engine and Slurm-like queue.

Each policy answers, for the scheduler, "may this job start on these nodes now?" from *its* view of the
cluster (``allocate``), then plays the node side (``prolog``): create the instances on the real GPU state,
or report a misfit. The engine requeues a misfit job.

- ``default``: what slurm-gpu ships, count admission (``slurm_gpu.simulate.counts``): each node publishes
  a target layout as typed count-only gres that Slurm consumes live; never misfits, so it runs Slurm's
  scheduler defaults.
- ``features``: the earlier admission. Slurm admits with the count-only ``mig`` gres (live within a pass)
  and the fit features ``mig.<profile>.<k>`` (a snapshot taken when the pass starts); the node agent places
  with the fragmentation-aware planner. Two jobs of one pass can race onto one node: the loser misfits
  and our prolog requeues it (no drain); slurm-gpu ships one start per pass for it.
- ``oracle``: exact admission on the live geometry, best-fit node, same placement. Never misfits.
- ``shards``: gres/shard counting per GPU (Slurm 22.05: all shards of a job on a node from one GPU); a
  misfit is what a naive prolog hits, and Slurm drains the node for it (counted in ``drains``).
- ``static``: fixed MIG layouts, jobs take a free instance of their exact profile. Never misfits.
- ``ideal``: the bound, fluid slices (``slurm_gpu.simulate.ideal``): what the queue could do if placement
  alignment did not exist.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Set, Tuple

from slurm_gpu.core.errors import BadInputError
from slurm_gpu.simulate.base import SHIPPED_BF_INTERVAL, SHIPPED_MAX_STARTS, Policy
from slurm_gpu.simulate.counts import PUBLISH_INTERVAL, CountsPolicy
from slurm_gpu.simulate.ideal import IdealPolicy
from slurm_gpu.simulate.state import SimJob, SimNode, plan_on_node
from slurm_gpu.simulate.static import StaticPolicy

__all__ = [
    "Policy",
    "CountsPolicy",
    "FeaturesPolicy",
    "OraclePolicy",
    "ShardsPolicy",
    "StaticPolicy",
    "IdealPolicy",
    "POLICIES",
    "make_policy",
]


class OraclePolicy(Policy):
    name = "oracle"

    def allocate(self, job: SimJob, exclude: Set[int]) -> Optional[List[int]]:
        k, count = job.key, job.count
        fitting = [
            (node.free, node.index)
            for node in self.nodes
            if node.cap[k] >= count and node.index not in exclude
        ]
        if len(fitting) < job.nodes:
            return None
        fitting.sort()  # best fit: the fullest nodes first
        return [n for _, n in fitting[: job.nodes]]

    def prolog(self, job: SimJob, nodes: List[int]) -> bool:
        placed = self._place(job, nodes)
        assert placed, "oracle admitted a job that does not fit"  # noqa: S101 - an invariant, tested
        return placed


class FeaturesPolicy(Policy):
    """Count-only ``mig`` gres (live) + fit features (snapshot per pass); requeue on a race."""

    name = "features"
    max_starts = SHIPPED_MAX_STARTS  # what slurm-gpu's slurm.conf sets for feature admission
    bf_interval = SHIPPED_BF_INTERVAL

    def __init__(self, order: str = "first", publish: str = "exact", max_count: int = 8, depth: int = 8):
        if order not in ("first", "tight", "spread"):
            raise BadInputError(f"features policy order {order!r}: first, tight or spread", part=order)
        if publish not in ("exact", "safe", "prefer"):
            raise BadInputError(f"features policy publish {publish!r}: exact, safe or prefer", part=publish)
        self.order = order
        self.publish = publish
        self.max_count = max_count
        self.depth = depth

    def setup(self, nodes: List[SimNode], keys: Sequence[str], slices_of: Sequence[int]) -> None:
        super().setup(nodes, keys, slices_of)
        self.gres_free = [n.total for n in nodes]  # Slurm's `mig` count left per node
        self.tiers: List[List[List[int]]] = []
        self.snap_free: List[int] = [n.free for n in nodes]
        self.pending_release: List[Tuple[int, int]] = []

    def begin_pass(self) -> None:
        # the features Slurm sees were published by the agents after their last change
        exact = [n.cap for n in self.nodes]
        if self.publish == "exact":
            self.tiers = [exact]
        elif self.publish == "safe":
            self.tiers = [[self._safe(n) for n in self.nodes]]
        else:
            self.tiers = [[self._safe(n) for n in self.nodes], exact]
        self.snap_free = [n.free for n in self.nodes]

    def _safe(self, node: SimNode) -> List[int]:
        """Publish a profile only where every instance of it the ``mig`` count still allows would fit."""
        out = list(node.cap)
        for k, c in enumerate(out):
            need = self.slices_of[k]
            if need and c < min(self.max_count, node.free // need, self.depth):
                out[k] = 0
        return out

    def end_pass(self) -> None:
        # a requeued job's gres goes back once its prologs are done, i.e. after the pass
        for n, amount in self.pending_release:
            self.gres_free[n] += amount
        self.pending_release = []

    def allocate(self, job: SimJob, exclude: Set[int]) -> Optional[List[int]]:
        k, count = job.key, job.count
        need = self.slices_of[k] * count
        gres_free = self.gres_free
        for snapshot in self.tiers:  # --prefer'd features first, then the required ones
            if self.order == "first":
                chosen = []
                for n in range(len(snapshot)):
                    if snapshot[n][k] >= count and gres_free[n] >= need and n not in exclude:
                        chosen.append(n)
                        if len(chosen) == job.nodes:
                            break
            else:
                # spread: CR_LLN, the least loaded node now (live within the pass);
                # tight: node Weight set by the agent to its free slices, lowest weight first
                fitting = [
                    (-gres_free[n] if self.order == "spread" else self.snap_free[n], n)
                    for n in range(len(snapshot))
                    if snapshot[n][k] >= count and gres_free[n] >= need and n not in exclude
                ]
                fitting.sort()
                chosen = [n for _, n in fitting[: job.nodes]]
            if len(chosen) == job.nodes:
                for n in chosen:
                    gres_free[n] -= need
                return chosen
        return None

    def prolog(self, job: SimJob, nodes: List[int]) -> bool:
        if self._place(job, nodes):
            return True
        need = self.slices_of[job.key] * job.count
        self.pending_release.extend((n, need) for n in nodes)
        return False

    def release(self, job: SimJob) -> None:
        need = self.slices_of[job.key] * job.count
        for n, _ in job.alloc:
            self.gres_free[n] += need
        super().release(job)


class ShardsPolicy(Policy):
    """gres/shard: ``compute_slices_total`` shards per GPU; a profile costs its compute (or memory) slices.

    Whole-GPU requests (the model's full profile) are what such a site asks with ``--gres=gpu:N``: N GPUs
    no shard of which is in use, as Slurm keeps gpu and shard allocations of one GPU apart. Any other
    request takes all its shards on a node from one GPU (Slurm 22.05; 24.05's MULTIPLE_SHARING_GRES_PJ
    lifts that), so one that needs more shards than a GPU has can never run.
    """

    name = "shards"
    requeue_delay = 120.0  # a failed prolog: Slurm requeues the job held, eligible again after 120 s

    def __init__(self, cost: str = "compute"):
        if cost not in ("compute", "memory"):
            raise BadInputError(f"shard cost {cost!r}: compute or memory", part=cost)
        self.cost = cost

    def _cost(self, node: SimNode, key: int) -> int:
        p = node.table.profiles[key]
        if p is None:
            return 10**9
        return p.compute_slices if self.cost == "compute" else p.memory_slices

    def _per_gpu(self, node: SimNode) -> int:
        m = node.table.model
        return m.compute_slices_total if self.cost == "compute" else m.memory_slices_total

    @staticmethod
    def _whole(node: SimNode, key: int) -> bool:
        p = node.table.profiles[key]
        return p is not None and p.profile_id == node.table.model.full_profile().profile_id

    def setup(self, nodes: List[SimNode], keys: Sequence[str], slices_of: Sequence[int]) -> None:
        super().setup(nodes, keys, slices_of)
        self.shards = [[self._per_gpu(n)] * len(n.gpus) for n in nodes]
        # drained nodes take no new job; the admin resumes one once its jobs are gone (a generous admin)
        self.drained: Set[int] = set()

    def why_never(self, job: SimJob) -> Optional[str]:
        base = super().why_never(job)
        if base is not None:
            return base
        ok = [
            n
            for n in self.nodes
            if self._whole(n, job.key) or self._cost(n, job.key) * job.count <= self._per_gpu(n)
        ]
        if len(ok) >= job.nodes:
            return None
        node = self.nodes[0]
        return (
            f"needs {self._cost(node, job.key) * job.count} shards on one GPU (Slurm takes all of a job's "
            f"shards on a node from one GPU); a GPU has {self._per_gpu(node)}"
        )

    def _gpus_for(self, node: SimNode, key: int, count: int) -> List[Tuple[int, int]]:
        """``[(gpu, shards taken)]`` for the job on this node now, or [] when it does not fit."""
        row = self.shards[node.index]
        if self._whole(node, key):
            full = self._per_gpu(node)
            idle = [(g, full) for g, free in enumerate(row) if free == full]
            return idle[:count] if len(idle) >= count else []
        need = self._cost(node, key) * count
        for g, free in enumerate(row):
            if free >= need:
                return [(g, need)]
        return []

    def allocate(self, job: SimJob, exclude: Set[int]) -> Optional[List[int]]:
        chosen: List[Tuple[int, List[Tuple[int, int]]]] = []
        for node in self.nodes:
            if node.index in exclude or node.index in self.drained:
                continue
            taken = self._gpus_for(node, job.key, job.count)
            if taken:
                chosen.append((node.index, taken))
                if len(chosen) == job.nodes:
                    break
        if len(chosen) < job.nodes:
            return None
        job.shard_gpu = {}
        for n, taken in chosen:
            for g, need in taken:
                self.shards[n][g] -= need
            job.shard_gpu[n] = taken
        return [n for n, _ in chosen]

    def prolog(self, job: SimJob, nodes: List[int]) -> bool:
        done: List[Tuple[int, List[Tuple[int, int]]]] = []
        for n in nodes:
            node = self.nodes[n]
            gpus = tuple(g for g, _ in job.shard_gpu[n])
            plan = plan_on_node(node, job.key, job.count, gpus=gpus)
            if plan is None:
                # a naive prolog fails here: Slurm drains the node and requeues the job held
                self.drains += 1
                self.drained.add(n)
                job.alloc = done
                super().release(job)
                self._give_back_shards(job)
                return False
            for gi, _start, after in plan:
                node.set_gpu(gi, after)
            done.append((n, [(gi, start) for gi, start, _ in plan]))
        job.alloc = done
        return True

    def _give_back_shards(self, job: SimJob) -> None:
        for n, taken in job.shard_gpu.items():
            for g, need in taken:
                self.shards[n][g] += need
            if n in self.drained and all(f == self._per_gpu(self.nodes[n]) for f in self.shards[n]):
                self.drained.discard(n)
        job.shard_gpu = {}

    def release(self, job: SimJob) -> None:
        self._give_back_shards(job)
        super().release(job)

    def fit_after_ends(self, node: SimNode, job: SimJob, ending: Sequence[SimJob]) -> int:
        if node.index in self.drained:
            return 0
        free = list(self.shards[node.index])
        full = self._per_gpu(node)
        whole = self._whole(node, job.key)
        need = self._cost(node, job.key) * job.count
        for i, other in enumerate(ending, 1):
            for g, n_shards in other.shard_gpu.get(node.index, ()):
                free[g] += n_shards
            if (sum(1 for f in free if f == full) >= job.count) if whole else any(f >= need for f in free):
                return i
        return 0


POLICIES = ("default", "features", "oracle", "shards", "static", "ideal")


def make_policy(
    name: str,
    layout: Optional[str] = None,
    order: str = "first",
    shard_cost: str = "compute",
    publish: str = "exact",
    publish_interval: float = PUBLISH_INTERVAL,
) -> Policy:
    """A policy by name, with its options (the others are ignored)."""
    if name == "default":
        return CountsPolicy(publish_interval)
    if name == "features":
        return FeaturesPolicy(order, publish)
    if name == "oracle":
        return OraclePolicy()
    if name == "shards":
        return ShardsPolicy(shard_cost)
    if name == "static":
        return StaticPolicy(layout)
    if name == "ideal":
        return IdealPolicy()
    raise BadInputError(f"unknown policy {name!r} (known: {', '.join(POLICIES)})", part=name)
