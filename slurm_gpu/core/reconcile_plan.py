"""What reconciliation should do, computed from three truths and nothing else (pure, no I/O).

- the journal's records (who owns what: ``journal.JobRecord``),
- the driver's instances (what exists: ``devices.MigInstance``),
- the jobs Slurm still runs on the node (``running_job_ids``).

``diff`` returns one ``Action`` per record instance and per driver instance, then one ``finish_release``
per job that can be closed. It never proposes to destroy an instance claimed by a job that is still
running, and destroys no unclaimed instance while journal files are unreadable (their owners are
unknown). Call it, and apply its actions, under ``Journal.lock()``: then no prolog or epilog is half-way
through a change and a 'planned' instance found on the driver is one whose creation was interrupted.

Which driver instance a record instance is: ``core.ownership.match`` (the one matcher).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, List, Optional, Sequence

from slurm_gpu.core.ownership import match
from slurm_gpu.core.vocab import InstanceState, Phase, Repair

__all__ = ["Action", "diff", "MUTATING"]

MUTATING = frozenset(
    {Repair.ADOPT, Repair.DESTROY, Repair.MARK_RELEASED, Repair.FINISH_RELEASE, Repair.DESTROY_ORPHAN}
)


@dataclass(frozen=True)
class Action:
    """One step. ``index`` is the instance's position in the job's record; ``instance`` the driver's."""

    kind: Repair
    job_id: Optional[str] = None
    index: Optional[int] = None
    instance: Any = None
    reason: str = ""

    def __str__(self) -> str:
        parts = [str(self.kind)]
        if self.job_id is not None:
            parts.append(f"job {self.job_id}" + (f" #{self.index}" if self.index is not None else ""))
        if self.instance is not None:
            i = self.instance
            parts.append(f"GPU {i.gpu_index} gi_id={i.gi_id} start={i.start} {i.mig_uuid or '(no CI)'}")
        if self.reason:
            parts.append(f"({self.reason})")
        return " ".join(parts)


def diff(
    records: Iterable[Any],
    instances: Sequence[Any],
    running_job_ids: Iterable[Any],
    problems: Sequence[Any] = (),
) -> List[Action]:
    """The actions that bring driver and journal in line; see the module docstring.

    ``problems``: the journal's unreadable files (``Journal.problems()`` minus stale records); while
    there are any, unclaimed instances are reported instead of destroyed.
    """
    running = {str(j) for j in running_job_ids}
    records = sorted(records, key=lambda r: str(r.job_id))
    unreadable = [p for p in problems if getattr(p, "kind", None) != "stale"]
    owners = match(records, instances)
    actions: List[Action] = []
    for r in records:
        job_running = r.job_id in running
        closable = not job_running
        for k, item in enumerate(r.instances):
            n = owners.instance_of(r.job_id, k)
            inst = None if n is None else instances[n]
            releasing = r.phase == Phase.RELEASE_STARTED
            action = _instance_action(
                r.job_id, k, item.state, inst, job_running, releasing, owners.contested(n)
            )
            if action is not None:
                actions.append(action)
                if action.kind in (Repair.REPORT, Repair.KEEP, Repair.ADOPT):
                    closable = False
        if closable:
            actions.append(Action(Repair.FINISH_RELEASE, r.job_id, reason="the job no longer runs"))

    for n in owners.unclaimed():
        inst = instances[n]
        if unreadable:
            why = f"no record claims it, but {len(unreadable)} journal file(s) are unreadable"
            actions.append(Action(Repair.REPORT, instance=inst, reason=why))
        else:
            actions.append(Action(Repair.DESTROY_ORPHAN, instance=inst, reason="no journal record claims it"))
    return actions


def _instance_action(
    job_id: str, index: int, state: str, inst: Any, job_running: bool, releasing: bool, contested: bool
) -> Optional[Action]:
    if contested:
        return Action(Repair.REPORT, job_id, index, inst, "more than one record claims this instance")
    if job_running:
        if inst is None:
            if state == InstanceState.RELEASED:
                return None
            return Action(Repair.REPORT, job_id, index, None, f"{state} instance of a running job is missing")
        if state == InstanceState.CREATED:
            if not inst.mig_uuid:
                return Action(
                    Repair.REPORT, job_id, index, inst, "running job's instance lost its compute instance"
                )
            return Action(Repair.KEEP, job_id, index, inst)
        if state == InstanceState.PLANNED:
            if not inst.mig_uuid or inst.ci_id is None:
                why = "half-created instance (no compute instance) of a running job"
                return Action(Repair.REPORT, job_id, index, inst, why)
            if releasing:
                why = "unrecorded instance of a running job whose release has begun"
                return Action(Repair.REPORT, job_id, index, inst, why)
            return Action(
                Repair.ADOPT, job_id, index, inst, "created before the prolog stopped; not yet recorded"
            )
        return Action(Repair.REPORT, job_id, index, inst, "released instance of a running job still exists")
    if inst is not None:
        return Action(Repair.DESTROY, job_id, index, inst, "the job no longer runs")
    if state == InstanceState.RELEASED:
        return None
    return Action(
        Repair.MARK_RELEASED, job_id, index, None, f"{state} instance is gone and the job no longer runs"
    )
