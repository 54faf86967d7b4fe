"""The node agent: the use cases behind Slurm's hooks on a dynamic-MIG node.

- ``prepare(job)`` (Prolog): check the job's recorded request against what Slurm allocated, plan on the
  node's real state, journal, create, grant device access, leave the TaskProlog file, republish features.
- ``release(job)`` (Epilog): destroy what the journal says the job owns, idempotently.
- ``reconcile(dry_run)``: driver vs journal vs Slurm; reap orphans, never touch an active job's instance.
- ``publish_features()``: what the node can still host, told to Slurm (``node.publish``), exact after
  every change.

Each hook reads its node once under the lock (``node.snapshot``) and decides from that view. Everything
it talks to is handed in (driver, journal, Slurm adapter, publisher), so tests run it on the simulated
driver with a temporary journal. No method raises for a packing problem: a job that does not fit is
requeued and the outcome says so, because a failing Prolog drains the node.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Set, Tuple

from slurm_gpu.core.errors import DriverError, LockTimeout, NoFitError, SlurmError, SlurmGpuError, StateError
from slurm_gpu.core.ownership import match
from slurm_gpu.core.vocab import HookAction, InstanceState, Phase
from slurm_gpu.devices import access
from slurm_gpu.node import cdi, hpcjobs
from slurm_gpu.node.allocation import allocated_on, check_allocation, resolve_request
from slurm_gpu.node.context import AgentPolicy, JobContext, Outcome
from slurm_gpu.node.destroy import NODE_FAULT_CODES, busy_reason, create_retrying, destroy_gi
from slurm_gpu.node.publish import Publisher, publisher_for
from slurm_gpu.node.snapshot import NodeSnapshot, read_gpus, read_snapshot

if TYPE_CHECKING:
    from slurm_gpu.core.catalog import Catalog, GpuModel
    from slurm_gpu.core.planner import PlannedInstance
    from slurm_gpu.devices.api import Driver, GpuInfo, MigInstance
    from slurm_gpu.node.reconcile import ReconcileReport
    from slurm_gpu.slurm.api import SlurmAdapter
    from slurm_gpu.slurm.parse import JobInfo, MigRequest
    from slurm_gpu.state.api import JournalStore

__all__ = ["NodeAgent"]


@dataclass(frozen=True)
class _Verdict:
    """What the locked part of a prepare decided: a plan to create, or an outcome to act on outside."""

    planned: Tuple[PlannedInstance, ...] = ()
    request: str = ""  # the request as journalled, resolved for this node's GPUs
    refuse: str = ""  # hold the job with this reason
    requeue: Tuple[str, str] = ("", "")  # (why, detail)
    driver_error: Optional[Tuple[str, DriverError]] = None
    done: Optional[Outcome] = None  # prepared already


class NodeAgent:
    """The use cases of one node, over the driver, journal and Slurm seams."""

    def __init__(self, node: str, driver: Driver, journal: JournalStore, slurm: SlurmAdapter,
                 policy: Optional[AgentPolicy] = None, catalog: Optional[Catalog] = None,
                 publisher: Optional[Publisher] = None):
        self.node = node
        self.driver = driver
        self.journal = journal
        self.slurm = slurm
        self.policy = policy or AgentPolicy()
        if catalog is None:
            from slurm_gpu.core.catalog import load_catalog

            catalog = load_catalog()
        self.catalog = catalog
        self.publisher: Publisher = publisher or publisher_for(
            slurm, self.policy.admission, self.policy.max_count_per_node, self.policy.publish_features)
        self._profiles: Dict[str, GpuModel] = {}  # each model's driver profile table, read once
        self._after_release: Optional[NodeSnapshot] = None  # the node as the last release left it
        self._replan_due = False  # a release(publish=False) left its re-plan to publish_after_release

    # ------------------------------------------------------------------ node state
    def snapshot(self) -> NodeSnapshot:
        """The node read once (GPUs, instances, profile tables, journal): take it under the lock when
        deciding on it."""
        return read_snapshot(self.driver, self.journal, self.catalog, self.policy.enable_mig_mode,
                             self._profiles)

    def _read_gpus_early(self) -> None:
        """The GPUs and profile tables, read while Slurm answers the job read a hook started with the
        agent (``node.snapshot.read_gpus``): the node read under the lock then asks the driver only what
        can change. Nothing is decided on it; a driver that fails fails that node read again, where its
        error is handled."""
        try:
            read_gpus(self.driver, self.catalog, self._profiles)
        except DriverError:
            pass

    def publish_features(self, snap: Optional[NodeSnapshot] = None) -> Tuple[str, ...]:
        """Tell Slurm what the node can still host (``node.publish``); returns what was published."""
        return self.publisher.publish(self.node, (snap or self.snapshot()).state())

    def _publish_quietly(self, problems: List[str], snap: Optional[NodeSnapshot] = None) -> None:
        try:
            self.publish_features(snap)
        except SlurmGpuError as exc:
            problems.append(f"publishing features: {exc}")

    # ------------------------------------------------------------------ prepare (Prolog)
    def prepare(self, ctx: JobContext) -> Outcome:
        """Create the job's instances. Only what Slurm alone controls is trusted: the recorded request
        (admin comment, set by job_submit.lua) checked against this node's allocation (gres detail)."""
        self._read_gpus_early()
        job = self.slurm.job(ctx.base_job_id)
        try:
            req = job.request()
        except SlurmGpuError as exc:
            return self._seal_or_refuse(ctx, job, f"unreadable request: {exc}")
        slices, typed = allocated_on(job, self.node)
        if req is None and slices == 0:
            problems: List[str] = []
            self._seal(ctx, [], problems)  # no instance, no whole GPU of ours
            return Outcome(ctx.job_id, HookAction.NONE, "not a MIG job", problems=problems)
        if req is None:
            return self._seal_or_refuse(ctx, job, f"{job.tres_per_node} allocated without a recorded request")
        # Counts: an ending job's slot is free in Slurm before its Epilog ran: wait for that, not requeue.
        deadline = time.monotonic() + self.publisher.wait_for_release_s
        try:
            while True:
                with self.journal.lock():
                    with self.publisher.reading(self.node):  # Slurm answers while the GPUs are read
                        verdict, snap = self._decide_locked(ctx, req, slices, typed, self.snapshot())
                    problems = self._claim_locked(ctx, verdict, snap) if verdict.planned else []
                if not verdict.requeue[0] or time.monotonic() >= deadline:
                    break
                time.sleep(self.policy.create_busy_poll_s)
        except LockTimeout as exc:
            # The lock's holder publishes the node when it is done: nothing to publish from here.
            return self._requeue(ctx, job, f"node lock of {self.node} busy", str(exc), publish=False)
        if verdict.done is not None:
            return verdict.done
        if verdict.refuse:
            return self._seal_or_refuse(ctx, job, verdict.refuse, snap.gpus)
        if verdict.driver_error is not None:
            return self._driver_failed(ctx, job, *verdict.driver_error)
        if not verdict.planned:
            return self._requeue(ctx, job, *verdict.requeue)
        return self._create(ctx, job, verdict.planned, snap, problems)

    def _decide_locked(self, ctx: JobContext, req: MigRequest, slices: int, typed: Dict[str, int],
                       snap: NodeSnapshot) -> Tuple[_Verdict, NodeSnapshot]:
        """Under the lock, from one read of the node: check the request, reuse (or roll back) an earlier
        attempt, plan. Returns the verdict and the node it was made on."""
        from slurm_gpu.slurm.parse import format_admin_comment

        here = self.catalog_models(snap.gpus)  # as job_submit.lua saw the models: the catalog's
        try:
            req, most = resolve_request(req, here, self.catalog_models())
        except SlurmGpuError as exc:
            return _Verdict(refuse=f"request {format_admin_comment(req)} does not resolve: {exc}"), snap
        why = check_allocation(req, slices, typed, most, here, self.catalog_models(), self.node,
                               self.policy.max_count_per_node)
        if why:
            return _Verdict(refuse=why), snap
        done, snap = self._already_prepared(ctx, snap)
        if done is not None:
            return _Verdict(done=done), snap
        try:
            planned = tuple(self.publisher.place(self.node, snap.state(), req.profile, req.count))
        except (NoFitError, SlurmError) as exc:  # the promise has no room, or Slurm could not say it
            return _Verdict(requeue=(f"no placement for {req.count}x{req.profile} on {self.node}",
                                     str(exc) + self._mig_off_note(snap))), snap
        try:
            self._enable_mig(planned, snap)
        except DriverError as exc:
            return _Verdict(driver_error=(f"cannot enable MIG mode on {self.node}", exc)), snap
        return _Verdict(planned=planned, request=format_admin_comment(req)), snap

    def _claim_locked(self, ctx: JobContext, verdict: _Verdict, snap: NodeSnapshot) -> List[str]:
        """Journal the intent, which claims the placements for every other hook until the instances
        exist, and publish the node as it will be: publishing under the lock keeps the last word exact."""
        from slurm_gpu.state.records import Planned

        uuids = {g.index: g.uuid for g in snap.gpus}
        self.journal.begin_prepare(ctx.job_id, ctx.uid, ctx.gid, verdict.request,
                                   [Planned.from_any(p, uuids[p.gpu_index]) for p in verdict.planned])
        problems: List[str] = []
        try:
            self.publisher.after_claim(self.node, snap.with_placed(verdict.planned).state())
        except SlurmGpuError as exc:
            problems.append(f"publishing: {exc}")
        return problems

    def _create(self, ctx: JobContext, job: JobInfo, planned: Sequence[PlannedInstance],
                snap: NodeSnapshot, problems: List[str]) -> Outcome:
        """Create the planned instances outside the node lock (driver calls may take seconds each: other
        jobs' hooks must not wait for them), journalling each under the lock as it appears."""
        created: List[MigInstance] = []
        try:
            for n, p in enumerate(planned):
                inst = create_retrying(self.driver, p.gpu_index, p.profile_id, p.start,
                                       self.policy.create_busy_wait_s, self.policy.create_busy_poll_s)
                created.append(inst)
                if n + 1 < len(planned):  # the last one is journalled with the prepare's end
                    with self.journal.lock():
                        self.journal.record_created(ctx.job_id, n, inst)
        except DriverError as exc:
            # Something the journal does not know holds the slices, or the GPU failed: undo, then requeue
            # (or drain the node on purpose when the GPU itself is broken), and let reconcile look.
            with self.journal.lock():
                self._release_locked(ctx.job_id, problems)
            out = self._driver_failed(ctx, job, f"driver refused a planned instance on {self.node}", exc)
            out.problems.extend(problems)
            return out
        mig_uuids = tuple(i.mig_uuid or "" for i in created)
        with self.journal.lock():
            self.journal.record_created(ctx.job_id, len(created) - 1, created[-1], complete=True)
            self._grant(ctx, created)
            try:
                self.journal.write_task_env(ctx.job_id, ctx.uid, ctx.gid, mig_uuids)
            except StateError as exc:
                # The user's own task directory is theirs to spoil (a planted directory, say): their
                # job, not the node, pays for it.
                self._release_locked(ctx.job_id, problems)
                out = self._refuse(ctx, job, f"cannot leave the task file: {exc}")
                out.problems.extend(problems)
                return out
            hpcjobs.write_mappings(self.policy.hpc_job_mapping_dir, ctx.job_id, created, problems)
            minors = {g.index: g.minor for g in snap.gpus}
            cdi.write_spec(self.policy.cdi_dir, ctx.job_id, ctx.gid, created, minors,
                           os.path.dirname(self.policy.caps_dir), problems)
        cgroup = self._seal(ctx, created, problems, snap.gpus)
        detail = ", ".join(f"GPU {i.gpu_index} {p.profile_name}@{i.start}" for i, p in zip(created, planned))
        if cgroup:
            detail += f"; sealed {cgroup}"
        return Outcome(ctx.job_id, HookAction.CREATED, detail, mig_uuids, problems)

    def catalog_models(self, gpus: Optional[Sequence[GpuInfo]] = None) -> List[GpuModel]:
        """The catalog's models (of ``gpus`` only, in their order, when given)."""
        keys = self.catalog.keys() if gpus is None else [g.model for g in gpus if g.model is not None]
        return [self.catalog.model(k) for k in keys]

    def _already_prepared(self, ctx: JobContext,
                          snap: NodeSnapshot) -> Tuple[Optional[Outcome], NodeSnapshot]:
        """A Prolog run twice for one job start: reuse a complete record, roll back a half one (and
        return the node as it is after the rollback)."""
        rec = self.journal.get(ctx.job_id)
        if rec is None:
            return None, snap
        if rec.phase == Phase.PREPARE_COMPLETED and rec.uid == ctx.uid:
            live = {(i.gpu_index, i.gi_id) for i in snap.instances}
            if all((i.planned.gpu_index, i.actual.gi_id) in live for i in rec.instances if i.actual):
                uuids = tuple(i.actual.mig_uuid for i in rec.instances if i.actual)
                self.journal.write_task_env(ctx.job_id, ctx.uid, ctx.gid, uuids)
                return Outcome(ctx.job_id, HookAction.CREATED, "already prepared", uuids), snap
        problems: List[str] = []
        if not self._release_locked(ctx.job_id, problems, snap=snap):
            raise StateError(f"job {ctx.job_id}: an earlier attempt cannot be rolled back: {problems}")
        return None, self._after_release or self.snapshot()

    def _mig_off_note(self, snap: NodeSnapshot) -> str:
        """Name the GPUs a hook will not switch to MIG mode (Ampere needs a reset: an admin's job)."""
        off = [f"GPU {g.index} ({g.model})" for g in snap.gpus
               if not g.mig_current and snap.models[g.index].mode_change_requires_reset]
        return (f"; {', '.join(off)} not in MIG mode and needs a GPU reset to enable it "
                "(nvidia-smi -i <index> -mig 1, then reset the idle GPU)") if off else ""

    def _enable_mig(self, planned: Sequence[PlannedInstance], snap: NodeSnapshot) -> None:
        wanted = {p.gpu_index for p in planned}
        for g in snap.gpus:
            if g.index in wanted and not g.mig_current:
                self.driver.set_mig_mode(g.index, True)

    def _grant(self, ctx: JobContext, mine: Sequence[MigInstance]) -> None:
        """The job's cap files to its user (0400)."""
        access.grant(ctx.uid, ctx.gid, mine, self.policy.caps_dir)

    def _seal(self, ctx: JobContext, mine: Sequence[MigInstance], problems: List[str],
              gpus: Optional[Sequence[GpuInfo]] = None) -> Optional[str]:
        """Deny the job every capability and GPU of this node but its own (``access.seal``); returns the
        cgroup written. A failure is a problem of this job only: it is reported, never a drain."""
        if not self.policy.cgroup_root:
            return None
        try:
            if gpus is None:
                gpus = [g for g in self.driver.gpus() if g.model is not None]
            minor_of = {g.index: g.minor for g in gpus}
            denied = access.seal_devices([(g.minor, self.driver.cap_minors(g.minor)) for g in gpus],
                                         {minor_of[i.gpu_index] for i in mine if i.gpu_index in minor_of},
                                         mine, access.caps_major(self.policy.caps_dir))
            return access.seal(ctx.job_id, ctx.uid, denied, self.policy.cgroup_root, node=self.node)
        except SlurmGpuError as exc:
            problems.append(f"device cgroup not sealed: {exc}")
            return None

    def _seal_or_refuse(self, ctx: JobContext, job: JobInfo, why: str,
                        gpus: Optional[Sequence[GpuInfo]] = None) -> Outcome:
        """Refuse the job's request (it gets no instance) and still confine it like any job."""
        out = self._refuse(ctx, job, why)
        self._seal(ctx, [], out.problems, gpus)
        return out

    def driver_broken(self, ctx: JobContext, hook: str, exc: DriverError) -> Outcome:
        """A hook's driver call failed outside any planned step (reading GPUs or instances): the node
        drains itself with the reason (never a bare "Prolog error"); a Prolog's job goes back to the queue.
        What the job may own stays in the journal for reconcile."""
        problems: List[str] = []
        self._drain(f"slurm-gpu {hook}: GPU driver failure: {exc}", problems)
        if hook != "prolog":
            return Outcome(ctx.job_id, HookAction.PARTIAL, f"node drained: {exc}", problems=problems)
        try:
            job = self.slurm.job(ctx.base_job_id)
            self.slurm.requeue(job.job_id, f"{self.node} drained: GPU driver failure", job.admin_comment)
        except SlurmError as err:
            problems.append(f"requeue failed: {err}")
        self.journal.log_event("requeued", ctx.job_id, self.node, "GPU driver failure", str(exc))
        return Outcome(ctx.job_id, HookAction.REQUEUED, f"node drained: {exc}", problems=problems)

    def _drain(self, reason: str, problems: List[str]) -> None:
        """Take this node out of service on purpose, with ``reason`` for ``sinfo -R``."""
        try:
            self.slurm.drain(self.node, reason)
        except SlurmError as err:
            problems.append(f"drain failed: {err}")

    def _driver_failed(self, ctx: JobContext, job: JobInfo, why: str, exc: DriverError) -> Outcome:
        """A driver error while preparing: a broken GPU or driver drains the node on purpose, once, with
        the reason, and sends the job elsewhere; anything else is a race the job retries."""
        if exc.nvml_code not in NODE_FAULT_CODES:
            busy = busy_reason(exc)
            return self._requeue(ctx, job, f"{why}: {busy}" if busy else why, str(exc))
        problems: List[str] = []
        self._drain(f"slurm-gpu: GPU or driver failure: {exc}", problems)
        out = self._requeue(ctx, job, f"{self.node} drained: GPU or driver failure", str(exc))
        out.problems[:0] = problems
        return out

    def _refuse(self, ctx: JobContext, job: JobInfo, why: str) -> Outcome:
        """Create nothing; hold the job (an admin must look) with the reason in its admin comment."""
        try:
            self.slurm.hold(job.job_id, why, job.admin_comment)
            return Outcome(ctx.job_id, HookAction.REFUSED, f"held: {why}")
        except SlurmError as exc:
            try:
                self.slurm.cancel(job.job_id, why, job.admin_comment)
                return Outcome(ctx.job_id, HookAction.REFUSED, f"cancelled: {why}",
                               problems=[f"hold failed: {exc}"])
            except SlurmError as exc2:
                return Outcome(ctx.job_id, HookAction.REFUSED, why,
                               problems=[f"hold failed: {exc}", f"cancel failed: {exc2}"])

    def _requeue(self, ctx: JobContext, job: JobInfo, why: str, detail: str, publish: bool = True) -> Outcome:
        """A packing race: send the job back to the queue and count the event in the journal history."""
        problems: List[str] = []
        event = HookAction.REQUEUED
        try:
            self.slurm.requeue(job.job_id, why, job.admin_comment)
        except SlurmError as exc:
            # Interactive jobs cannot be requeued: cancel rather than run without the GPUs it asked for.
            problems.append(f"requeue failed: {exc}")
            event = HookAction.CANCELLED
            try:
                self.slurm.cancel(job.job_id, why, job.admin_comment)
            except SlurmError as exc2:
                problems.append(f"cancel failed: {exc2}")
        self.journal.log_event(str(event), ctx.job_id, self.node, why, detail)
        if publish:  # what made Slurm start the job here may have been stale: say again what fits
            try:
                self.publisher.prefetch()
                with self.journal.lock():
                    self._publish_quietly(problems)
            except LockTimeout as exc:
                problems.append(f"publishing features: {exc}")
        return Outcome(ctx.job_id, event, f"{why}: {detail}", problems=problems)

    # ------------------------------------------------------------------ release (Epilog)
    def release(self, ctx: JobContext, publish: bool = True) -> Outcome:
        """Destroy the job's instances. Processes still leaving an instance are waited for with the node
        lock released between tries, so no other job's hook waits behind this one. ``publish=False``:
        the re-plan of the node is left to :meth:`publish_after_release`."""
        deadline = time.monotonic() + self.policy.release_wait_s
        self._replan_due = False
        try:
            while True:
                problems: List[str] = []
                busy: List[str] = []
                if publish and self.journal.get(ctx.job_id) is not None:  # ours: its end re-plans the node
                    self.publisher.prefetch()
                with self.journal.lock():
                    if self.journal.get(ctx.job_id) is None:
                        self.journal.remove_task_env(ctx.job_id)
                        cdi.remove_spec(self.policy.cdi_dir, ctx.job_id, problems)
                        return Outcome(ctx.job_id, HookAction.NONE, "no instances recorded")
                    complete = self._release_locked(ctx.job_id, problems, busy)
                    if complete or not busy or time.monotonic() >= deadline:
                        if publish:
                            self._publish_quietly(problems, self._after_release)
                        self._replan_due = not publish
                        break
                time.sleep(self.policy.release_poll_s)
        except LockTimeout as exc:
            return Outcome(ctx.job_id, HookAction.PARTIAL, f"node lock busy, left for reconcile: {exc}")
        finally:
            access.unseal(ctx.job_id, ctx.uid, self.policy.cgroup_root, node=self.node)
        if complete:
            return Outcome(ctx.job_id, HookAction.RELEASED, problems=problems)
        return Outcome(ctx.job_id, HookAction.PARTIAL, "left in releasing state for reconcile",
                       problems=problems)

    def publish_after_release(self) -> List[str]:
        """The re-plan a ``release(publish=False)`` left (none if it released nothing of ours): the queue
        read, then the node read anew and published under the lock. Never raises: returns the problems."""
        problems: List[str] = []
        if self._replan_due:
            self._replan_due = False
            self.publisher.prefetch()
            # The search for the target outside the lock: the Prolog of the job Slurm starts on the
            # freed slot (or the next Epilog) takes the lock meanwhile, and the publish below confirms it.
            try:
                self.publisher.plan_ahead(self.node, self.snapshot().state())
            except SlurmGpuError:
                pass  # a node read failing here fails under the lock too, and is reported there
            try:
                with self.journal.lock():
                    self._publish_quietly(problems)
            except SlurmGpuError as exc:  # a lock timeout among them
                problems.append(f"publishing features: {exc}")
        return problems

    def _release_locked(self, job_id: str, problems: List[str], busy: Optional[List[str]] = None,
                        snap: Optional[NodeSnapshot] = None) -> bool:
        """Destroy the job's instances (under the lock); True when its record is gone. With ``busy``, an
        instance still in use is not waited for but named there (the caller retries without the lock).
        Leaves the node as it then is in ``_after_release``."""
        rec = self.journal.begin_release(job_id)
        if rec is None:
            self.journal.remove_task_env(job_id)
            cdi.remove_spec(self.policy.cdi_dir, job_id, problems)
            self._after_release = snap
            return True
        snap = snap or self.snapshot()
        records = [r for r in snap.records if r.job_id != job_id] + [rec]
        owners = match(records, snap.instances)
        gone: Set[Tuple[int, int]] = set()
        all_ok = True
        for n, item in enumerate(rec.instances):
            if item.state == InstanceState.RELEASED:
                continue
            at = owners.instance_of(job_id, n)
            # Not found, or another job claims it too (its placement): nothing of ours to destroy.
            found = [] if at is None or owners.contested(at) else [snap.instances[at]]
            ok = True
            for gi in {(i.gpu_index, i.gi_id) for i in found}:
                entries = [i for i in snap.instances if (i.gpu_index, i.gi_id) == gi]
                if self._destroy(gi[0], gi[1], entries, problems, busy):
                    gone.add(gi)
                else:
                    ok = False
            if ok:
                self.journal.record_released(job_id, n)
            all_ok = all_ok and ok
        if all_ok:
            self.journal.finish_release(job_id)
            cdi.remove_spec(self.policy.cdi_dir, job_id, problems)
        self._after_release = snap.without(job_id, gone, closed=all_ok)
        return all_ok

    def _destroy(self, gpu_index: int, gi_id: int, insts: Sequence[MigInstance], problems: List[str],
                 busy: Optional[List[str]] = None) -> bool:
        gone = destroy_gi(self.driver, gpu_index, gi_id, insts, self.policy.caps_dir,
                          self.policy.release_wait_s, self.policy.release_poll_s, problems, busy)
        if gone:
            hpcjobs.remove_mapping(self.policy.hpc_job_mapping_dir, gpu_index, gi_id, problems)
        return gone

    # ------------------------------------------------------------------ reconcile
    def reconcile(self, dry_run: bool = False) -> ReconcileReport:
        """Compare driver, journal and Slurm and repair under the node lock (``node.reconcile``); drop
        the CDI specs of jobs the journal no longer knows (an Epilog that never ran)."""
        from slurm_gpu.node.reconcile import reconcile

        def publish(problems: List[str]) -> None:  # under the lock, after the repairs
            self._publish_quietly(problems)
            cdi.sweep(self.policy.cdi_dir, {r.job_id for r in self.journal.scan()[0]}, problems)

        return reconcile(self.node, self.driver, self.journal, self.slurm, self._destroy, publish, dry_run)
