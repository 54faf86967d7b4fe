"""``reconcile``: driver vs journal vs Slurm on one node, repaired under the node lock.

The decisions are ``core.reconcile_plan.diff``'s; this applies them. Without an answer from Slurm every
recorded job counts as running, so only instances that no record claims are touched.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from slurm_gpu.core import reconcile_plan as rp
from slurm_gpu.core.errors import SlurmError, SlurmGpuError
from slurm_gpu.core.vocab import Repair

if TYPE_CHECKING:
    from slurm_gpu.devices.api import Driver, MigInstance
    from slurm_gpu.slurm.api import SlurmAdapter
    from slurm_gpu.state.api import JournalStore

__all__ = ["Action", "ReconcileReport", "reconcile"]

Destroyer = Callable[[int, int, Sequence["MigInstance"], List[str]], bool]


@dataclass
class Action:
    """One step of ``reconcile``: ``kind`` is a ``core.vocab.Repair``."""

    kind: Repair
    detail: str
    job_id: Optional[str] = None
    gpu_index: Optional[int] = None
    gi_id: Optional[int] = None
    done: bool = False
    error: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return dict(asdict(self), kind=str(self.kind))


@dataclass
class ReconcileReport:
    dry_run: bool
    actions: List[Action] = field(default_factory=list)
    active_jobs: Tuple[str, ...] = ()
    slurm_error: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return {"dry_run": self.dry_run, "active_jobs": list(self.active_jobs),
                "slurm_error": self.slurm_error, "actions": [a.to_dict() for a in self.actions]}


def reconcile(node: str, driver: Driver, journal: JournalStore, slurm: SlurmAdapter, destroy: Destroyer,
              publish: Callable[[List[str]], None], dry_run: bool = False) -> ReconcileReport:
    """Compare and repair (``dry_run``: report only). ``destroy(gpu_index, gi_id, entries, errors)``
    destroys one GPU instance; ``publish(problems)`` republishes the node's capacity."""
    report = ReconcileReport(dry_run)
    active: Optional[Set[str]] = None
    try:
        active = {str(j) for j in slurm.active_jobs_on(node)}
        report.active_jobs = tuple(sorted(active, key=_job_key))
    except SlurmError as exc:
        report.slurm_error = str(exc)
    with journal.lock():
        records, all_problems = journal.scan()
        running = {r.job_id for r in records if active is None or r.job_id.split("_")[0] in active
                   or r.job_id in active}
        problems = [p for p in all_problems if p.kind != "stale"]
        for prob in problems:
            report.actions.append(Action(Repair.REPORT, f"untrusted journal file {prob.path}: {prob.kind}: "
                                                        f"{prob.reason}", job_id=prob.job_id))
        live = driver.instances()
        for step in rp.diff(records, live, running, problems):
            if step.kind == Repair.KEEP:
                continue
            inst = step.instance
            act = Action(step.kind, str(step), job_id=step.job_id,
                         gpu_index=getattr(inst, "gpu_index", None), gi_id=getattr(inst, "gi_id", None))
            report.actions.append(act)
            if dry_run or step.kind == Repair.REPORT:
                continue
            errors: List[str] = []
            try:
                act.done = _apply(step, live, journal, destroy, errors)
            except SlurmGpuError as exc:
                errors.append(str(exc))
            act.error = "; ".join(errors) or None
        if not dry_run:
            errors = []
            publish(errors)
            report.actions.extend(Action(Repair.REPORT, e, error=e) for e in errors)
    return report


def _apply(step: rp.Action, live: Sequence[MigInstance], journal: JournalStore, destroy: Destroyer,
           errors: List[str]) -> bool:
    inst = step.instance
    if step.kind == Repair.ADOPT:
        assert step.job_id is not None and step.index is not None
        journal.record_created(step.job_id, step.index, inst)
        return True
    if step.kind == Repair.DESTROY_ORPHAN:
        return destroy(inst.gpu_index, inst.gi_id, _entries(live, inst), errors)
    if step.kind in (Repair.DESTROY, Repair.MARK_RELEASED):
        assert step.job_id is not None and step.index is not None
        journal.begin_release(step.job_id)
        if inst is not None and not destroy(inst.gpu_index, inst.gi_id, _entries(live, inst), errors):
            return False
        journal.record_released(step.job_id, step.index)
        return True
    if step.kind == Repair.FINISH_RELEASE:
        assert step.job_id is not None
        journal.begin_release(step.job_id)
        return bool(journal.finish_release(step.job_id))
    return False


def _entries(live: Sequence[MigInstance], inst: Any) -> List[MigInstance]:
    """Every entry (one per compute instance) of ``inst``'s GPU instance."""
    return [i for i in live if (i.gpu_index, i.gi_id) == (inst.gpu_index, inst.gi_id)]


def _job_key(job_id: str) -> Tuple[int, int]:
    head, _, tail = job_id.partition("_")
    return (int(head) if head.isdigit() else 0, int(tail) if tail.isdigit() else 0)
