"""What the node agent asks of its journal: the seam ``state.journal.Journal`` implements."""

from __future__ import annotations

from typing import Any, ContextManager, Optional, Protocol, Sequence, Tuple, Union

from slurm_gpu.state.records import JobRecord, Problem

__all__ = ["JournalStore"]


class JournalStore(Protocol):
    state_dir: str
    history_path: str

    def lock(self) -> ContextManager[Any]:
        """The node-wide lock around every change of the node's GPUs (re-entrant)."""
        ...

    def get(self, job_id: Union[str, int]) -> Optional[JobRecord]: ...

    def jobs(self) -> Tuple[JobRecord, ...]: ...

    def problems(self) -> Tuple[Problem, ...]: ...

    def scan(self) -> Tuple[Tuple[JobRecord, ...], Tuple[Problem, ...]]:
        """Every trusted record and every untrusted file, in one read of the journal."""
        ...

    def begin_prepare(self, job_id: Union[str, int], uid: int, gid: int, request: str,
                      planned: Sequence[Any]) -> JobRecord: ...

    def record_created(self, job_id: Union[str, int], index: int, actual: Any,
                       complete: bool = False) -> JobRecord: ...

    def finish_prepare(self, job_id: Union[str, int]) -> JobRecord: ...

    def begin_release(self, job_id: Union[str, int]) -> Optional[JobRecord]: ...

    def record_released(self, job_id: Union[str, int], index: int) -> JobRecord: ...

    def finish_release(self, job_id: Union[str, int]) -> bool: ...

    def log_event(self, event: str, job_id: str, node: str, reason: str, detail: str) -> None:
        """One line in the history (requeued, cancelled); never raises."""
        ...

    def write_task_env(self, job_id: Union[str, int], uid: int, gid: int,
                       mig_uuids: Sequence[str]) -> str: ...

    def remove_task_env(self, job_id: Union[str, int]) -> bool: ...
