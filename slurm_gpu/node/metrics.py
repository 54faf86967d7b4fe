"""The node's metrics as plain values: what ``slurm-gpu exporter`` exposes, computed without I/O.

``node_families(view)`` turns one ``NodeSnapshot`` (and, where asked, what Slurm says) into metric
families; ``node.hookstats.LogStats`` does the same for the hooks' log lines and ``history.log``. A
``Family`` is a name, a kind, a help text, label names and samples; the exporter's collector
(``cli/collector.py``) hands them to prometheus_client. Names and labels are documented in
docs/monitoring.md: the instance series use dcgm-exporter's label names (``gpu``, the parent ``UUID``,
``GPU_I_ID``, ``GPU_I_PROFILE``, ``Hostname``) so that both join on (host, gpu, GPU_I_ID); job ids and
users appear on ``slurm_gpu_mig_instance_job_info`` only.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from slurm_gpu.core.errors import SlurmGpuError
from slurm_gpu.core.features import is_fit_feature, parse_feature
from slurm_gpu.core.fragmentation import fragmentation
from slurm_gpu.core.ownership import match
from slurm_gpu.core.planner import capacity
from slurm_gpu.core.vocab import InstanceState, Phase

if TYPE_CHECKING:
    from slurm_gpu.core.catalog import GpuModel
    from slurm_gpu.node.snapshot import NodeSnapshot

__all__ = ["Family", "Histogram", "NodeView", "node_families", "feature_counts", "pending_families",
           "profile_names", "PREFIX", "PROBLEM_KINDS"]

PREFIX = "slurm_gpu_"
PROBLEM_KINDS = ("corrupt", "checksum", "version", "stale", "name")  # state.records / docs/journal.md
GPU_LABELS = ("node", "gpu", "UUID")
INSTANCE_LABELS = ("node", "Hostname", "gpu", "UUID", "GPU_I_ID", "GPU_I_PROFILE", "mig_uuid", "ci_id")


@dataclass
class Histogram:
    """Observations in fixed buckets (upper bounds, seconds); ``+Inf`` is implied."""

    bounds: Tuple[float, ...]
    counts: List[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> List[Tuple[str, int]]:
        """``(le, observations <= le)`` pairs as the exposition format wants them, ``+Inf`` last."""
        out, running = [], 0
        for bound, n in zip(list(self.bounds) + [float("inf")], self.counts):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
        return out


@dataclass
class Family:
    """One metric family. ``kind``: gauge, counter (``name`` without ``_total``), histogram or info
    (``name`` without ``_info``, value 1)."""

    name: str
    kind: str
    help: str
    labels: Tuple[str, ...]
    samples: List[Tuple[Tuple[str, ...], float]] = field(default_factory=list)
    histograms: List[Tuple[Tuple[str, ...], Histogram]] = field(default_factory=list)

    def add(self, values: Sequence[object], value: float = 1.0) -> None:
        self.samples.append((tuple("" if v is None else str(v) for v in values), float(value)))


@dataclass(frozen=True)
class NodeView:
    """What one scrape knows of a node. ``fit``: ``FeaturePublisher.fit_features(state)`` (all fit
    features of the node's models, those true now: what Slurm was told); ``slurm_jobs``: job ids Slurm
    still runs here, ``slurm_features``: the node's active features in Slurm (None: not asked or no
    answer); ``user_of`` names a uid."""

    node: str
    hostname: str
    snap: NodeSnapshot
    fit: Tuple[Tuple[str, ...], Tuple[str, ...]]
    slurm_jobs: Optional[Set[str]] = None
    slurm_features: Optional[Sequence[str]] = None
    user_of: Callable[[int], str] = str


def _gauge(name: str, help: str, labels: Sequence[str]) -> Family:
    return Family(PREFIX + name, "gauge", help, tuple(labels))


def feature_counts(features: Sequence[str], profiles: Sequence[str] = ()) -> Dict[str, int]:
    """Profile -> the largest k of the ``mig.<profile>.<k>`` features given (0 for ``profiles`` absent)."""
    out: Dict[str, int] = {p: 0 for p in profiles}
    for f in features:
        if is_fit_feature(f):
            try:
                fit = parse_feature(f)
            except SlurmGpuError:
                continue
            out[fit.profile] = max(out.get(fit.profile, 0), fit.count)
    return out


def _profile_name(model: GpuModel, profile_id: int) -> str:
    try:
        return model.profile_by_id(profile_id).name
    except SlurmGpuError:
        return f"id{profile_id}"


def _gpu_families(view: NodeView) -> List[Family]:
    snap = view.snap
    info = Family(PREFIX + "gpu", "info", "A managed GPU (value 1): its model and NVML name.",
                  GPU_LABELS + ("model_name", "model"))
    mode = _gauge("gpu_mig_mode", "MIG mode now (1 on, 0 off), nvmlDeviceGetMigMode current.", GPU_LABELS)
    pending = _gauge("gpu_mig_mode_pending", "MIG mode after the next GPU reset (1 on, 0 off).", GPU_LABELS)
    total = _gauge("gpu_memory_slices", "MIG memory slices of the GPU.", GPU_LABELS)
    free = _gauge("gpu_free_slices", "Memory slices no instance (or journalled claim) holds.", GPU_LABELS)
    stranded = _gauge("gpu_stranded_slices", "Free memory slices that no MIG profile can use now.",
                      GPU_LABELS)
    largest = _gauge("gpu_largest_placeable_slices",
                     "Memory slices of the largest profile still placeable (0: none fits).", GPU_LABELS)
    ratio = _gauge("gpu_fragmentation_ratio",
                   "1 - largest placeable / free slices (0: free space is one usable block).", GPU_LABELS)
    state = {g.index: g for g in snap.state().gpus}
    for g in snap.gpus:
        key = (view.node, g.index, g.uuid)
        info.add(key + (g.name, g.model))
        mode.add(key, 1 if g.mig_current else 0)
        pending.add(key, 1 if g.mig_pending else 0)
        frag = fragmentation(state[g.index])
        total.add(key, frag.total_slices)
        free.add(key, frag.free_slices)
        stranded.add(key, frag.stranded_slices)
        largest.add(key, frag.largest_slices)
        ratio.add(key, round(frag.ratio, 6))
    return [info, mode, pending, total, free, stranded, largest, ratio]


def _instance_families(view: NodeView) -> List[Family]:
    snap = view.snap
    per_profile = _gauge("mig_instances", "MIG instances by GPU and profile, as the driver holds them.",
                         GPU_LABELS + ("GPU_I_PROFILE",))
    each = _gauge("mig_instance", "One series per MIG instance (value 1), labelled like dcgm-exporter.",
                  INSTANCE_LABELS)
    unowned = _gauge("mig_instance_unowned",
                     "1 when no running job owns the instance (no journal record, or a job Slurm no "
                     "longer runs here).", INSTANCE_LABELS)
    jobs = Family(PREFIX + "mig_instance_job", "info", "The job owning a MIG instance (value 1).",
                  ("node", "gpu", "GPU_I_ID", "mig_uuid", "job_id", "user", "phase"))
    orphans = _gauge("orphan_instances", "Instances no journal record claims (reconcile destroys them).",
                     ("node",))
    owners = match(snap.records, snap.instances)
    items = {(r.job_id, n): (r, item) for r in snap.records for n, item in enumerate(r.instances)}
    counts: Dict[Tuple[object, ...], int] = {}
    n_orphans = 0
    for n, inst in enumerate(snap.instances):
        gpu = snap.gpu(inst.gpu_index)
        model = snap.models.get(inst.gpu_index)
        profile = _profile_name(model, inst.profile_id) if model is not None else f"id{inst.profile_id}"
        labels = (view.node, view.hostname, inst.gpu_index, inst.gpu_uuid, inst.gi_id, profile,
                  inst.mig_uuid, inst.ci_id)
        key: Tuple[object, ...] = (view.node, inst.gpu_index, gpu.uuid if gpu else inst.gpu_uuid, profile)
        counts[key] = counts.get(key, 0) + 1
        each.add(labels)
        live = [items[c][0] for c in owners.claims[n] if items[c][1].state != InstanceState.RELEASED]
        n_orphans += not live
        running = bool(live) and (view.slurm_jobs is None or live[0].job_id in view.slurm_jobs)
        unowned.add(labels, 0 if running else 1)
        for rec in live[:1]:
            jobs.add((view.node, inst.gpu_index, inst.gi_id, inst.mig_uuid, rec.job_id,
                      view.user_of(rec.uid), rec.phase))
    for key, value in sorted(counts.items(), key=str):
        per_profile.add(key, value)
    orphans.add((view.node,), n_orphans)
    return [per_profile, each, unowned, jobs, orphans]


def _capacity_families(view: NodeView) -> List[Family]:
    state = view.snap.state()
    fit_all, fit_active = view.fit
    profiles = sorted(feature_counts(fit_all))
    exact = _gauge("profile_fit_instances", "How many more instances of the profile alone fit now "
                   "(core.planner.capacity).", ("node", "profile"))
    told = _gauge("profile_published_instances", "What Slurm was told: the largest k of the node's "
                  "fit features mig.<profile>.<k> (capped at policy.max_count_per_node).",
                  ("node", "profile"))
    caps = capacity(state)
    for profile, k in sorted(feature_counts(fit_active, profiles).items()):
        exact.add((view.node, profile), caps.get(profile, 0))
        told.add((view.node, profile), k)
    out = [exact, told]
    if view.slurm_features is not None:
        seen = _gauge("slurm_profile_instances", "The same, as read back from Slurm's active features of "
                      "the node (differs from published only while an update is in flight or lost).",
                      ("node", "profile"))
        for profile, k in sorted(feature_counts(view.slurm_features, profiles).items()):
            seen.add((view.node, profile), k)
        out.append(seen)
    return out


def _journal_families(view: NodeView) -> List[Family]:
    records = _gauge("journal_records", "Job records in the node journal by phase.", ("node", "phase"))
    by_phase = {str(p): 0 for p in Phase}
    for r in view.snap.records:
        by_phase[str(r.phase)] = by_phase.get(str(r.phase), 0) + 1
    for phase, n in sorted(by_phase.items()):
        records.add((view.node, phase), n)
    problems = _gauge("journal_problems", "Journal files that cannot be trusted as they are, by kind "
                      "(slurm-gpu status lists them).", ("node", "kind"))
    by_kind = {k: 0 for k in PROBLEM_KINDS}
    for p in view.snap.problems:
        by_kind[p.kind] = by_kind.get(p.kind, 0) + 1
    for kind, n in sorted(by_kind.items()):
        problems.add((view.node, kind), n)
    return [records, problems]


def node_families(view: NodeView) -> List[Family]:
    """Every family of one node's snapshot (GPUs, instances, capacity, journal)."""
    return (_gpu_families(view) + _instance_families(view) + _capacity_families(view)
            + _journal_families(view))


def pending_families(constraints: Sequence[str], profiles: Sequence[str] = ()) -> List[Family]:
    """Pending demand from the pending jobs' constraints (``mig.<profile>.<k>``: k instances of that
    profile on one node): jobs and instances by profile, zero for ``profiles`` without demand."""
    jobs = _gauge("pending_jobs", "Pending MIG jobs by requested profile (squeue --states PENDING).",
                  ("profile",))
    wanted = _gauge("pending_instances", "MIG instances the pending jobs ask for, by profile.", ("profile",))
    n_jobs: Dict[str, int] = {p: 0 for p in profiles}
    n_inst: Dict[str, int] = {p: 0 for p in profiles}
    for text in constraints:
        counts = feature_counts([t for t in text.replace("|", "&").split("&") if t])
        for profile, k in counts.items():
            n_jobs[profile] = n_jobs.get(profile, 0) + 1
            n_inst[profile] = n_inst.get(profile, 0) + k
    for profile in sorted(n_jobs):
        jobs.add((profile,), n_jobs[profile])
        wanted.add((profile,), n_inst[profile])
    return [jobs, wanted]


def profile_names(models: Mapping[int, GpuModel]) -> List[str]:
    return sorted({p.name for m in models.values() for p in m.profiles})
