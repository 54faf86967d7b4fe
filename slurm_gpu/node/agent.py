"""The node agent: the use cases behind Slurm's hooks on a dynamic-MIG node.

- ``prepare(job)`` (Prolog): check the job's recorded request against what Slurm allocated, plan on the
  node's real state, journal, create, grant device access, leave the TaskProlog file, republish features.
- ``release(job)`` (Epilog): destroy what the journal says the job owns, idempotently.
- ``reconcile(dry_run)``: driver vs journal vs Slurm; reap orphans, never touch an active job's instance.
- ``publish_features()``: the node's ``mig.<profile>.<k>`` fit features, exact after every change.

Everything it talks to is handed in (driver, journal, Slurm adapter), so tests run it on the simulated
driver with a temporary journal. No method raises for a packing problem: a job that does not fit is
requeued and the outcome says so, because a failing Prolog drains the node.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from slurm_gpu.core.errors import DriverError, LockTimeout, NoFitError, SlurmError, SlurmGpuError, StateError

__all__ = ["JobContext", "AgentPolicy", "Outcome", "Action", "ReconcileReport", "NodeAgent"]

NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_IN_USE = 19
# NVML errors that say the GPU or driver is broken, not that slices are taken (nvml.h): INSUFFICIENT_POWER,
# DRIVER_NOT_LOADED, IRQ_ISSUE, LIBRARY_NOT_FOUND, CORRUPTED_INFOROM, GPU_IS_LOST, RESET_REQUIRED,
# OPERATING_SYSTEM, LIB_RM_VERSION_MISMATCH, UNKNOWN. A node hitting one drains itself with the reason.
NODE_FAULT_CODES = frozenset({8, 9, 11, 12, 14, 15, 16, 17, 18, 999})


@dataclass(frozen=True)
class JobContext:
    """What a hook knows about its job from Slurm's environment."""

    job_id: str
    uid: int
    gid: int

    @classmethod
    def from_env(cls, environ: Optional[Dict[str, str]] = None) -> JobContext:
        env = os.environ if environ is None else environ
        try:
            return cls(env["SLURM_JOB_ID"], int(env["SLURM_JOB_UID"]), int(env["SLURM_JOB_GID"]))
        except (KeyError, ValueError) as exc:
            from slurm_gpu.core.errors import BadInputError

            raise BadInputError(f"hook environment lacks a usable {exc}", part=str(exc)) from None


@dataclass(frozen=True)
class AgentPolicy:
    """Knobs of the agent; defaults suit production."""

    max_count_per_node: int = 8
    release_wait_s: float = 10.0  # how long the Epilog waits for processes to leave an instance
    release_poll_s: float = 0.2
    caps_dir: str = "/dev/nvidia-caps"
    cgroup_root: Optional[str] = "/sys/fs/cgroup/devices"
    enable_mig_mode: bool = True  # switch idle Hopper+ GPUs to MIG mode on demand
    publish_features: bool = True


@dataclass
class Outcome:
    """What a hook did; ``action``: none, created, refused, requeued, cancelled, released, partial."""

    job_id: str
    action: str
    message: str = ""
    mig_uuids: Tuple[str, ...] = ()
    problems: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass
class Action:
    """One step of ``reconcile``: ``kind`` is a ``reconcile_plan`` kind (destroy, destroy_orphan,
    mark_released, finish_release, adopt, report)."""

    kind: str
    detail: str
    job_id: Optional[str] = None
    gpu_index: Optional[int] = None
    gi_id: Optional[int] = None
    done: bool = False
    error: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass
class ReconcileReport:
    dry_run: bool
    actions: List[Action] = field(default_factory=list)
    active_jobs: Tuple[str, ...] = ()
    slurm_error: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return {"dry_run": self.dry_run, "active_jobs": list(self.active_jobs),
                "slurm_error": self.slurm_error, "actions": [a.to_dict() for a in self.actions]}


class NodeAgent:
    """The use cases of one node. ``slurm`` is a ``SlurmCli`` (or anything with its methods)."""

    def __init__(self, node: str, driver: Any, journal: Any, slurm: Any, policy: Optional[AgentPolicy] = None,
                 catalog: Any = None):
        self.node = node
        self.driver = driver
        self.journal = journal
        self.slurm = slurm
        self.policy = policy or AgentPolicy()
        if catalog is None:
            from slurm_gpu.core.catalog import load_catalog

            catalog = load_catalog()
        self.catalog = catalog
        self._models: Dict[str, Any] = {}

    # ------------------------------------------------------------------ node state
    def _gpus(self) -> List[Any]:
        """GPUs of known MIG-capable models (others are not ours to manage)."""
        return [g for g in self.driver.gpus() if g.model is not None]

    def node_state(self, claim_planned: bool = True) -> Any:
        """The node's occupancy: the driver's instances plus placements journalled but not yet seen
        (an interrupted prolog), so nothing is planned on top of them."""
        from slurm_gpu.core.geometry import GpuState, NodeState, Slot

        gpus = self._gpus()
        slots: Dict[int, Dict[int, Slot]] = {g.index: {} for g in gpus}
        for inst in self.driver.instances():
            if inst.gpu_index in slots:
                slots[inst.gpu_index][inst.start] = Slot(inst.start, inst.size, inst.profile_id)
        if claim_planned:
            for rec in self.journal.jobs():
                for item in rec.instances:
                    p = item.planned
                    free = p.gpu_index in slots and p.start not in slots[p.gpu_index]
                    if item.state != "released" and free:
                        slots[p.gpu_index][p.start] = Slot(p.start, p.size, p.profile_id)
        states = []
        for g in gpus:
            model = self.model_of(g)
            enabled = bool(g.mig_current) or self._can_enable(g, model)
            states.append(GpuState(g.index, model, tuple(slots[g.index].values()), mig_enabled=enabled))
        return NodeState(tuple(states))

    def model_of(self, gpu: Any) -> Any:
        """The GPU's model with the profile table its driver reports: NVML wins over the catalog file.

        Read once per model and agent (all GPUs of a model share one table); a GPU not in MIG mode has
        no table to read, so the catalog's stands in until it is switched on.
        """
        model = self.catalog.model(gpu.model)
        if not gpu.mig_current:
            return model
        if gpu.model not in self._models:
            self._models[gpu.model] = model.with_driver_profiles(self.driver.read_profiles(gpu.index))
        return self._models[gpu.model]

    def _can_enable(self, gpu: Any, model: Any) -> bool:
        """Hopper and newer switch MIG on without a reset: count such a GPU as MIG-capable now."""
        return self.policy.enable_mig_mode and not model.mode_change_requires_reset

    # ------------------------------------------------------------------ features
    def publish_features(self) -> Tuple[str, ...]:
        """Set the node's fit features in Slurm, keeping the admin's other features; returns the fit set."""
        from slurm_gpu.core.features import active_features, all_features, is_fit_feature
        from slurm_gpu.core.planner import capacity

        node = self.node_state()
        models = [g.model for g in node.gpus]  # one per GPU: counts add up over the node
        max_count = self.policy.max_count_per_node
        fit_all = all_features(models, max_count)
        fit_active = active_features(capacity(node), max_count)
        if not self.policy.publish_features:
            return fit_active
        avail, active = self.slurm.node_features(self.node)
        other_avail = [f for f in avail if not is_fit_feature(f)]
        other_active = [f for f in active if not is_fit_feature(f)]
        new_avail = sorted(set(other_avail) | set(fit_all))
        new_active = sorted(set(other_active) | set(fit_active))
        if new_avail != sorted(set(avail)) or new_active != sorted(set(active)):
            self.slurm.set_features(self.node, new_avail, new_active)
        return fit_active

    def _publish_quietly(self, problems: List[str]) -> None:
        try:
            self.publish_features()
        except SlurmGpuError as exc:
            problems.append(f"publishing features: {exc}")

    # ------------------------------------------------------------------ prepare (Prolog)
    def prepare(self, ctx: JobContext) -> Outcome:
        """Create the job's instances. Only what Slurm alone controls is trusted: the recorded request
        (admin comment, set by job_submit.lua) checked against this node's allocation (gres detail)."""
        from slurm_gpu.slurm.parse import format_admin_comment

        job = self.slurm.job(int(ctx.job_id.split("_")[0]))
        try:
            req = job.request()
        except SlurmGpuError as exc:
            return self._seal_or_refuse(ctx, job, [], f"unreadable request: {exc}")
        slices = job.mig_slices_per_node(self.node)
        if req is None and slices == 0:
            problems: List[str] = []
            self._seal(ctx, [], problems)  # no instance, no whole GPU of ours
            return Outcome(ctx.job_id, "none", "not a MIG job", problems=problems)
        if req is None:
            return self._seal_or_refuse(ctx, job, [], f"mig:{slices} allocated without a recorded request")
        try:
            req, most = self._resolve_request(req)
        except DriverError:
            raise  # the GPUs cannot be read: a broken node, not a bad request (run_job_hook drains it)
        except SlurmGpuError as exc:
            why = f"request {format_admin_comment(req)} does not resolve: {exc}"
            return self._seal_or_refuse(ctx, job, [], why)
        why = self._check_allocation(req, slices, most)
        if why:
            return self._seal_or_refuse(ctx, job, [], why)
        try:
            with self.journal.lock():
                planned = self._plan_locked(ctx, job, req)
        except LockTimeout as exc:
            return self._requeue(ctx, job, f"node lock of {self.node} busy", str(exc))
        if isinstance(planned, Outcome):
            return planned
        return self._create(ctx, job, planned)

    def _plan_locked(self, ctx: JobContext, job: Any, req: Any) -> Any:
        """Under the lock: plan on the node's state and journal the intent, which claims the placements
        for every other hook until the instances exist. Returns the plan or the job's outcome."""
        from slurm_gpu.core.planner import plan
        from slurm_gpu.slurm.parse import format_admin_comment
        from slurm_gpu.state.journal import Planned

        done = self._already_prepared(ctx)
        if done is not None:
            return done
        node = self.node_state()
        try:
            planned = plan(node, req.profile, req.count)
        except NoFitError as exc:
            return self._requeue(ctx, job, f"no placement for {req.count}x{req.profile} on {self.node}",
                                 str(exc) + self._mig_off_note())
        try:
            self._enable_mig(planned)
        except DriverError as exc:
            return self._driver_failed(ctx, job, f"cannot enable MIG mode on {self.node}", exc)
        uuids = {g.index: g.uuid for g in self._gpus()}
        self.journal.begin_prepare(ctx.job_id, ctx.uid, ctx.gid, format_admin_comment(req),
                                   [Planned.from_any(p, uuids[p.gpu_index]) for p in planned])
        return planned

    def _create(self, ctx: JobContext, job: Any, planned: Sequence[Any]) -> Outcome:
        """Create the planned instances outside the node lock (driver calls may take seconds each: other
        jobs' hooks must not wait for them), journalling each under the lock as it appears."""
        problems: List[str] = []
        created = []
        try:
            for n, p in enumerate(planned):
                inst = self.driver.create(p.gpu_index, p.profile_id, p.start)
                with self.journal.lock():
                    self.journal.record_created(ctx.job_id, n, inst)
                created.append(inst)
        except DriverError as exc:
            # Something the journal does not know holds the slices, or the GPU failed: undo, then requeue
            # (or drain the node on purpose when the GPU itself is broken), and let reconcile look.
            with self.journal.lock():
                self._release_locked(ctx.job_id, problems)
            out = self._driver_failed(ctx, job, f"driver refused a planned instance on {self.node}", exc)
            out.problems.extend(problems)
            return out
        mig_uuids = tuple(i.mig_uuid for i in created)
        with self.journal.lock():
            self.journal.finish_prepare(ctx.job_id)
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
            self._publish_quietly(problems)
        cgroup = self._seal(ctx, created, problems)
        detail = ", ".join(f"GPU {i.gpu_index} {p.profile_name}@{i.start}" for i, p in zip(created, planned))
        if cgroup:
            detail += f"; sealed {cgroup}"
        return Outcome(ctx.job_id, "created", detail, mig_uuids, problems)

    def _resolve_request(self, req: Any) -> Tuple[Any, Optional[int]]:
        """A request recorded for a mixed-model cluster (a memory size, or whole GPUs) made concrete.

        Returns the request as a profile of this node's GPUs (the first GPU model that resolves it) and,
        for such requests, the slice count job_submit.lua charged: the largest over the catalog's models.
        """
        models = [self.catalog.model(g.model) for g in self._gpus()]
        if any(m.has_profile(req.profile) for m in models if req.profile):
            return req, None
        from slurm_gpu.core.requests import parse_gres, resolve
        from slurm_gpu.slurm.parse import MigRequest

        gres = parse_gres(f"gpu:{req.profile}:{req.count}" if req.profile else f"gpu:{req.count}")[0]
        charged = []
        for m in self.catalog_models():
            try:
                charged.append(resolve(gres, m).memory_slices * req.count)
            except SlurmGpuError:
                continue
        for m in models:
            try:
                return MigRequest(resolve(gres, m).name, req.count), max(charged, default=None)
            except SlurmGpuError:
                continue
        return req, None  # _check_allocation names what this node lacks

    def _check_allocation(self, req: Any, slices: int, most: Optional[int] = None) -> Optional[str]:
        """Why Slurm's allocation does not match the recorded request (None if it does).

        ``most`` overrides the upper bound of slices for requests resolved per model (memory sizes).
        """
        models = [self.catalog.model(g.model) for g in self._gpus()]
        have = [m.profile(req.profile) for m in models if m.has_profile(req.profile)]
        if not have:
            return f"profile {req.profile} does not exist on the GPUs of {self.node}"
        if req.count > self.policy.max_count_per_node:
            return f"{req.count} instances exceed max_count_per_node={self.policy.max_count_per_node}"
        need = min(p.memory_slices for p in have) * req.count
        # job_submit.lua counts the largest slice size of the profile over every model of the cluster.
        most = max(most or 0, max(m.profile(req.profile).memory_slices for m in self.catalog_models()
                                  if m.has_profile(req.profile)) * req.count)
        if not need <= slices <= most:
            return (f"Slurm allocated mig:{slices} on {self.node} but {req.count}x{req.profile} "
                    f"needs between {need} and {most} slices")
        return None

    def catalog_models(self) -> List[Any]:
        return [self.catalog.model(k) for k in self.catalog.keys()]

    def _already_prepared(self, ctx: JobContext) -> Optional[Outcome]:
        """A Prolog run twice for one job start: reuse a complete record, roll back a half one."""
        rec = self.journal.get(ctx.job_id)
        if rec is None:
            return None
        if rec.phase == "PrepareCompleted" and rec.uid == ctx.uid:
            live = {(i.gpu_index, i.gi_id) for i in self.driver.instances()}
            if all((i.planned.gpu_index, i.actual.gi_id) in live for i in rec.instances if i.actual):
                uuids = tuple(i.actual.mig_uuid for i in rec.instances if i.actual)
                self.journal.write_task_env(ctx.job_id, ctx.uid, ctx.gid, uuids)
                return Outcome(ctx.job_id, "created", "already prepared", uuids)
        problems: List[str] = []
        self._release_locked(ctx.job_id, problems)
        if self.journal.get(ctx.job_id) is not None:
            raise StateError(f"job {ctx.job_id}: an earlier attempt cannot be rolled back: {problems}")
        return None

    def _mig_off_note(self) -> str:
        """Name the GPUs a hook will not switch to MIG mode (Ampere needs a reset: an admin's job)."""
        off = [f"GPU {g.index} ({g.model})" for g in self._gpus()
               if not g.mig_current and self.catalog.model(g.model).mode_change_requires_reset]
        if not off:
            return ""
        return (f"; {', '.join(off)} not in MIG mode and needs a GPU reset to enable it "
                "(nvidia-smi -i <index> -mig 1, then reset the idle GPU)")

    def _enable_mig(self, planned: Sequence[Any]) -> None:
        wanted = {p.gpu_index for p in planned}
        for g in self.driver.gpus():
            if g.index in wanted and not g.mig_current:
                self.driver.set_mig_mode(g.index, True)

    def _grant(self, ctx: JobContext, mine: Sequence[Any]) -> None:
        """The job's cap files to its user (0400)."""
        from slurm_gpu.devices import access

        access.grant(ctx.uid, ctx.gid, mine, self.policy.caps_dir)

    def _seal(self, ctx: JobContext, mine: Sequence[Any], problems: List[str]) -> Optional[str]:
        """Deny the job every capability and GPU of this node but its own (``access.seal``); returns the
        cgroup written. A failure is a problem of this job only: it is reported, never a drain."""
        from slurm_gpu.devices import access

        if not self.policy.cgroup_root:
            return None
        try:
            gpus = self._gpus()
            minor_of = {g.index: g.minor for g in gpus}
            rules = access.seal_rules([(g.minor, self.driver.cap_minors(g.minor)) for g in gpus],
                                      {minor_of[i.gpu_index] for i in mine if i.gpu_index in minor_of},
                                      mine, access.caps_major(self.policy.caps_dir))
            return access.seal(ctx.job_id, ctx.uid, rules, self.policy.cgroup_root, node=self.node)
        except SlurmGpuError as exc:
            problems.append(f"device cgroup not sealed: {exc}")
            return None

    def _seal_or_refuse(self, ctx: JobContext, job: Any, mine: Sequence[Any], why: str) -> Outcome:
        """Refuse the job's request (it gets no instance) and still confine it like any job."""
        out = self._refuse(ctx, job, why)
        self._seal(ctx, mine, out.problems)
        return out

    def driver_broken(self, ctx: JobContext, hook: str, exc: DriverError) -> Outcome:
        """A hook's driver call failed outside any planned step (reading GPUs or instances): the node
        drains itself with the reason (never a bare "Prolog error"); a Prolog's job goes back to the queue.
        What the job may own stays in the journal for reconcile."""
        problems: List[str] = []
        self._drain(f"slurm-gpu {hook}: GPU driver failure: {exc}", problems)
        if hook != "prolog":
            return Outcome(ctx.job_id, "partial", f"node drained: {exc}", problems=problems)
        try:
            job = self.slurm.job(int(ctx.job_id.split("_")[0]))
            self.slurm.requeue(job.job_id, f"{self.node} drained: GPU driver failure", job.admin_comment)
        except SlurmError as err:
            problems.append(f"requeue failed: {err}")
        self._count_event("requeued", ctx.job_id, "GPU driver failure", str(exc))
        return Outcome(ctx.job_id, "requeued", f"node drained: {exc}", problems=problems)

    def _drain(self, reason: str, problems: List[str]) -> None:
        """Take this node out of service on purpose, with ``reason`` for ``sinfo -R``."""
        try:
            self.slurm.drain(self.node, reason)
        except SlurmError as err:
            problems.append(f"drain failed: {err}")

    def _driver_failed(self, ctx: JobContext, job: Any, why: str, exc: DriverError) -> Outcome:
        """A driver error while preparing: a broken GPU or driver drains the node on purpose, once, with
        the reason, and sends the job elsewhere; anything else is a race the job retries."""
        if exc.nvml_code not in NODE_FAULT_CODES:
            return self._requeue(ctx, job, why, str(exc))
        problems: List[str] = []
        self._drain(f"slurm-gpu: GPU or driver failure: {exc}", problems)
        out = self._requeue(ctx, job, f"{self.node} drained: GPU or driver failure", str(exc))
        out.problems[:0] = problems
        return out

    def _refuse(self, ctx: JobContext, job: Any, why: str) -> Outcome:
        """Create nothing; hold the job (an admin must look) with the reason in its admin comment."""
        try:
            self.slurm.hold(job.job_id, why, job.admin_comment)
            return Outcome(ctx.job_id, "refused", f"held: {why}")
        except SlurmError as exc:
            try:
                self.slurm.cancel(job.job_id, why, job.admin_comment)
                return Outcome(ctx.job_id, "refused", f"cancelled: {why}", problems=[f"hold failed: {exc}"])
            except SlurmError as exc2:
                return Outcome(ctx.job_id, "refused", why,
                               problems=[f"hold failed: {exc}", f"cancel failed: {exc2}"])

    def _requeue(self, ctx: JobContext, job: Any, why: str, detail: str) -> Outcome:
        """A packing race: send the job back to the queue and count the event in the journal history."""
        problems: List[str] = []
        event = "requeued"
        try:
            self.slurm.requeue(job.job_id, why, job.admin_comment)
        except SlurmError as exc:
            # Interactive jobs cannot be requeued: cancel rather than run without the GPUs it asked for.
            problems.append(f"requeue failed: {exc}")
            event = "cancelled"
            try:
                self.slurm.cancel(job.job_id, why, job.admin_comment)
            except SlurmError as exc2:
                problems.append(f"cancel failed: {exc2}")
        self._count_event(event, ctx.job_id, why, detail)
        self._publish_quietly(problems)
        return Outcome(ctx.job_id, event, f"{why}: {detail}", problems=problems)

    def _count_event(self, event: str, job_id: str, why: str, detail: str) -> None:
        import json

        from slurm_gpu.state.fsutil import append_line

        line = {"time": time.time(), "event": event, "job_id": job_id, "node": self.node, "reason": why,
                "detail": detail}
        try:
            append_line(self.journal.history_path, json.dumps(line, sort_keys=True, separators=(",", ":")))
        except (OSError, SlurmGpuError):
            pass  # counting must never fail the hook

    # ------------------------------------------------------------------ release (Epilog)
    def release(self, ctx: JobContext) -> Outcome:
        """Destroy the job's instances. Processes still leaving an instance are waited for with the node
        lock released between tries, so no other job's hook waits behind this one."""
        from slurm_gpu.devices import access

        deadline = time.monotonic() + self.policy.release_wait_s
        try:
            while True:
                problems: List[str] = []
                busy: List[str] = []
                with self.journal.lock():
                    if self.journal.get(ctx.job_id) is None:
                        self.journal.remove_task_env(ctx.job_id)
                        return Outcome(ctx.job_id, "none", "no instances recorded")
                    complete = self._release_locked(ctx.job_id, problems, busy)
                    if complete or not busy or time.monotonic() >= deadline:
                        self._publish_quietly(problems)
                        break
                time.sleep(self.policy.release_poll_s)
        except LockTimeout as exc:
            return Outcome(ctx.job_id, "partial", f"node lock busy, left for reconcile: {exc}")
        finally:
            access.unseal(ctx.job_id, ctx.uid, self.policy.cgroup_root, node=self.node)
        if complete:
            return Outcome(ctx.job_id, "released", problems=problems)
        return Outcome(ctx.job_id, "partial", "left in releasing state for reconcile", problems=problems)

    def _release_locked(self, job_id: str, problems: List[str], busy: Optional[List[str]] = None) -> bool:
        """Destroy the job's instances (under the lock); True when its record is gone. With ``busy``, an
        instance still in use is not waited for but named there (the caller retries without the lock)."""
        rec = self.journal.begin_release(job_id)
        if rec is None:
            self.journal.remove_task_env(job_id)
            return True
        live = self.driver.instances()
        others = {(i.planned.gpu_index, i.planned.start) for r in self.journal.jobs() if r.job_id != job_id
                  for i in r.instances if i.state != "released"}
        all_ok = True
        for n, item in enumerate(rec.instances):
            if item.state == "released":
                continue
            p = item.planned
            if item.actual is not None:
                found = [i for i in live if i.gpu_index == p.gpu_index and i.gi_id == item.actual.gi_id
                         and i.start == p.start]
            elif (p.gpu_index, p.start) in others:
                found = []  # another job claims that placement: not ours to destroy
            else:  # planned only: the prolog may have died after creating it
                found = [i for i in live if i.gpu_index == p.gpu_index and i.start == p.start
                         and i.profile_id == p.profile_id]
            ok = True
            for gi_id in sorted({i.gi_id for i in found}):
                mine = [i for i in found if i.gi_id == gi_id]
                ok = self._destroy(p.gpu_index, gi_id, mine, problems, busy) and ok
            if ok:
                self.journal.record_released(job_id, n)
            all_ok = all_ok and ok
        if all_ok:
            self.journal.finish_release(job_id)
        return all_ok

    def _destroy(self, gpu_index: int, gi_id: int, insts: Sequence[Any], problems: List[str],
                 busy: Optional[List[str]] = None) -> bool:
        """Destroy one GPU instance. While processes hold it (IN_USE): with ``busy``, name it there and
        return at once; else wait up to ``release_wait_s``."""
        from slurm_gpu.devices import access

        access.revoke(insts, self.policy.caps_dir)
        deadline = time.monotonic() + self.policy.release_wait_s
        while True:
            try:
                self.driver.destroy(gpu_index, gi_id)
                return True
            except DriverError as exc:
                if exc.nvml_code == NVML_ERROR_NOT_FOUND:
                    return True
                if exc.nvml_code in NODE_FAULT_CODES:
                    raise  # the GPU is broken, not busy: the hook drains the node with this reason
                in_use = exc.nvml_code == NVML_ERROR_IN_USE
                if in_use and busy is not None:
                    busy.append(f"GPU {gpu_index} gi {gi_id}")
                if not in_use or busy is not None or time.monotonic() >= deadline:
                    pids = self._pids(gpu_index, gi_id, insts)
                    problems.append(f"GPU {gpu_index} gi {gi_id} not destroyed: {exc}"
                                    + (f" (processes {pids})" if pids else ""))
                    return False
            time.sleep(self.policy.release_poll_s)

    def _pids(self, gpu_index: int, gi_id: int, insts: Sequence[Any]) -> List[int]:
        pids: List[int] = []
        for i in insts:
            if i.ci_id is None:
                continue
            try:
                pids.extend(self.driver.processes(gpu_index, gi_id, i.ci_id))
            except DriverError:
                pass
        return pids

    # ------------------------------------------------------------------ reconcile
    def reconcile(self, dry_run: bool = False) -> ReconcileReport:
        """Compare driver, journal and Slurm (``reconcile_plan.diff``) and apply the repairs under the node
        lock; with ``dry_run`` only report them. Without an answer from Slurm every recorded job counts
        as running, so only instances that no record claims are touched."""
        from slurm_gpu.core import reconcile_plan as rp

        report = ReconcileReport(dry_run)
        active: Optional[set] = None
        try:
            active = {str(j) for j in self.slurm.active_jobs_on(self.node)}
            report.active_jobs = tuple(sorted(active, key=_job_key))
        except SlurmError as exc:
            report.slurm_error = str(exc)
        with self.journal.lock():
            records = self.journal.jobs()
            running = {r.job_id for r in records if active is None or r.job_id.split("_")[0] in active
                       or r.job_id in active}
            problems = [p for p in self.journal.problems() if p.kind != "stale"]
            for prob in problems:
                report.actions.append(Action("report", f"untrusted journal file {prob.path}: {prob.kind}: "
                                                       f"{prob.reason}", job_id=prob.job_id))
            live = self.driver.instances()
            for step in rp.diff(records, live, running, problems):
                if step.kind == rp.KEEP:
                    continue
                inst = step.instance
                act = Action(step.kind, str(step), job_id=step.job_id,
                             gpu_index=getattr(inst, "gpu_index", None), gi_id=getattr(inst, "gi_id", None))
                report.actions.append(act)
                if dry_run or step.kind == rp.REPORT:
                    continue
                errors: List[str] = []
                try:
                    act.done = self._apply(step, live, errors)
                except SlurmGpuError as exc:
                    errors.append(str(exc))
                act.error = "; ".join(errors) or None
            if not dry_run:
                errors = []
                self._publish_quietly(errors)
                report.actions.extend(Action("report", e, error=e) for e in errors)
        return report

    def _apply(self, step: Any, live: Sequence[Any], errors: List[str]) -> bool:
        from slurm_gpu.core import reconcile_plan as rp

        inst = step.instance
        if step.kind == rp.ADOPT:
            self.journal.record_created(step.job_id, step.index, inst)
            return True
        if step.kind == rp.DESTROY_ORPHAN:
            same = [i for i in live if (i.gpu_index, i.gi_id) == (inst.gpu_index, inst.gi_id)]
            return self._destroy(inst.gpu_index, inst.gi_id, same, errors)
        if step.kind in (rp.DESTROY, rp.MARK_RELEASED):
            self.journal.begin_release(step.job_id)
            if inst is not None:
                same = [i for i in live if (i.gpu_index, i.gi_id) == (inst.gpu_index, inst.gi_id)]
                if not self._destroy(inst.gpu_index, inst.gi_id, same, errors):
                    return False
            self.journal.record_released(step.job_id, step.index)
            return True
        if step.kind == rp.FINISH_RELEASE:
            self.journal.begin_release(step.job_id)
            return bool(self.journal.finish_release(step.job_id))
        return False


def _job_key(job_id: str) -> Tuple[int, int]:
    head, _, tail = job_id.partition("_")
    return (int(head) if head.isdigit() else 0, int(tail) if tail.isdigit() else 0)
