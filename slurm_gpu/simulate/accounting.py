"""Which requests a cluster could ever run, and why not: one answer for ``trace info`` and ``simulate``.

A request is a key (``parse_job_gres``), a count per node and a node count. On the empty cluster it can
run when at least ``nodes`` nodes each hold ``count`` instances of the key's profile on their own model.
Policies add their own limits on top (``static``: its layout; ``shards``: one GPU per node), but every
policy starts from this, so a job rejected here is rejected by all of them, with the same reason.

Equivalent spellings are one request: keys that resolve to the same profile on every model of the
cluster (``gpu`` and ``7g.80gb`` on H100s, ``40gb`` and ``3g.40gb``) are merged by :func:`canonical_keys`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from slurm_gpu.core.catalog import Catalog, load_catalog
from slurm_gpu.simulate.cluster import ClusterSpec
from slurm_gpu.simulate.slots import ModelTable
from slurm_gpu.simulate.traces import TraceJob, parse_job_gres

__all__ = ["request_problem", "canonical_keys", "reason_counts", "TraceAccount", "account_trace"]


def request_problem(
    tables: Sequence[Tuple[ModelTable, int]], key: int, count: int, nodes: int
) -> Optional[str]:
    """Why request ``key`` x ``count`` on ``nodes`` nodes can never run on the empty cluster, or None.

    ``tables``: per node, its model table and GPU count.
    """
    name = tables[0][0].keys[key] if tables else "?"
    resolved = [(t, g) for t, g in tables if t.profiles[key] is not None]
    if not resolved:
        models = sorted({t.model.key for t, _ in tables})
        return f"{name}: no profile or GPU type of {', '.join(models)}"
    if nodes > len(tables):
        return f"needs {nodes} nodes; the cluster has {len(tables)}"
    best = max(t.capacity(())[key] * g for t, g in resolved)
    fitting = sum(1 for t, g in resolved if t.capacity(())[key] * g >= count)
    if fitting >= nodes:
        return None
    profile = resolved[0][0].profiles[key]
    pname = profile.name if profile is not None else name
    if fitting == 0:
        return f"needs {count} x {pname} on one node; a node holds at most {best}"
    return f"needs {nodes} nodes with {count} x {pname}; {fitting} of the cluster's nodes hold that many"


def canonical_keys(tables: Sequence[ModelTable]) -> List[int]:
    """For each key index, the index of the first key resolving to the same profile on every model.

    Keys no model resolves stay their own (each keeps its own rejection reason).
    """
    if not tables:
        return []
    n = len(tables[0].keys)
    first: Dict[Tuple[Optional[int], ...], int] = {}
    out = []
    for k in range(n):
        sig = tuple(_profile_id(t, k) for t in tables)
        if all(s is None for s in sig):
            out.append(k)
        else:
            out.append(first.setdefault(sig, k))
    return out


def _profile_id(table: ModelTable, key: int) -> Optional[int]:
    p = table.profiles[key]
    return None if p is None else p.profile_id


def reason_counts(reasons: Sequence[str]) -> Dict[str, int]:
    """``{reason: jobs}``, most frequent first."""
    counts: Dict[str, int] = {}
    for r in reasons:
        counts[r] = counts.get(r, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


@dataclass
class TraceAccount:
    """What a trace asks of a cluster. ``offered_load``: memory-slice-seconds that fall inside the arrival
    window (each runnable job from its submission for its duration, clipped to first..last submission) /
    (cluster memory slices x window): the load a cluster without queueing would carry in the window that
    ``utilization`` is measured on. ``offered_load_all_work``: every runnable job's whole work over the
    same window (what the generators size ``--load`` by; long jobs running past the last arrival push it
    above what the window can hold)."""

    jobs: int
    span_s: float
    offered_load: float
    offered_load_all_work: float
    mix: Dict[str, int] = field(default_factory=dict)  # per request, equivalent spellings merged
    rejected: int = 0
    rejected_reasons: Dict[str, int] = field(default_factory=dict)


def account_trace(
    jobs: Sequence[TraceJob], cluster: ClusterSpec, catalog: Optional[Catalog] = None
) -> TraceAccount:
    """Offered load, request mix and the jobs no policy could run on ``cluster``, with their reasons."""
    cat = catalog or load_catalog()
    parsed = [parse_job_gres(j.gres) for j in jobs]
    keys = list(dict.fromkeys(k for k, _ in parsed))
    index = {k: i for i, k in enumerate(keys)}
    models = {m: ModelTable(cat.model(m), keys) for m in cluster.models}
    per_node = [(models[n.model], n.gpus) for n in cluster.nodes]
    canon = canonical_keys(list(models.values()))
    t0 = min((j.submit for j in jobs), default=0.0)
    t1 = max((j.submit for j in jobs), default=0.0)
    window = work = 0.0
    mix: Dict[str, int] = {}
    reasons: List[str] = []
    for job, (key, count) in zip(jobs, parsed):
        k = canon[index[key]]
        mix[keys[k]] = mix.get(keys[k], 0) + 1
        why = request_problem(per_node, k, count, job.nodes)
        if why is not None:
            reasons.append(why)
            continue
        slices = next(p.memory_slices for t in models.values() for p in (t.profiles[k],) if p is not None)
        asked = slices * count * job.nodes
        work += asked * job.duration
        window += asked * max(0.0, min(job.submit + job.duration, t1) - job.submit)
    capacity = cluster.memory_slices(cat) * (t1 - t0)
    return TraceAccount(
        jobs=len(jobs),
        span_s=round(t1 - t0, 1),
        offered_load=round(window / capacity, 4) if capacity > 0 else 0.0,
        offered_load_all_work=round(work / capacity, 4) if capacity > 0 else 0.0,
        mix=dict(sorted(mix.items())),
        rejected=len(reasons),
        rejected_reasons=reason_counts(reasons),
    )
