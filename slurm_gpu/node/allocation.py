"""Whether what Slurm allocated on this node matches the request job_submit.lua recorded (pure).

A request recorded for a mixed-model cluster (a memory size, or whole GPUs) is made concrete for this
node's GPUs here; job_submit.lua charged it the largest slice count over the catalog's models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Mapping, Optional, Sequence, Tuple

from slurm_gpu.core.errors import SlurmGpuError

if TYPE_CHECKING:
    from slurm_gpu.core.catalog import GpuModel
    from slurm_gpu.slurm.parse import JobInfo, MigRequest

__all__ = ["resolve_request", "allocated_on", "check_allocation", "check_typed_allocation"]


def resolve_request(req: MigRequest, here: Sequence[GpuModel],
                    catalog: Sequence[GpuModel]) -> Tuple[MigRequest, Optional[int]]:
    """The request as a profile of this node's GPUs (``here``: the first model that resolves it) and, for
    a memory size or whole GPUs, the slice count job_submit.lua charged (the largest over ``catalog``)."""
    if any(m.has_profile(req.profile) for m in here if req.profile):
        return req, None
    from slurm_gpu.core.requests import parse_gres, resolve
    from slurm_gpu.slurm.parse import MigRequest

    gres = parse_gres(f"gpu:{req.profile}:{req.count}" if req.profile else f"gpu:{req.count}")[0]
    charged = []
    for m in catalog:
        try:
            charged.append(resolve(gres, m).memory_slices * req.count)
        except SlurmGpuError:
            continue
    for m in here:
        try:
            return MigRequest(resolve(gres, m).name, req.count), max(charged, default=None)
        except SlurmGpuError:
            continue
    return req, None  # check_allocation names what this node lacks


def allocated_on(job: JobInfo, node: str) -> Tuple[int, Dict[str, int]]:
    """What Slurm allocated the job on ``node``: memory slices (gres ``mig``; -1 under count admission)
    and count admission's ``migp`` counts by type."""
    from slurm_gpu.core.target import GRES_NAME

    typed = job.typed_counts_per_node(GRES_NAME, node)
    return (-1 if typed else job.mig_slices_per_node(node)), typed


def check_allocation(req: MigRequest, slices: int, typed: Mapping[str, int], most: Optional[int],
                     here: Sequence[GpuModel], catalog: Sequence[GpuModel], node: str,
                     max_count: int) -> Optional[str]:
    """Why Slurm's allocation (``slices`` of ``mig``, or count admission's ``typed`` counts) does not
    match the request (None if it does). ``most`` raises the upper bound for requests resolved per model
    (memory sizes)."""
    if typed:
        return check_typed_allocation(req, typed, node, here)
    have = [m.profile(req.profile) for m in here if m.has_profile(req.profile)]
    if not have:
        return f"profile {req.profile} does not exist on the GPUs of {node}"
    if req.count > max_count:
        return f"{req.count} instances exceed max_count_per_node={max_count}"
    need = min(p.memory_slices for p in have) * req.count
    # job_submit.lua counts the largest slice size of the profile over every model of the cluster.
    most = max(most or 0, max(m.profile(req.profile).memory_slices for m in catalog
                              if m.has_profile(req.profile)) * req.count)
    if not need <= slices <= most:
        return (f"Slurm allocated mig:{slices} on {node} but {req.count}x{req.profile} "
                f"needs between {need} and {most} slices")
    return None


def check_typed_allocation(req: MigRequest, typed: Mapping[str, int], node: str,
                           here: Sequence[GpuModel] = ()) -> Optional[str]:
    """Count admission: Slurm must have allocated exactly ``count`` of one type that means the request's
    (resolved) profile on this node: the profile's own (``migp:<profile>:<count>``) or, on a mixed-model
    cluster, an alias that resolves to it here (``migp:20gb``, ``migp:whole``; ``core.aliases``)."""
    from slurm_gpu.core.aliases import alias_profile
    from slurm_gpu.core.target import GRES_NAME, gres_type

    kind, n = next(iter(typed.items())) if len(typed) == 1 else (None, 0)
    if kind is None or n != req.count or (kind != gres_type(req.profile)
                                          and alias_profile(kind, here) != req.profile):
        got = ",".join(f"{GRES_NAME}:{t}:{c}" for t, c in sorted(typed.items()))
        return f"Slurm allocated {got} on {node} but the request is {req.count}x{req.profile}"
    return None
