"""What the node agent asks of Slurm: the seam ``SlurmCli`` implements (and the tests' ``FakeSlurm``)."""

from __future__ import annotations

from typing import Callable, Dict, Iterable, Protocol, Sequence, Tuple

from slurm_gpu.slurm.parse import GresCount, JobInfo, NodeGres, PendingJob

__all__ = ["SlurmAdapter", "GresAdapter"]


class SlurmAdapter(Protocol):
    def job(self, job_id: int) -> JobInfo:
        """The job as the controller has it (raises ``SlurmError`` if it cannot say)."""
        ...

    def active_jobs_on(self, node: str) -> Dict[int, str]:
        """Job id -> state of every job that may own instances on ``node``."""
        ...

    def node_features(self, node: str) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
        """(available, active) features of ``node``."""
        ...

    def set_features(self, node: str, available: Iterable[str], active: Iterable[str]) -> None: ...

    def drain(self, node: str, reason: str) -> None: ...

    def requeue(self, job_id: int, reason: str, admin_comment: str) -> None: ...

    def hold(self, job_id: int, reason: str, admin_comment: str) -> None: ...

    def cancel(self, job_id: int, reason: str, admin_comment: str) -> None: ...


class GresAdapter(Protocol):
    """What count admission (``node.publish.CountPublisher``) asks of Slurm besides ``SlurmAdapter``."""

    def node_gres(self, node: str) -> NodeGres:
        """(configured, allocated) gres of ``node``, typed terms as Slurm keeps them."""
        ...

    def node_gres_started(self, node: str) -> Callable[[], NodeGres]:
        """``node_gres`` asked now, answered when the returned function is called (exactly once)."""
        ...

    def set_gres(self, node: str, gres: Sequence[GresCount]) -> None:
        """Replace the node's whole gres list (every name the node has must be in it)."""
        ...

    def pending_jobs(self) -> Tuple[PendingJob, ...]:
        """Every pending job (array tasks each), highest priority first: its per-node gres request, hold,
        wait reason, required nodes and admin comment."""
        ...

    def release(self, job_id: str, admin_comment: str) -> None:
        """Release a held job, dropping job_submit.lua's ``AWAIT_MARK`` from its admin comment."""
        ...
