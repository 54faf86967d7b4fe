"""Stand-ins shared by the tests and benchmarks: an in-memory Slurm and a node agent on the simulated
driver whose NVML calls are counted. ``FakeSlurm`` is checked against ``slurm.api.SlurmAdapter`` by mypy
(the test command type-checks this file) and by tests/node/test_fakes.py at run time."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from slurm_gpu.devices import simstate
from slurm_gpu.devices.counting import CountingNvml
from slurm_gpu.devices.nvml import NvmlDriver
from slurm_gpu.devices.simnvml import SimNvml
from slurm_gpu.node.agent import NodeAgent
from slurm_gpu.node.context import AgentPolicy
from slurm_gpu.slurm.parse import GresCount, JobInfo, PendingJob, format_gres_count
from slurm_gpu.state.journal import Journal

if TYPE_CHECKING:
    from slurm_gpu.slurm.api import GresAdapter, SlurmAdapter


class FakeSlurm:
    """Holds jobs and node features in memory and records every write."""

    def __init__(self, node: str):
        self.node = node
        self.jobs: Dict[int, JobInfo] = {}
        self.available: Tuple[str, ...] = ("gpu_h100",)  # an admin's own feature: must survive our updates
        self.active: Tuple[str, ...] = ("gpu_h100",)
        self.calls: List[Tuple[Any, ...]] = []

    def add(self, job_id: int, profile: Optional[str] = None, count: int = 1, slices: Optional[int] = None,
            state: str = "RUNNING", comment: Optional[str] = None) -> None:
        if comment is None:
            comment = f"slurm-gpu:gpu:{profile}:{count}" if profile else ""
        tres = f"gres:mig:{slices}" if slices else ""
        self.jobs[job_id] = JobInfo(job_id, state, (), 1000, (self.node,), comment, tres)

    def job(self, job_id: int) -> JobInfo:
        return self.jobs[int(job_id)]

    def active_jobs_on(self, node: str) -> Dict[int, str]:
        return {j: i.state for j, i in self.jobs.items() if i.active}

    def node_features(self, node: str) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
        return self.available, self.active

    def set_features(self, node: str, available: Iterable[str], active: Iterable[str]) -> None:
        self.calls.append(("features", tuple(available), tuple(active)))
        self.available, self.active = tuple(available), tuple(active)

    def requeue(self, job_id: int, reason: str, admin_comment: str) -> None:
        self.calls.append(("requeue", job_id, reason))

    def hold(self, job_id: int, reason: str, admin_comment: str) -> None:
        self.calls.append(("hold", job_id, reason))

    def cancel(self, job_id: int, reason: str, admin_comment: str) -> None:
        self.calls.append(("cancel", job_id, reason))

    def drain(self, node: str, reason: str) -> None:
        self.calls.append(("drain", node, reason))


class FakeGresSlurm(FakeSlurm):
    """``FakeSlurm`` with count admission's node gres: Slurm's counts, what it allocated (from the jobs
    it holds, as ``migp`` per node), the pending queue's requests, and a hook run after each update
    (``on_update``) that tests use to land an allocation at the worst moment."""

    def __init__(self, node: str):
        super().__init__(node)
        self.gres: List[GresCount] = []
        self.used_extra: Dict[str, int] = {}  # allocations of jobs the fake holds no record of
        self.pending: List[Union[str, PendingJob]] = []
        self.released: List[str] = []
        self.undercount: Dict[str, int] = {}  # what Slurm forgets (seen after reconfigure)
        self.on_update: Optional[Any] = None
        self.updates: List[str] = []

    def add_typed(self, job_id: int, profile: str, count: int = 1, state: str = "RUNNING",
                  request: Optional[str] = None) -> None:
        """A job allocated ``count`` of type ``profile`` (a profile or an alias such as ``20gb``) on the
        node; ``request`` is what job_submit.lua recorded (default ``gpu:<profile>:<count>``)."""
        from slurm_gpu.core.target import gres_type

        tres = f"gres:migp:{gres_type(profile)}:{count}"
        recorded = request or f"gpu:{profile}:{count}"
        self.jobs[job_id] = JobInfo(job_id, state, (), 1000, (self.node,), f"slurm-gpu:{recorded}", tres)

    def node_gres(self, node: str) -> Tuple[Tuple[GresCount, ...], Tuple[GresCount, ...]]:
        used: Dict[str, int] = dict(self.used_extra)
        for job in self.jobs.values():
            if job.active:
                for t, n in job.typed_counts_per_node("migp", node).items():
                    used[t] = used.get(t, 0) + n
        for t, n in self.undercount.items():
            used[t] = max(used.get(t, 0) - n, 0)
        return tuple(self.gres), tuple(GresCount("migp", t, n) for t, n in sorted(used.items()))

    def node_gres_started(self, node: str) -> Any:
        return lambda: self.node_gres(node)

    def set_gres(self, node: str, gres: Sequence[GresCount]) -> None:
        self.gres = list(gres)
        self.updates.append(",".join(format_gres_count(g) for g in gres if g.count))
        self.calls.append(("gres", self.updates[-1]))
        if self.on_update is not None:
            self.on_update(self)

    def pending_jobs(self) -> Tuple[PendingJob, ...]:
        # tests list the queue as gres strings (not held, no nodelist) or as PendingJob rows
        return tuple(j if isinstance(j, PendingJob)
                     else PendingJob(str(9000 + i), False, "Priority", (), j, "")
                     for i, j in enumerate(self.pending))

    def release(self, job_id: str, admin_comment: str) -> None:
        self.released.append(job_id)
        self.calls.append(("release", job_id))

    def counts(self) -> Dict[str, int]:
        return {g.type or "": g.count for g in self.gres
                if g.name == "migp" and g.count and g.type != "unused"}


if TYPE_CHECKING:
    _fake_is_an_adapter: SlurmAdapter = FakeSlurm("n1")
    _fake_has_gres: GresAdapter = FakeGresSlurm("n1")


def counted_agent(tmp: str, gpus: int = 8, model: str = "H100-80GB", slurm: Optional[FakeSlurm] = None,
                  reuse: bool = False) -> Tuple[NodeAgent, CountingNvml]:
    """A node agent as one hook process builds it, over ``<tmp>/sim.json`` (made unless ``reuse``) and
    the journal ``<tmp>/state``, with its NVML calls counted."""
    state = os.path.join(tmp, "sim.json")
    if not reuse:
        simstate.init_state(state, [(model, gpus)], sandbox=os.path.join(tmp, "sb"))
    nv = CountingNvml(SimNvml(state))
    driver = NvmlDriver(nv, mig_minors_path=os.path.join(tmp, "sb", "mig-minors"))
    policy = AgentPolicy(admission="features", release_wait_s=0.3, release_poll_s=0.05,
                         caps_dir=os.path.join(tmp, "sb/dev/nvidia-caps"), cgroup_root=None)
    agent = NodeAgent("n1", driver, Journal(os.path.join(tmp, "state"), boot_id="boot-1"),
                      slurm or FakeSlurm("n1"), policy)
    return agent, nv
