"""Count admission's questions on plain slot tuples (the simulator's form of a node, one GPU model):
does a set of counts fit together (``counts_checker``), and where does the Prolog put instances under
them (``plan_counts_slots``); and the first for a node agent's ``NodeState`` asked many times
(``node_counts_checker``). The planner's own kernel answers (``slurm_gpu.core.planner``), so the
simulator and the node agent share one statement of the rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Dict, Mapping, Optional, Sequence, Tuple

from slurm_gpu.core.errors import UnknownProfileError
from slurm_gpu.core.planner import (
    PlannedInstance,
    Slots,
    _check_name,
    _chooser_by_name,
    _Demand,
    _feasible,
    _gpu,
    _largest_first,
    _Model,
    _model,
    _node_gpus,
    _plan,
    _positive,
    _sizes,
    _strict,
)

if TYPE_CHECKING:  # pragma: no cover
    from slurm_gpu.core.catalog import GpuModel
    from slurm_gpu.core.geometry import NodeState

__all__ = ["plan_slots", "slot_capacity", "fits_counts_slots", "counts_checker", "node_counts_checker",
           "plan_counts_slots"]


def _slot_demand(m: _Model, counts: Mapping[str, int]) -> _Demand:
    """:func:`_count_demand` for one model's profiles (the simulator's plain slots)."""
    named = []
    for n, c in counts.items():
        p = m.by_name.get(n)
        if p is None:
            raise UnknownProfileError(f"MIG profile {n!r} is not one of {m.model.key}", part=n)
        if c:
            named.append((p, c))
    named.sort(key=lambda pc: (-pc[0].size, -pc[0].compute, pc[0].name))
    return [(_chooser_by_name(p.name), _positive(c, p.name)) for p, c in named]


def fits_counts_slots(model: GpuModel, gpus: Sequence[Slots], counts: Mapping[str, int]) -> bool:
    """:func:`fits_counts` on MIG GPUs of one model given as plain slots (see :func:`plan_slots`)."""
    return counts_checker(model, gpus)(counts)


def counts_checker(model: GpuModel, gpus: Sequence[Slots],
                   strict: bool = False) -> Callable[[Mapping[str, int]], bool]:
    """:func:`fits_counts_slots` for one node state asked many times (a re-plan): the facts of its GPUs
    are gathered once; necessary conditions (each profile alone, memory and compute slices) answer most
    refusals before the exact walk. ``strict``: fit without any new placement that strands compute
    (``planner.stranding_placements``)."""
    m = _strict(_model(model)) if strict else _model(model)
    gs = [_gpu(m, key) for key in gpus]
    free_mem = sum(model.memory_slices_total - bin(g.used).count("1") for g in gs)
    free_cmp = sum(m.compute_total - g.compute for g in gs)
    alone: Dict[str, int] = {}

    def fits(counts: Mapping[str, int]) -> bool:
        mem = cmp = groups = 0
        for name, c in counts.items():
            p = m.by_name.get(name)
            if p is None or not c:
                continue
            cap = alone.get(name)
            if cap is None:
                cap = alone[name] = sum(g.caps()[name] for g in gs)
            if cap < c:
                return False
            mem += p.size * c
            cmp += p.compute * c
            groups += 1
        if mem > free_mem or cmp > free_cmp:
            return False
        # one profile: its per-GPU maxima add up exactly (the planner's own answer for it)
        return groups <= 1 or _feasible(gs, _slot_demand(m, counts))

    return fits


def plan_counts_slots(model: GpuModel, gpus: Sequence[Tuple[int, Slots]], counts: Mapping[str, int],
                      stop: Optional[Tuple[str, int]] = None) -> Tuple[PlannedInstance, ...]:
    """:func:`plan_counts` on plain slots; with ``stop = (profile, n)`` the same plan cut short once
    ``n`` instances of ``profile`` are placed (what count admission's Prolog takes of it)."""
    m = _model(model)
    return _plan([(i, _gpu(m, key)) for i, key in gpus], _slot_demand(m, counts), stop)


def node_counts_checker(node: NodeState, strict: bool = False) -> Callable[[Mapping[str, int]], bool]:
    """:func:`fits_counts` for one node state asked many times (a target's re-plan): the GPUs' facts are
    gathered once, and each profile's own room on the node (what it alone could add) answers most
    refusals before the exact walk. The same answers as ``fits_counts(node, counts, strict)``."""
    gpus = [g for _, g in _node_gpus(node, strict)]
    sizes = _sizes(node)
    alone: Dict[str, Tuple[str, int]] = {}  # name as asked -> (profile name, its own room)

    def fits(counts: Mapping[str, int]) -> bool:
        named = []
        for name, c in counts.items():
            if not c:
                continue
            known = alone.get(name)
            if known is None:
                canon = _check_name(node, name)
                known = alone[name] = (canon, sum(g.caps().get(canon, 0) for g in gpus))
            if isinstance(c, int) and known[1] < c:
                return False
            named.append((known[0], c))
        return _feasible(gpus, _largest_first(named, sizes))

    return fits


def plan_slots(
    model: GpuModel, gpus: Sequence[Tuple[int, Slots]], profile_name: str, count: int = 1
) -> Tuple[PlannedInstance, ...]:
    """``planner.plan`` for GPUs of one model given as ``(gpu_index, slots)`` in index order, MIG on:
    the same decision without building a :class:`NodeState` (the simulator keeps plain tuples).
    The slots are trusted: they must be a valid state, as geometry would have built it."""
    m = _model(model)
    name = str(profile_name).strip().lower()
    p = m.by_name.get(name)
    if p is None:
        raise UnknownProfileError(f"MIG profile {name!r} is not one of {model.key}", part=name)
    demand = [(_chooser_by_name(p.name), _positive(count, p.name))]
    return _plan([(i, _gpu(m, key)) for i, key in gpus], demand)


def slot_capacity(model: GpuModel, slots: Slots) -> Dict[str, int]:
    """``planner.capacity`` of one MIG GPU of ``model`` given as plain slots (see :func:`plan_slots`)."""
    return dict(_gpu(_model(model), slots).caps())
