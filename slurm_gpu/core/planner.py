"""Where to put new MIG instances on a node so that future requests still fit.

The planner is pure and deterministic. For each instance to place it tries every free placement on
every GPU, keeps those after which the rest of the request still fits (checked exactly), and picks
the one that leaves the node the most *room*:

    room(gpu) = sum over base profiles p of  weight(p) * fit(gpu, p)
    weight(p) = memory_slices(p) * compute_slices(p)

where ``fit(gpu, p)`` is how many more instances of ``p`` alone fit on the GPU (exact). Big profiles
weigh most because they are the hardest to place later. Ties go to the state with more distinct free
placements of base profiles, then to the lowest GPU index, then to the lowest start. See
docs/planner.md.

>>> from slurm_gpu.core.catalog import load_catalog
>>> from slurm_gpu.core.geometry import NodeState
>>> node = NodeState.empty(load_catalog().model("H100-80GB"), 2)
>>> [(i.gpu_index, i.start) for i in plan(node, "1g.10gb", 2)]
[(0, 6), (0, 4)]
>>> capacity(node)["3g.40gb"], fits(node, "7g.80gb", 3)
(4, False)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple

from slurm_gpu.core.errors import BadInputError, NoFitError, UnknownProfileError
from slurm_gpu.core.packing import clear_packings, feasible

if TYPE_CHECKING:  # pragma: no cover
    from slurm_gpu.core.catalog import GpuModel
    from slurm_gpu.core.geometry import GpuState, NodeState
    from slurm_gpu.core.requests import GresRequest

__all__ = [
    "PlannedInstance",
    "Slots",
    "plan",
    "plan_request",
    "plan_counts",
    "fits_counts",
    "capacity",
    "fits",
    "room",
    "stranding_placements",
    "clear_caches",
]

_ME_ALL = "+me.all"
_NO_ME = "-me"
_CACHE_LIMIT = 1 << 16


@dataclass(frozen=True)
class PlannedInstance:
    """A GPU instance to create: profile ``profile_id`` at ``[start, start + size)`` on GPU ``gpu_index``."""

    gpu_index: int
    profile_id: int
    profile_name: str
    start: int
    size: int


# --- per-model tables -------------------------------------------------------------------------------
@dataclass(frozen=True)
class _P:
    name: str
    pid: int
    compute: int
    size: int
    max_instances: int
    variant: str
    placements: Tuple[Tuple[int, int], ...]  # (start, mask)
    weight: int
    is_base: bool
    # placements sorted by end, for the greedy maximum set of disjoint intervals
    by_end: Tuple[Tuple[int, int, int], ...]  # (end, start, mask)


class _Model:
    def __init__(self, model: GpuModel, avoid: FrozenSet[Tuple[int, int]] = frozenset()):
        self.model = model  # keeps the model alive while its id() keys the caches
        self.avoid = avoid  # (profile id, start) placements left out: the strict model (``_strict``)
        self.strict: Optional[_Model] = None
        self.compute_total = model.compute_slices_total
        self.max_gi = model.max_gpu_instances
        ps = []
        for p in model.profiles:
            kept = tuple((s, z) for s, z in p.placements if (p.profile_id, s) not in avoid)
            placements = tuple((s, ((1 << z) - 1) << s) for s, z in kept)
            ps.append(
                _P(
                    name=p.name,
                    pid=p.profile_id,
                    compute=p.compute_slices,
                    size=p.memory_slices,
                    max_instances=p.max_instances,
                    variant=p.variant,
                    placements=placements,
                    weight=p.memory_slices * p.compute_slices,
                    is_base=p.is_base,
                    by_end=tuple(sorted((s + z, s, ((1 << z) - 1) << s) for s, z in kept)),
                )
            )
        self.profiles: Tuple[_P, ...] = tuple(ps)
        self.by_pid: Dict[int, _P] = {p.pid: p for p in ps}
        self.by_name: Dict[str, _P] = {p.name: p for p in ps}
        self.base: Tuple[_P, ...] = tuple(p for p in ps if p.is_base)


_models: Dict[int, _Model] = {}


def _model(model: GpuModel) -> _Model:
    m = _models.get(id(model))
    if m is None or m.model is not model:
        m = _models[id(model)] = _Model(model)
    return m


def stranding_placements(model: GpuModel) -> FrozenSet[Tuple[int, int]]:
    """``(profile id, start)`` of the placements that strand compute on any GPU holding them: alone on an
    empty GPU they leave free compute slices no further instance can use (a 3g.40gb at 0 on an H100 takes
    memory slices 0-3 and compute 0-2: slices 4-7 feed at most 3 more compute slices), and more instances
    never give them back. Count admission's target promises them only after everything else
    (``core.target``). Exact, on the planner's kernel (``fragmentation.spare_compute`` answers the same
    from the geometry rules; a test compares them on every catalogued model)."""
    return _strict(_model(model)).avoid


def _strict(m: _Model) -> _Model:
    """``m`` without its stranding placements (``m`` itself when it has none); its GPUs are memoised
    apart from ``m``'s."""
    if m.strict is None:
        empty = _gpu(m, ())
        memo: Dict[Key, int] = {}
        avoid = frozenset((p.pid, start) for p in m.profiles for start, _mask in empty.free_starts(p)
                          if _most_compute(empty.after(p, start), memo) < m.compute_total - p.compute)
        m.strict = _Model(m.model, avoid) if avoid else m
        m.strict.strict = m.strict
    return m.strict


def _most_compute(g: _Gpu, memo: Dict[Key, int]) -> int:
    """The most compute slices instances added to ``g`` can take together (exact; memoised per layout)."""
    found = memo.get(g.key)
    if found is None:
        free = g.m.compute_total - g.compute
        found = 0
        for p in g.m.profiles:
            for start, _mask in g.free_starts(p):
                if found == free:
                    break  # every free compute slice is usable: nothing does better
                found = max(found, p.compute + _most_compute(g.after(p, start), memo))
        memo[g.key] = found
    return found


# --- one GPU ----------------------------------------------------------------------------------------
Key = Tuple[Tuple[int, int, int], ...]  # sorted (start, size, profile_id)
Slots = Key  # a GPU's instances as plain tuples: the fields of geometry.Slot, sorted


class _Gpu:
    """Derived facts of one GPU state, computed once per (model, slots)."""

    __slots__ = (
        "m",
        "key",
        "used",
        "compute",
        "n",
        "counts",
        "me_all",
        "all_no_me",
        "_caps",
        "_room",
        "_starts",
        "_next",
    )

    def __init__(self, m: _Model, key: Key):
        self.m = m
        self.key = key
        used = 0
        compute = 0
        counts: Dict[int, int] = {}
        me_all = False
        all_no_me = True
        for start, size, pid in key:
            p = m.by_pid[pid]
            used |= ((1 << size) - 1) << start
            compute += p.compute
            counts[pid] = counts.get(pid, 0) + 1
            me_all = me_all or p.variant == _ME_ALL
            all_no_me = all_no_me and p.variant == _NO_ME
        self.used = used
        self.compute = compute
        self.n = len(key)
        self.counts = counts
        self.me_all = me_all
        self.all_no_me = all_no_me
        self._caps: Optional[Dict[str, int]] = None
        self._room: Optional[Tuple[int, int]] = None
        # memos of the planner's inner loop: free placements per profile id, successor per placement
        self._starts: Dict[int, List[Tuple[int, int]]] = {}
        self._next: Dict[Tuple[int, int], _Gpu] = {}

    def allowed(self, p: _P) -> bool:
        """Everything but the slices: instance, compute and GPU-instance budgets, media engines."""
        if self.counts.get(p.pid, 0) >= p.max_instances:
            return False
        if self.compute + p.compute > self.m.compute_total or self.n >= self.m.max_gi:
            return False
        if p.variant == _ME_ALL:
            return self.all_no_me
        return not self.me_all or p.variant == _NO_ME

    def free_starts(self, p: _P) -> List[Tuple[int, int]]:
        found = self._starts.get(p.pid)
        if found is None:
            used = self.used
            found = [(s, mask) for s, mask in p.placements if not used & mask] if self.allowed(p) else []
            self._starts[p.pid] = found
        return found

    def cap(self, p: _P) -> int:
        """Most instances of ``p`` alone that can be added: the largest set of disjoint free
        placements (earliest end first is optimal for intervals), cut by the budgets."""
        if not self.allowed(p):
            return 0
        used = self.used
        n = 0
        for _end, _start, mask in p.by_end:
            if not used & mask:
                used |= mask
                n += 1
        if p.variant == _ME_ALL:
            n = min(n, 1)
        n = min(n, p.max_instances - self.counts.get(p.pid, 0), self.m.max_gi - self.n)
        return min(n, (self.m.compute_total - self.compute) // p.compute) if p.compute else n

    def caps(self) -> Dict[str, int]:
        if self._caps is None:
            self._caps = {p.name: self.cap(p) for p in self.m.profiles}
        return self._caps

    def room(self) -> Tuple[int, int]:
        if self._room is None:
            caps = self.caps()
            weighted = sum(p.weight * caps[p.name] for p in self.m.base)
            spread = sum(len(self.free_starts(p)) for p in self.m.base)
            self._room = (weighted, spread)
        return self._room

    def placed(self, p: _P, start: int) -> Key:
        return tuple(sorted(self.key + ((start, p.size, p.pid),)))

    def after(self, p: _P, start: int) -> _Gpu:
        """The GPU once ``p`` is placed at ``start`` (a free start)."""
        nxt = self._next.get((p.pid, start))
        if nxt is None:
            nxt = self._next[(p.pid, start)] = _gpu(self.m, self.placed(p, start))
        return nxt


_gpus: Dict[Tuple[int, Key], _Gpu] = {}


def _gpu(m: _Model, key: Key) -> _Gpu:
    ck = (id(m), key)
    g = _gpus.get(ck)
    if g is None:
        if len(_gpus) >= _CACHE_LIMIT:
            _gpus.clear()
        g = _gpus[ck] = _Gpu(m, key)
    return g


def clear_caches() -> None:
    """Forget every memoised GPU state and packing (benchmarks and tests of a cold start)."""
    _gpus.clear()
    clear_packings()


def _key(gpu: GpuState) -> Key:
    return tuple((s.start, s.size, s.profile_id) for s in gpu.slots)


# --- exact feasibility of several profiles at once -------------------------------------------------
def _feasible(gpus: Sequence[_Gpu], demand: Sequence[Tuple[Callable[[_Model], Optional[_P]], int]]) -> bool:
    """Whether ``demand`` (per group: a chooser of the profile on a GPU's model, and a count) fits on
    ``gpus`` all together (exact)."""
    counts = tuple(c for _, c in demand)
    if sum(1 for c in counts if c) == 1:  # one profile: the per-GPU maxima add up exactly
        i = next(i for i, c in enumerate(counts) if c)
        choose = demand[i][0]
        total = 0
        for g in gpus:
            p = choose(g.m)
            total += g.caps()[p.name] if p is not None else 0  # memoised per GPU state
        return total >= counts[i]
    return feasible(gpus, demand)


# --- public API ------------------------------------------------------------------------------------
def _chooser_by_name(name: str) -> Callable[[_Model], Optional[_P]]:
    def choose(m: _Model) -> Optional[_P]:
        return m.by_name.get(name)

    return choose


def _check_name(node: NodeState, name: str) -> str:
    name = str(name).strip().lower()
    if not any(g.model.has_profile(name) for g in node.gpus):
        known = sorted({p.name for g in node.gpus for p in g.model.profiles})
        raise UnknownProfileError(
            f"MIG profile {name!r} exists on no GPU of this node (known: {', '.join(known)})", part=name
        )
    return name


def plan(node: NodeState, profile_name: str, count: int = 1) -> Tuple[PlannedInstance, ...]:
    """Placements for ``count`` new instances of ``profile_name``; :class:`NoFitError` if they do not
    all fit now, :class:`UnknownProfileError` for a profile no GPU of the node has."""
    name = _check_name(node, profile_name)
    return _plan(_node_gpus(node), [(_chooser_by_name(name), _positive(count, profile_name))])


def plan_request(node: NodeState, requests: Sequence[GresRequest]) -> Tuple[PlannedInstance, ...]:
    """Placements for all gpu requests together (other gres names are ignored), largest profiles
    first; each request is resolved per GPU model (``slurm_gpu.core.requests.resolve``)."""
    from slurm_gpu.core.requests import resolve  # lazy: keeps the planner's import light

    groups: Dict[object, Tuple[Callable[[_Model], Optional[_P]], int, int]] = {}
    models = {id(g.model): g.model for g in node.gpus}
    for req in requests:
        if req.name != "gpu":
            continue
        resolved: Dict[int, Optional[str]] = {}
        errors = []
        for mid, model in models.items():
            try:
                resolved[mid] = resolve(req, model).name
            except BadInputError as exc:
                resolved[mid] = None
                errors.append(exc)
        if not any(resolved.values()):
            raise errors[0] if errors else NoFitError(f"no GPU on this node for {req.raw!r}")
        # requests that resolve alike are one group, so their count adds up
        sig = tuple(sorted(resolved.items()))
        size = max(models[mid].profile(n).memory_slices for mid, n in resolved.items() if n)
        prev = groups.get(sig)
        count = _positive(req.count, req.raw) + (prev[1] if prev else 0)

        def choose(m: _Model, table: Dict[int, Optional[str]] = resolved) -> Optional[_P]:
            name = table.get(id(m.model))
            return m.by_name[name] if name else None

        groups[sig] = (prev[0] if prev else choose, count, size)
    ordered = sorted(groups.values(), key=lambda g: -g[2])
    return _plan(_node_gpus(node), [(choose, count) for choose, count, _ in ordered])


_Demand = List[Tuple[Callable[[_Model], Optional[_P]], int]]


def _count_demand(node: NodeState, counts: Mapping[str, int]) -> _Demand:
    """Profiles by name with their counts, largest first (the order :func:`_plan` places them in)."""
    named = [(_check_name(node, n), c) for n, c in counts.items() if c]
    return _largest_first(named, _sizes(node))


def _sizes(node: NodeState) -> Dict[str, Tuple[int, int]]:
    """Per profile name of the node's models: (memory slices, compute slices), what orders a demand."""
    return {p.name: (p.memory_slices, p.compute_slices) for g in node.gpus for p in g.model.profiles}


def _largest_first(named: List[Tuple[str, int]], sizes: Mapping[str, Tuple[int, int]]) -> _Demand:
    named = sorted(named, key=lambda nc: (-sizes[nc[0]][0], -sizes[nc[0]][1], nc[0]))
    return [(_chooser_by_name(n), _positive(c, n)) for n, c in named]


def plan_counts(node: NodeState, counts: Mapping[str, int],
                stop: Optional[Tuple[str, int]] = None) -> Tuple[PlannedInstance, ...]:
    """Placements for several profiles at once (``{profile name: count}``), largest first; each is
    placed so that all the rest still fits. :class:`NoFitError` if they do not all fit now. With
    ``stop = (profile, n)`` the same plan cut short once ``n`` instances of ``profile`` are placed."""
    return _plan(_node_gpus(node), _count_demand(node, counts), stop)


def fits_counts(node: NodeState, counts: Mapping[str, int], strict: bool = False) -> bool:
    """Whether all of ``{profile name: count}`` fit on the node together now (exact); ``strict``: without
    any new placement that strands compute (:func:`stranding_placements`)."""
    return _feasible([g for _, g in _node_gpus(node, strict)], _count_demand(node, counts))


def _positive(count: int, what: str) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise BadInputError(f"count {count!r} for {what} must be a positive integer", part=str(count))
    return count


def _node_gpus(node: NodeState, strict: bool = False) -> List[Tuple[int, _Gpu]]:
    def m(g: GpuState) -> _Model:
        return _strict(_model(g.model)) if strict else _model(g.model)

    return [(g.index, _gpu(m(g), _key(g))) for g in node.gpus if g.mig_enabled]


def _plan(
    gpus: List[Tuple[int, _Gpu]], demand: List[Tuple[Callable[[_Model], Optional[_P]], int]],
    stop: Optional[Tuple[str, int]] = None,
) -> Tuple[PlannedInstance, ...]:
    # ``stop = (profile, n)``: return once n instances of the group choosing that profile are placed
    # (what comes before them is placed as in the whole plan)
    order = [i for i, _ in gpus]
    cut = None if stop is None else (_group_of(gpus, demand, stop[0]), stop[1])
    state: Dict[int, _Gpu] = dict(gpus)
    remaining = [c for _, c in demand]
    if not _feasible([state[i] for i in order], demand):
        what = ", ".join(f"{c} x {_describe(ch, state)}" for ch, c in demand)
        raise NoFitError(f"{what} do not fit on this node now")
    out: List[PlannedInstance] = []
    for gi_group, (choose, _count) in enumerate(demand):
        while remaining[gi_group]:
            remaining[gi_group] -= 1
            rest = [(ch, remaining[i]) for i, (ch, _) in enumerate(demand)]
            last = not any(remaining)  # nothing after this instance: every free start is feasible
            best = None
            for idx in order:
                g = state[idx]
                p = choose(g.m)
                if p is None:
                    continue
                before = g.room()
                for start, _mask in g.free_starts(p):
                    after = g.after(p, start)
                    room = after.room()
                    # the change in this GPU's room is the change of the node's room
                    rank = (before[0] - room[0], before[1] - room[1], idx, start)
                    if best is not None and rank >= best[0]:
                        continue
                    if last or _feasible([after if i == idx else state[i] for i in order], rest):
                        best = (rank, idx, p, start, after)
            if best is None:  # cannot happen after the feasibility check; never place blindly
                raise NoFitError(f"no placement left for {_describe(choose, state)}")
            _, idx, p, start, after = best
            state[idx] = after
            out.append(PlannedInstance(idx, p.pid, p.name, start, p.size))
            if cut == (gi_group, demand[gi_group][1] - remaining[gi_group]):
                return tuple(out)
    return tuple(out)


def _group_of(gpus: List[Tuple[int, _Gpu]], demand: List[Tuple[Callable[[_Model], Optional[_P]], int]],
              profile_name: str) -> Optional[int]:
    """The first demand group that chooses ``profile_name`` on some GPU (None: none does)."""
    for i, (choose, _count) in enumerate(demand):
        for _idx, g in gpus:
            p = choose(g.m)
            if p is not None and p.name == profile_name:
                return i
    return None


def _describe(choose: Callable[[_Model], Optional[_P]], state: Dict[int, _Gpu]) -> str:
    names = sorted({p.name for g in state.values() for p in [choose(g.m)] if p is not None})
    return "/".join(names) or "an unavailable profile"


def capacity(node: NodeState) -> Dict[str, int]:
    """For every profile name of the node's models: how many more instances of it alone fit now."""
    out: Dict[str, int] = {}
    for g in node.gpus:
        m = _model(g.model)
        caps = _gpu(m, _key(g)).caps() if g.mig_enabled else {p.name: 0 for p in m.profiles}
        for name, n in caps.items():
            out[name] = out.get(name, 0) + n
    return out


def fits(node: NodeState, profile_name: str, count: int) -> bool:
    """Whether ``count`` more instances of ``profile_name`` fit on the node now."""
    name = _check_name(node, profile_name)
    return capacity(node)[name] >= _positive(count, profile_name)


def room(gpu: GpuState) -> Tuple[int, int]:
    """The planner's score of one GPU: (weighted fit of base profiles, distinct free placements)."""
    if not gpu.mig_enabled:
        return (0, 0)
    return _gpu(_model(gpu.model), _key(gpu)).room()
