"""What reconciliation should do, computed from three truths and nothing else (pure, no I/O).

- the journal's records (who owns what: ``journal.JobRecord``),
- the driver's instances (what exists: ``devices.MigInstance``),
- the jobs Slurm still runs on the node (``running_job_ids``).

``diff`` returns one ``Action`` per record instance and per driver instance, then one ``finish_release``
per job that can be closed. It never proposes to destroy an instance claimed by a job that is still
running, and destroys no unclaimed instance while journal files are unreadable (their owners are
unknown). Call it, and apply its actions, under ``Journal.lock()``: then no prolog or epilog is half-way
through a change and a 'planned' instance found on the driver is one whose creation was interrupted.

How a record instance is matched with a driver instance: a 'created' or 'released' one by its MIG UUID,
else (a destroy interrupted after the compute instance went) by a GPU instance without compute instance
with the recorded GPU, gi_id, profile id and start; a 'planned' one (its creation may have happened
before the crash) by its placement: same GPU, profile id and start, among instances not claimed above.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

__all__ = [
    "Action",
    "diff",
    "KEEP",
    "ADOPT",
    "DESTROY",
    "MARK_RELEASED",
    "FINISH_RELEASE",
    "DESTROY_ORPHAN",
    "REPORT",
    "MUTATING",
]

KEEP = "keep"  # the instance exists and belongs to a running job, as recorded
ADOPT = "adopt"  # a running job's instance whose creation was not recorded: journal.record_created
DESTROY = "destroy"  # an instance of a job that no longer runs: driver.destroy, then record_released
MARK_RELEASED = "mark_released"  # recorded but gone, job no longer runs: journal.record_released only
FINISH_RELEASE = "finish_release"  # every instance of an ended job is released: journal.finish_release
DESTROY_ORPHAN = "destroy_orphan"  # an instance no record claims: driver.destroy
REPORT = "report"  # something only an operator can settle; nothing is touched
MUTATING = frozenset({ADOPT, DESTROY, MARK_RELEASED, FINISH_RELEASE, DESTROY_ORPHAN})

_PLANNED, _CREATED, _RELEASED = "planned", "created", "released"


@dataclass(frozen=True)
class Action:
    """One step. ``index`` is the instance's position in the job's record; ``instance`` the driver's."""

    kind: str
    job_id: Optional[str] = None
    index: Optional[int] = None
    instance: Any = None
    reason: str = ""

    def __str__(self) -> str:
        parts = [self.kind]
        if self.job_id is not None:
            parts.append(f"job {self.job_id}" + (f" #{self.index}" if self.index is not None else ""))
        if self.instance is not None:
            i = self.instance
            parts.append(f"GPU {i.gpu_index} gi_id={i.gi_id} start={i.start} {i.mig_uuid or '(no CI)'}")
        if self.reason:
            parts.append(f"({self.reason})")
        return " ".join(parts)


def _same_gpu(planned: Any, inst: Any) -> bool:
    # GPU UUIDs survive reboots and re-enumeration; indices are the fallback when a side lacks one.
    if planned.gpu_uuid and getattr(inst, "gpu_uuid", None):
        return bool(planned.gpu_uuid == inst.gpu_uuid)
    return bool(planned.gpu_index == inst.gpu_index)


def _same_gi(planned: Any, actual: Any, inst: Any) -> bool:
    return _at_placement(planned, inst) and actual.gi_id == inst.gi_id


def _at_placement(planned: Any, inst: Any) -> bool:
    return _same_gpu(planned, inst) and planned.profile_id == inst.profile_id and planned.start == inst.start


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

    # Who claims each driver instance (by position in ``instances``): (job_id, index) pairs.
    claims: Dict[int, List[Tuple[str, int]]] = {n: [] for n in range(len(instances))}
    by_uuid = {}
    for n, inst in enumerate(instances):
        if inst.mig_uuid:
            by_uuid.setdefault(inst.mig_uuid, []).append(n)
    match: Dict[Tuple[str, int], Optional[int]] = {}
    for r in records:
        for k, item in enumerate(r.instances):
            found = None
            if item.state != _PLANNED and item.actual is not None:
                hits = by_uuid.get(item.actual.mig_uuid, [])
                if not hits:
                    # A destroy interrupted between the CI and the GI leaves the GI alone, without UUID.
                    hits = [
                        n
                        for n, inst in enumerate(instances)
                        if not inst.mig_uuid and _same_gi(item.planned, item.actual, inst)
                    ]
                found = hits[0] if hits else None
            match[(r.job_id, k)] = found
            if found is not None:
                claims[found].append((r.job_id, k))
    uuid_claimed = {n for n, c in claims.items() if c}
    for r in records:
        for k, item in enumerate(r.instances):
            if item.state == _PLANNED:
                hits = [
                    n
                    for n, inst in enumerate(instances)
                    if n not in uuid_claimed and _at_placement(item.planned, inst)
                ]
                found = hits[0] if hits else None
                match[(r.job_id, k)] = found
                if found is not None:
                    claims[found].append((r.job_id, k))

    contested = {n for n, c in claims.items() if len(c) > 1}
    actions: List[Action] = []
    for r in records:
        job_running = r.job_id in running
        closable = not job_running
        for k, item in enumerate(r.instances):
            n = match[(r.job_id, k)]
            inst = None if n is None else instances[n]
            releasing = r.phase == "ReleaseStarted"
            action = _instance_action(r.job_id, k, item.state, inst, job_running, releasing, n in contested)
            if action is not None:
                actions.append(action)
                if action.kind in (REPORT, KEEP, ADOPT):
                    closable = False
        if closable:
            actions.append(Action(FINISH_RELEASE, r.job_id, reason="the job no longer runs"))

    for n, inst in enumerate(instances):
        if claims[n]:
            continue
        if unreadable:
            why = f"no record claims it, but {len(unreadable)} journal file(s) are unreadable"
            actions.append(Action(REPORT, instance=inst, reason=why))
        else:
            actions.append(Action(DESTROY_ORPHAN, instance=inst, reason="no journal record claims it"))
    return actions


def _instance_action(
    job_id: str, index: int, state: str, inst: Any, job_running: bool, releasing: bool, contested: bool
) -> Optional[Action]:
    if contested:
        return Action(REPORT, job_id, index, inst, "more than one record claims this instance")
    if job_running:
        if inst is None:
            if state == _RELEASED:
                return None
            return Action(REPORT, job_id, index, None, f"{state} instance of a running job is missing")
        if state == _CREATED:
            if not inst.mig_uuid:
                return Action(REPORT, job_id, index, inst, "running job's instance lost its compute instance")
            return Action(KEEP, job_id, index, inst)
        if state == _PLANNED:
            if not inst.mig_uuid or inst.ci_id is None:
                why = "half-created instance (no compute instance) of a running job"
                return Action(REPORT, job_id, index, inst, why)
            if releasing:
                why = "unrecorded instance of a running job whose release has begun"
                return Action(REPORT, job_id, index, inst, why)
            return Action(ADOPT, job_id, index, inst, "created before the prolog stopped; not yet recorded")
        return Action(REPORT, job_id, index, inst, "released instance of a running job still exists")
    if inst is not None:
        return Action(DESTROY, job_id, index, inst, "the job no longer runs")
    if state == _RELEASED:
        return None
    return Action(MARK_RELEASED, job_id, index, None, f"{state} instance is gone and the job no longer runs")
