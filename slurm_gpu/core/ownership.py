"""Which driver instance a journal record's instance is: the one matcher of release, reconcile and status.

Rules, in order (pure, no I/O):

1. A ``created`` or ``released`` record instance is the driver instance with its MIG UUID; failing that
   (a destroy interrupted between the compute and the GPU instance leaves a GPU instance without UUID),
   the GPU instance without compute instance on the recorded GPU with the recorded ``gi_id``, profile id
   and ``placement.start``.
2. A ``planned`` one (its creation may have happened just before a crash) is the driver instance at its
   placement (same GPU, profile id and start) that no rule-1 match took.

The same GPU means the same GPU UUID where both sides know it (UUIDs survive re-enumeration), else the
same index. A driver instance more than one record instance claims is *contested*: nobody may destroy it.

>>> from types import SimpleNamespace as O
>>> gpu = dict(gpu_index=0, gpu_uuid="GPU-a")
>>> planned = O(profile_id=19, start=6, **gpu)
>>> created = O(planned=planned, actual=O(gi_id=3, mig_uuid="MIG-1"), state="created")
>>> half = O(planned=O(profile_id=19, start=5, **gpu), actual=None, state="planned")
>>> live = [O(mig_uuid="MIG-1", gi_id=3, profile_id=19, start=6, **gpu),
...         O(mig_uuid="", gi_id=4, profile_id=19, start=5, **gpu)]
>>> found = match([O(job_id="7", instances=(created, half))], live)
>>> found.instance_of("7", 0), found.instance_of("7", 1), found.unclaimed()
(0, 1, ())
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from slurm_gpu.core.vocab import InstanceState

__all__ = ["Ownership", "match", "same_gpu"]

Claim = Tuple[str, int]  # (job_id, index of the instance in the job's record)


def same_gpu(planned: Any, inst: Any) -> bool:
    if planned.gpu_uuid and getattr(inst, "gpu_uuid", None):
        return bool(planned.gpu_uuid == inst.gpu_uuid)
    return bool(planned.gpu_index == inst.gpu_index)


def _at_placement(planned: Any, inst: Any) -> bool:
    return same_gpu(planned, inst) and planned.profile_id == inst.profile_id and planned.start == inst.start


@dataclass(frozen=True)
class Ownership:
    """The result of :func:`match`: driver instances by position in the list that was matched."""

    of: Dict[Claim, Optional[int]]  # every record instance -> its driver instance, or None
    claims: Dict[int, Tuple[Claim, ...]]  # every driver instance -> the record instances naming it

    def instance_of(self, job_id: str, index: int) -> Optional[int]:
        return self.of.get((job_id, index))

    def contested(self, n: Optional[int]) -> bool:
        return n is not None and len(self.claims.get(n, ())) > 1

    def unclaimed(self) -> Tuple[int, ...]:
        return tuple(n for n, c in self.claims.items() if not c)


def match(records: Iterable[Any], instances: Sequence[Any]) -> Ownership:
    """Match every instance of ``records`` (journal ``JobRecord``s) with ``instances`` (the driver's)."""
    records = list(records)
    claims: Dict[int, List[Claim]] = {n: [] for n in range(len(instances))}
    by_uuid: Dict[str, List[int]] = {}
    for n, inst in enumerate(instances):
        if inst.mig_uuid:
            by_uuid.setdefault(inst.mig_uuid, []).append(n)
    of: Dict[Claim, Optional[int]] = {}
    for r in records:
        for k, item in enumerate(r.instances):
            if item.state == InstanceState.PLANNED:
                continue
            if item.actual is None:  # released without ever being created
                of[(r.job_id, k)] = None
                continue
            hits = by_uuid.get(item.actual.mig_uuid, []) or [
                n
                for n, inst in enumerate(instances)
                if not inst.mig_uuid and _at_placement(item.planned, inst) and item.actual.gi_id == inst.gi_id
            ]
            of[(r.job_id, k)] = hits[0] if hits else None
            if hits:
                claims[hits[0]].append((r.job_id, k))
    by_uuid_claimed = {n for n, c in claims.items() if c}
    for r in records:
        for k, item in enumerate(r.instances):
            if (r.job_id, k) in of:
                continue
            hits = [
                n
                for n, inst in enumerate(instances)
                if n not in by_uuid_claimed and _at_placement(item.planned, inst)
            ]
            of[(r.job_id, k)] = hits[0] if hits else None
            if hits:
                claims[hits[0]].append((r.job_id, k))
    return Ownership(of, {n: tuple(c) for n, c in claims.items()})
