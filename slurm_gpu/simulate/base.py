"""What every policy is: the scheduler's view (``allocate``) and the node's side (``prolog``).

The real GPU state lives in the ``SimNode`` objects. Instances are created on it only where the node
agent's planner puts them (``state.plan_on_node``); ``static`` creates none, its instances exist.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple

from slurm_gpu.simulate.accounting import request_problem
from slurm_gpu.simulate.state import SimJob, SimNode, plan_on_node

__all__ = ["Policy", "SHIPPED_MAX_STARTS", "SHIPPED_BF_INTERVAL", "SLURM_MAX_STARTS", "SLURM_BF_INTERVAL"]

# sched_max_job_start (= bf_max_job_start) and bf_interval: what slurm-gpu's slurm.conf sets for feature
# admission, and Slurm's own defaults (what it sets for count admission)
SHIPPED_MAX_STARTS, SHIPPED_BF_INTERVAL = 1, 5.0
SLURM_MAX_STARTS, SLURM_BF_INTERVAL = 0, 30.0


class Policy:
    """Base: the real GPU state lives in ``self.nodes``; subclasses add their scheduler's view."""

    name = "?"
    drains = 0
    # our prolog requeues a job it cannot place; Slurm makes it eligible after the credential lifetime + 1
    # (job_mgr.c: begin_time = now + cred_expire + 1; 120 s by default)
    requeue_delay = 121.0
    # whether a start creates MIG instances (and an end destroys them): the instance-time model applies
    creates_instances = True
    # the SchedulerParameters this policy runs with unless the SimConfig says otherwise: Slurm's defaults
    # (sched_max_job_start=0, bf_interval=30); feature admission ships a start limit instead
    max_starts = SLURM_MAX_STARTS
    bf_interval = SLURM_BF_INTERVAL

    def setup(self, nodes: List[SimNode], keys: Sequence[str], slices_of: Sequence[int]) -> None:
        self.nodes = nodes
        self.keys = keys
        self.slices_of = slices_of  # Slurm's `mig` count per instance of each key (largest over models)
        self.drains = 0

    def prepare(self, nodes: List[SimNode], jobs: Sequence[SimJob]) -> None:
        """Look at the whole trace before the replay (only ``static`` does)."""

    def follow(self, pending: Sequence[SimJob]) -> None:
        """The engine's pending queue, in priority order (kept up to date by the engine)."""

    def publish_at(self, t: float) -> Tuple[bool, Optional[float]]:
        """At every instant, before the scheduling passes: what the node agents publish now. Returns
        whether Slurm's view changed (the schedulers look again) and when the policy next wants to run
        (None: no time of its own)."""
        return False, None

    def begin_pass(self) -> None:
        pass

    def end_pass(self) -> None:
        pass

    def allocate(self, job: SimJob, exclude: Set[int]) -> Optional[List[int]]:
        raise NotImplementedError

    def prolog(self, job: SimJob, nodes: List[int]) -> bool:
        """Create the job's instances on every node, or undo everything and return False (a misfit)."""
        raise NotImplementedError

    def release(self, job: SimJob) -> None:
        for n, placed in job.alloc:
            node = self.nodes[n]
            for g, start in placed:
                node.set_gpu(g, node.table.remove(node.gpus[g], start))
        job.alloc = []

    def why_never(self, job: SimJob) -> Optional[str]:
        """Why the job can never run under this policy (None: it can); a function of its request
        (key, count, nodes) only. The base answer is the empty cluster's (``accounting``)."""
        return request_problem([(n.table, len(n.gpus)) for n in self.nodes], job.key, job.count, job.nodes)

    def describe(self) -> Optional[List[Dict[str, Any]]]:
        """The fixed layout the policy ran with (``static``), for the report; None for dynamic ones."""
        return None

    def free_view(self, node: SimNode) -> Iterator[Tuple[int, int, int, int]]:
        """Per GPU of ``node``: ``(free compute, stranded compute, free memory, lost memory)`` slices, as
        ``ModelTable.spare`` defines them, in this policy's view (for the time-averaged metrics)."""
        spare = node.table.spare
        for slots in node.gpus:
            yield spare(slots)

    # -- reservations (backfill) ---------------------------------------------------------------------
    def fit_after_ends(self, node: SimNode, job: SimJob, ending: Sequence[SimJob]) -> int:
        """How many of ``ending`` (the node's running jobs, in the order they end) must end before ``job``
        fits on ``node`` in this policy's view: 1 to len(ending), or 0 when it never does."""
        table = node.table
        k, count, here = job.key, job.count, node.index
        gpus = list(node.gpus)
        caps = [table.capacity(s)[k] for s in gpus]
        total = sum(caps)
        for i, other in enumerate(ending, 1):
            for n, placed in other.alloc:
                if n == here:
                    for g, start in placed:
                        gpus[g] = table.remove(gpus[g], start)
                        cap = table.capacity(gpus[g])[k]
                        total += cap - caps[g]
                        caps[g] = cap
            if total >= count:
                return i
        return 0

    # -- helpers -------------------------------------------------------------------------------------
    def _place(self, job: SimJob, nodes: List[int]) -> bool:
        """Plan and create on each node with the agent's placement; all or nothing."""
        done: List[Tuple[int, List[Tuple[int, int]]]] = []
        for n in nodes:
            node = self.nodes[n]
            plan = plan_on_node(node, job.key, job.count)
            if plan is None:
                job.alloc = done
                self.release(job)
                return False
            for g, _start, after in plan:
                node.set_gpu(g, after)
            done.append((n, [(g, start) for g, start, _ in plan]))
        job.alloc = done
        return True
