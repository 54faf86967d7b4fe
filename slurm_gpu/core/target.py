"""Count admission: the per-profile counts a node publishes as typed count-only gres
(``migp:<profile>:<count>``), chosen so that *any* set of allocations Slurm makes within them fits.

A node's published counts ``T`` are its *target layout*: ``T[p]`` counts the instances of ``p`` the node
holds plus the free slots of ``p`` it promises. The one invariant (``consistent``) is that the
promised slots, ``outstanding(T) = T - held``, all fit in the free space *together*. Then:

- Slurm never allocates more than ``T[p]`` of ``p``, so every allocation has a promised slot;
- the Prolog places an instance where the rest of the promise still fits (``planner.plan_counts``), and
  the Epilog's destroy frees exactly a promised slot again: neither changes ``T``, so a job's start and
  end cost no update of Slurm at all;
- only a change of the target (demand moved) is published, and a lowered count is published *before*
  the raised ones and checked against Slurm's allocations (``lowered``), so a job allocated in between
  keeps its slot.

Pure: the caller reads Slurm and the node and publishes.

>>> from slurm_gpu.core.catalog import load_catalog
>>> from slurm_gpu.core.geometry import NodeState
>>> node = NodeState.empty(load_catalog().model("H100-80GB"), 1)
>>> choose_target(node, {}, [("1g.10gb", 3)])
{'1g.10gb': 3, '4g.40gb': 1}
>>> consistent({'7g.80gb': 1, '1g.10gb': 1}, node)
False
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from slurm_gpu.core.aliases import alias_profile, is_alias_type
from slurm_gpu.core.errors import NoFitError
from slurm_gpu.core.features import feature_token, profile_from_token
from slurm_gpu.core.planner import fits_counts, plan_counts
from slurm_gpu.core.slotplan import counts_checker, node_counts_checker, plan_counts_slots

if TYPE_CHECKING:  # pragma: no cover
    from slurm_gpu.core.catalog import GpuModel
    from slurm_gpu.core.geometry import NodeState
    from slurm_gpu.core.planner import PlannedInstance, Slots

__all__ = ["GRES_NAME", "PAD_TYPE", "total_slots", "held", "outstanding", "consistent", "choose_target",
           "choose_typed_target", "choose_target_slots", "held_slots", "place", "place_slots", "lowered",
           "gres_type", "profile_of_type", "node_profiles", "node_types", "by_profile"]

GRES_NAME = "migp"  # the typed count-only gres: one type per profile, no device files
# The type no job asks for: it pads a node's migp total to a constant (``total_slots``), so slurmd's count at
# registration always equals the controller's and a restart with jobs running leaves the node valid.
PAD_TYPE = "unused"


def total_slots(node: NodeState) -> int:
    """The node's constant migp total: the most GPU instances its GPUs can hold together."""
    return sum(g.model.max_gpu_instances for g in node.gpus)


def gres_type(profile_name: str) -> str:
    """The gres type of a profile (``1g.10gb+me`` -> ``1g.10gb_me``: Slurm type names take no ``+``); an
    alias (``20gb``, ``whole``) is its own."""
    return profile_name if is_alias_type(profile_name) else feature_token(profile_name)


def profile_of_type(type_name: str) -> str:
    """The profile (or alias) name of a gres type: :func:`gres_type` undone."""
    return type_name if is_alias_type(type_name) else profile_from_token(type_name)


def node_profiles(node: NodeState) -> Tuple[str, ...]:
    """Every profile name of the node's models (the gres types it declares), sorted."""
    return tuple(sorted({p.name for g in node.gpus for p in g.model.profiles}))


def node_types(node: NodeState, aliases: Iterable[str] = ()) -> Dict[str, str]:
    """Type -> profile for the node: each profile of its models (named as itself) and each of ``aliases``
    (``core.aliases``: ``20gb``, ``whole``) that means one profile on its GPUs."""
    out = {p: p for p in node_profiles(node)}
    models = list({id(g.model): g.model for g in node.gpus}.values())
    for name in aliases:
        profile = None if name in out else alias_profile(name, models)
        if profile is not None:
            out[name] = profile
    return out


def by_profile(counts: Mapping[str, int], types: Mapping[str, str]) -> Dict[str, int]:
    """Counts per type summed per profile (types the node has no profile for are left out)."""
    out: Dict[str, int] = {}
    for name, n in counts.items():
        if name in types:
            out[types[name]] = out.get(types[name], 0) + n
    return out


def held(node: NodeState) -> Dict[str, int]:
    """Instances (and journalled claims) per profile name on the node's MIG GPUs."""
    out: Dict[str, int] = {}
    for g in node.gpus:
        for s in g.slots:
            name = g.model.profile_by_id(s.profile_id).name
            out[name] = out.get(name, 0) + 1
    return out


def outstanding(counts: Mapping[str, int], node: NodeState) -> Dict[str, int]:
    """The promised free slots: ``counts`` less what the node holds (negative where it holds more)."""
    have = held(node)
    names = set(counts) | set(have)
    return {n: counts.get(n, 0) - have.get(n, 0) for n in sorted(names) if counts.get(n, 0) - have.get(n, 0)}


def consistent(counts: Mapping[str, int], node: NodeState) -> bool:
    """The invariant: the node holds no more than ``counts`` of any profile, and every promised slot
    fits in the free space together with all the others."""
    rest = outstanding(counts, node)
    if any(v < 0 for v in rest.values()):
        return False
    known = set(node_profiles(node))
    return all(n in known for n in rest) and fits_counts(node, rest)


def choose_target(node: NodeState, claims: Mapping[str, int], demand: Sequence[Tuple[str, int]],
                  fill: bool = True) -> Dict[str, int]:
    """The counts to publish: what the node holds, then ``claims`` (allocated by Slurm, not yet created:
    they must fit), then each ``(profile, count)`` of ``demand`` in order where it still fits (the
    queue's requests, highest priority first), then, with ``fill``, the largest base profiles into what
    is left (so idle capacity stays allocatable). Raises :class:`NoFitError` if the claims do not fit.
    :func:`choose_typed_target` with profiles only: Slurm allocated what the node holds plus ``claims``."""
    alloc = held(node)
    for name, n in claims.items():
        if n > 0:
            alloc[name] = alloc.get(name, 0) + n
    return choose_typed_target(node, alloc, demand, node_types(node), fill)


def choose_typed_target(node: NodeState, alloc: Mapping[str, int], demand: Sequence[Tuple[str, int]],
                        types: Mapping[str, str], fill: bool = True) -> Dict[str, int]:
    """:func:`choose_target` per gres type (``types``: :func:`node_types`), aliases included: every type
    keeps what Slurm allocated of it (``alloc``), instances Slurm counts under no type stay with their
    profile's own, allocations with no instance yet must fit (:class:`NoFitError` otherwise), then the
    ``(type, count)`` demand and the fill. Promised slots of every type fit together, per profile."""
    have = held(node)
    allocated = by_profile(alloc, types)
    claims = {p: n - have.get(p, 0) for p, n in allocated.items() if n > have.get(p, 0)}
    if claims and not fits_counts(node, claims):
        raise NoFitError(f"allocated instances {claims} no longer fit on the node")
    base = {t: n for t, n in alloc.items() if t in types and n > 0}
    for p, n in have.items():
        if n > allocated.get(p, 0):
            base[p] = base.get(p, 0) + n - allocated.get(p, 0)

    def checker(strict: bool) -> Callable[[Dict[str, int]], bool]:
        node_fits = node_counts_checker(node, strict)

        def fits(extra: Dict[str, int]) -> bool:
            need = dict(claims)
            for p, n in by_profile(extra, types).items():
                need[p] = need.get(p, 0) + n
            return node_fits(need)

        return fits

    models = [g.model for g in node.gpus]
    return _choose(checker(False), base, set(types), _base_largest_first(models), {}, demand, fill,
                   checker(True))


def choose_target_slots(model: GpuModel, gpus: Sequence[Slots], claims: Mapping[str, int],
                        demand: Sequence[Tuple[str, int]], fill: bool = True) -> Dict[str, int]:
    """:func:`choose_target` for MIG GPUs of one model given as plain slots (``slotplan.plan_slots``'s
    form; the simulator keeps its nodes so): the same rules, without a :class:`NodeState`."""
    return _choose(counts_checker(model, gpus), held_slots(model, gpus),
                   {p.name for p in model.profiles}, _base_largest_first([model]), claims, demand, fill,
                   counts_checker(model, gpus, strict=True))


def held_slots(model: GpuModel, gpus: Sequence[Slots]) -> Dict[str, int]:
    """:func:`held` for plain slots."""
    out: Dict[str, int] = {}
    for slots in gpus:
        for _start, _size, pid in slots:
            name = model.profile_by_id(pid).name
            out[name] = out.get(name, 0) + 1
    return out


def _choose(fits: Callable[[Dict[str, int]], bool], have: Dict[str, int], known: Set[str],
            base: List[str], claims: Mapping[str, int], demand: Sequence[Tuple[str, int]],
            fill: bool, strict: Optional[Callable[[Dict[str, int]], bool]] = None) -> Dict[str, int]:
    """The target's rules. With ``strict`` (``fits`` without placements that strand compute), the demand
    and the fill each take two passes: first what fits strictly (in the demand's order), then the rest
    where it fits at all, so that a promise strands compute only where nothing else waiting (or the fill)
    could use that space (docs/admission.md)."""
    extra: Dict[str, int] = {n: c for n, c in claims.items() if c > 0}
    if extra and not fits(extra):
        raise NoFitError(f"allocated instances {extra} no longer fit on the node")
    runs = [r for r in _runs(demand) if r[0] in known and r[1] > 0]
    checks = [fits] if strict is None else [strict, fits]
    for check in checks:
        runs = _walk(check, extra, runs)
    if fill:
        for check in checks:
            for name in base:
                while _add_if_fits(check, extra, name, 1):
                    pass
    counts = dict(have)
    for name, c in extra.items():
        counts[name] = counts.get(name, 0) + c
    return {n: counts[n] for n in sorted(counts) if counts[n]}


def _walk(fits: Callable[[Dict[str, int]], bool], extra: Dict[str, int],
          runs: Sequence[Tuple[str, int, int]]) -> List[Tuple[str, int, int]]:
    """Adds each run of the demand to ``extra`` in order where it fits; returns what was left out."""
    refused: Dict[str, int] = {}  # per profile the least count refused: a larger one never fits later
    left: List[Tuple[str, int, int]] = []
    for name, count, times in runs:
        if times > 1 and count * times < refused.get(name, count * times + 1) \
                and _add_if_fits(fits, extra, name, count * times):
            continue  # the whole run (a job array's tasks) at once
        for k in range(times):
            if count >= refused.get(name, count + 1) or not _add_if_fits(fits, extra, name, count):
                refused[name] = min(count, refused.get(name, count))
                left.append((name, count, times - k))
                break
    return left


def _runs(demand: Sequence[Tuple[str, int]]) -> List[Tuple[str, int, int]]:
    """The demand as ``(profile, count, times)``: consecutive equal requests taken together."""
    out: List[Tuple[str, int, int]] = []
    for name, count in demand:
        if out and out[-1][:2] == (name, count):
            out[-1] = (name, count, out[-1][2] + 1)
        else:
            out.append((name, count, 1))
    return out


def _add_if_fits(fits: Callable[[Dict[str, int]], bool], extra: Dict[str, int], name: str,
                 count: int) -> bool:
    trial = dict(extra)
    trial[name] = trial.get(name, 0) + count
    if not fits(trial):
        return False
    extra[name] = trial[name]
    return True


def _base_largest_first(models: Sequence[GpuModel]) -> List[str]:
    seen: Dict[str, Tuple[int, int]] = {}
    for model in models:
        for p in model.profiles:
            if p.is_base:
                seen[p.name] = (p.memory_slices, p.compute_slices)
    return sorted(seen, key=lambda n: (-seen[n][0], -seen[n][1], n))


def place(node: NodeState, counts: Mapping[str, int], profile_name: str,
          count: int) -> Tuple[PlannedInstance, ...]:
    """Where the Prolog puts ``count`` instances of ``profile_name`` under published ``counts``: slots of
    one packing of *every* promised slot, so whatever is left of the promise still fits (a witness: the
    rest of that packing; planned only up to the job's instances). :class:`NoFitError` when the promise
    has too few such slots."""
    known = set(node_profiles(node))
    rest = {n: c for n, c in outstanding(counts, node).items() if c > 0 and n in known}
    _check_promise(rest, profile_name, count)
    planned = plan_counts(node, rest, stop=(profile_name, count))
    return tuple(p for p in planned if p.profile_name == profile_name)[:count]


def _check_promise(rest: Mapping[str, int], profile_name: str, count: int) -> None:
    if rest.get(profile_name, 0) < count:
        raise NoFitError(f"{count} x {profile_name} exceed the {rest.get(profile_name, 0)} "
                         f"promised free slot(s) of the published counts")


def place_slots(model: GpuModel, gpus: Sequence[Slots], counts: Mapping[str, int], profile_name: str,
                count: int) -> Tuple[PlannedInstance, ...]:
    """:func:`place` for plain slots (GPU ``i`` is ``gpus[i]``): the same packing of the whole promise,
    cut short once the job's instances are placed (``planner.plan_counts_slots``'s ``stop``)."""
    have = held_slots(model, gpus)
    rest = {n: c - have.get(n, 0) for n, c in counts.items() if c - have.get(n, 0) > 0}
    _check_promise(rest, profile_name, count)
    planned = plan_counts_slots(model, list(enumerate(gpus)), rest, stop=(profile_name, count))
    return tuple(p for p in planned if p.profile_name == profile_name)[:count]


def lowered(current: Mapping[str, int], target: Mapping[str, int]) -> Dict[str, int]:
    """Per profile the smaller of the current and the target count: what is published first, so that
    no allocation made meanwhile can rest on a slot the target gives up."""
    names: Iterable[str] = sorted(set(current) | set(target))
    return {n: min(current.get(n, 0), target.get(n, 0)) for n in names}
