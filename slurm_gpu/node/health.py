"""The node health check run by Slurm's ``HealthCheckProgram`` (``slurm-gpu health``).

Slurm only runs the program (as root, every ``HealthCheckInterval`` seconds, on nodes in the states of
``HealthCheckNodeState``) and ignores its exit status: draining is the program's own act. So this check
tells hard failures, which take the node out of service when the caller asks (``--drain``), from our own
transient problems (a node lock held by a hook, a journal file being replaced), which are only reported.

Checks, in order; the first failure gives the exit code and the one-line reason ``sinfo -R`` shows:
- ``driver``: NVML answers and lists the GPUs (exit 5);
- ``mig_mode``: every catalog GPU that a hook cannot switch (Ampere: a reset is needed) is in MIG mode,
  and no GPU has a mode change pending (exit 7: the node is not configured as its admin meant);
- ``orphans``: no MIG instance without a journal record older than ``orphan_minutes`` (reconcile reaps
  younger ones; an old one means reconcile is not running or cannot destroy it) (exit 6);
- ``journal``: no corrupt, foreign or other-boot journal file (exit 6).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from slurm_gpu.core.errors import EXIT_CONFIG, EXIT_DRIVER, EXIT_OK, EXIT_STATE, DriverError, StateError

if TYPE_CHECKING:  # pragma: no cover
    from slurm_gpu.devices.api import Driver
    from slurm_gpu.state.journal import Journal

__all__ = ["Check", "HealthReport", "check_health", "summary", "SEEN_FILE", "REASON_PREFIX"]

SEEN_FILE = "health-orphans.json"  # first time each orphan was seen, so its age survives between runs
REASON_PREFIX = "slurm-gpu health:"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    exit_code: int = EXIT_OK
    transient: bool = False  # our own passing problem: reported, never a reason to drain


@dataclass
class HealthReport:
    checks: List[Check] = field(default_factory=list)

    @property
    def failed(self) -> Optional[Check]:
        return next((c for c in self.checks if not c.ok and not c.transient), None)

    @property
    def exit_code(self) -> int:
        bad = self.failed
        return bad.exit_code if bad else EXIT_OK

    @property
    def reason(self) -> str:
        """One line for ``sinfo -R`` (empty when healthy)."""
        bad = self.failed
        return f"{REASON_PREFIX} {bad.name}: {bad.detail}" if bad else ""

    def to_dict(self) -> Dict[str, Any]:
        return {
            "healthy": self.failed is None,
            "reason": self.reason,
            "checks": [c.__dict__ for c in self.checks],
        }


def check_health(driver: Driver, journal: Journal, orphan_minutes: float = 30.0,
                 now: Optional[float] = None) -> HealthReport:
    """Run every check once; read-only except for the orphan first-seen file in the journal directory."""
    report = HealthReport()
    try:
        gpus = driver.gpus()
        instances = driver.instances()
    except DriverError as exc:
        report.checks.append(Check("driver", False, str(exc), EXIT_DRIVER))
        return report  # nothing else can be judged without the driver
    report.checks.append(Check("driver", True, f"{len(gpus)} GPU(s)"))
    report.checks.append(_mig_mode(gpus, journal))
    report.checks.append(_orphans(instances, journal, orphan_minutes, time.time() if now is None else now))
    report.checks.append(_journal(journal))
    return report


def _mig_mode(gpus: List[Any], journal: Journal) -> Check:
    from slurm_gpu.core.catalog import load_catalog

    catalog = load_catalog()
    bad = []
    for g in gpus:
        if g.model is None:
            continue
        if g.mig_pending != g.mig_current:
            bad.append(f"GPU {g.index} MIG mode change pending (needs an idle GPU and a reset)")
        elif not g.mig_current and catalog.model(g.model).mode_change_requires_reset:
            bad.append(f"GPU {g.index} ({g.model}) not in MIG mode "
                       f"(nvidia-smi -i {g.index} -mig 1, then reset)")
    if bad:
        return Check("mig_mode", False, "; ".join(bad), EXIT_CONFIG)
    return Check("mig_mode", True, "as configured")


def _orphans(instances: List[Any], journal: Journal, minutes: float, now: float) -> Check:
    from slurm_gpu.core.ownership import match

    try:
        records = journal.jobs()
    except StateError as exc:  # a hook replacing a file: ask again next interval
        return Check("orphans", False, f"journal unreadable now: {exc}", EXIT_STATE, transient=True)
    owners = match(records, instances)
    orphans = {_key(instances[n]) for n in owners.unclaimed()}
    seen = _read_seen(journal.state_dir)
    seen = {k: t for k, t in seen.items() if k in orphans}
    for k in orphans:
        seen.setdefault(k, now)
    saved = _write_seen(journal.state_dir, seen)
    old = sorted(k for k, t in seen.items() if now - t >= minutes * 60)
    if old:
        return Check("orphans", False, f"{len(old)} orphan instance(s) older than {minutes:g} min "
                     f"({', '.join(old[:4])}); is slurm-gpu reconcile running?", EXIT_STATE)
    note = "" if saved else " (first-seen times not saved)"
    return Check("orphans", True, f"{len(orphans)} orphan(s), none older than {minutes:g} min{note}")


def _journal(journal: Journal) -> Check:
    try:
        problems = journal.problems()
    except StateError as exc:
        return Check("journal", False, f"unreadable now: {exc}", EXIT_STATE, transient=True)
    if problems:
        first = problems[0]
        return Check("journal", False, f"{len(problems)} problem(s): {first.path}: {first.reason}",
                     EXIT_STATE)
    return Check("journal", True, "clean")


def _key(inst: Any) -> str:
    # MIG UUIDs are new for every instance; a GI without a CI is known by GPU and id
    return inst.mig_uuid or f"GPU{inst.gpu_index}/GI{inst.gi_id}"


def _read_seen(state_dir: str) -> Dict[str, float]:
    try:
        with open(os.path.join(state_dir, SEEN_FILE), encoding="utf-8") as fh:
            data = json.load(fh)
        return {str(k): float(v) for k, v in data.items()}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def _write_seen(state_dir: str, seen: Dict[str, float]) -> bool:
    from slurm_gpu.state.fsutil import atomic_write

    try:
        atomic_write(os.path.join(state_dir, SEEN_FILE), json.dumps(seen, sort_keys=True))
        return True
    except (StateError, OSError):
        return False


def summary(report: HealthReport) -> Tuple[str, ...]:
    """One line per check, for people."""
    return tuple(f"{'ok  ' if c.ok else ('warn' if c.transient else 'FAIL')} {c.name}: {c.detail}"
                 for c in report.checks)
