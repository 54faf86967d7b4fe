"""The words the journal, the agent and reconcile share, one definition each.

Every enum is a ``str``: records and JSON keep the plain words (``"PrepareStarted"``), comparisons with
strings read from a file work, and ``str()``/f-strings give the word on every Python version.

>>> Phase.PREPARE_STARTED == "PrepareStarted", f"{InstanceState.CREATED}"
(True, 'created')
>>> Phase("ReleaseStarted") is Phase.RELEASE_STARTED
True
"""

from __future__ import annotations

from enum import Enum

__all__ = ["Phase", "InstanceState", "Repair", "HookAction", "Admission", "ADMISSION_MODES"]


class _Word(str, Enum):
    def __str__(self) -> str:
        return str(self.value)


class Phase(_Word):
    """A job record's phase; each is saved before the driver is touched for the next step."""

    PREPARE_STARTED = "PrepareStarted"  # instances planned (maybe some created)
    PREPARE_COMPLETED = "PrepareCompleted"  # every instance created
    RELEASE_STARTED = "ReleaseStarted"  # from any phase; instances being destroyed


class InstanceState(_Word):
    """One recorded instance: planned (maybe created: look at its placement), created, or released."""

    PLANNED = "planned"
    CREATED = "created"
    RELEASED = "released"


class Repair(_Word):
    """What reconcile does with one record instance or driver instance (``core.reconcile_plan.diff``)."""

    KEEP = "keep"  # exists and belongs to a running job, as recorded
    ADOPT = "adopt"  # a running job's instance whose creation was not recorded: journal.record_created
    DESTROY = "destroy"  # an instance of a job that no longer runs: driver.destroy, then record_released
    MARK_RELEASED = "mark_released"  # recorded but gone, job no longer runs: journal.record_released only
    FINISH_RELEASE = "finish_release"  # every instance of an ended job is released: journal.finish_release
    DESTROY_ORPHAN = "destroy_orphan"  # an instance no record claims: driver.destroy
    REPORT = "report"  # something only an operator can settle; nothing is touched


class HookAction(_Word):
    """What a Prolog or Epilog did with its job (``node.agent.Outcome.action``)."""

    NONE = "none"  # not a MIG job, or nothing recorded to release
    CREATED = "created"
    REFUSED = "refused"  # held (or cancelled) with the reason: an admin must look
    REQUEUED = "requeued"  # a packing race or a broken GPU: back to the queue
    CANCELLED = "cancelled"  # could not be requeued (interactive): cancelled rather than run without GPUs
    RELEASED = "released"
    PARTIAL = "partial"  # left for reconcile


class Admission(_Word):
    """How MIG requests get through Slurm (config.yaml ``admission.mode``, ``slurm-gpu config --admission``;
    docs/admission.md)."""

    COUNTS = "counts"  # typed count gres migp:<profile>:<n>, a target layout: no start limit
    FEATURES = "features"  # fit features mig.<profile>.<k>: exact with one start per scheduling pass


ADMISSION_MODES = tuple(str(a) for a in Admission)
# What ships: exact at Slurm's own start rate (bench/RESULTS.md, "Burst fill"); features stay selectable.
DEFAULT_ADMISSION = str(Admission.COUNTS)
# hooks.log: the line of a served Epilog's re-plan of its node after it answered slurmd (hooks.runtime);
# its updates and problems are the Epilog's, it is no hook run of its own (node.hookstats)
REPLAN_HOOK = "replan"
