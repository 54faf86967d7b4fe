"""What the node agent asks of Slurm: the seam ``SlurmCli`` implements (and the tests' ``FakeSlurm``)."""

from __future__ import annotations

from typing import Dict, Iterable, Protocol, Tuple

from slurm_gpu.slurm.parse import JobInfo

__all__ = ["SlurmAdapter"]


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
