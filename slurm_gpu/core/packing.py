"""Exact feasibility of several MIG profiles at once on a node: the planner's check of "does all the rest
still fit", and count admission's of "does the whole promise fit".

What fits on one GPU is *downward closed*: taking an instance away never breaks a MIG rule (slices,
compute, per-profile and GPU-instance budgets, media engines). So a GPU is described exactly by its
*maximal packings*: the count vectors, over the profiles asked for, of the fullest layouts that can be
added to it. A demand fits the node iff one maximal packing per GPU covers it together. The walk goes GPU
by GPU over the demand still to place, keeping only the least of those vectors (a rest that is at least
another rest in every profile can never fit where the other does not).

Per GPU the packings are enumerated once per (model, layout, profiles) and memoised: a node of 8 H100s
with a queue of six profiles is checked in milliseconds, where trying every split of the demand per GPU
took seconds.

Pure; the planner owns the per-GPU facts (``planner._Gpu``) and passes them in.
"""

from __future__ import annotations

from itertools import product
from typing import TYPE_CHECKING, Callable, Dict, FrozenSet, Iterable, List, Optional, Sequence, Set, Tuple

if TYPE_CHECKING:  # pragma: no cover
    from slurm_gpu.core.planner import _P, _Gpu, _Model

__all__ = ["feasible", "maximal_packings", "clear_packings"]

Vec = Tuple[int, ...]
_CACHE_LIMIT = 1 << 15
_memo: Dict[Tuple[int, Tuple[Tuple[int, int, int], ...], Tuple[int, ...], int], FrozenSet[Vec]] = {}


def clear_packings() -> None:
    _memo.clear()
    _steps.clear()


def maximal_packings(g: _Gpu, profiles: Tuple[_P, ...]) -> FrozenSet[Vec]:
    """The maximal count vectors over ``profiles`` (distinct) that can be added to GPU ``g`` together."""
    return _reachable(g, profiles, tuple(p.pid for p in profiles), 0)


def _reachable(g: _Gpu, ps: Tuple[_P, ...], pids: Tuple[int, ...], i: int) -> FrozenSet[Vec]:
    # Instances are added in profile order (index >= i), so each layout is reached by few paths; the
    # layout key dedups the rest.
    ck = (id(g.m), g.key, pids, i)
    hit = _memo.get(ck)
    if hit is not None:
        return hit
    found: Set[Vec] = {(0,) * len(ps)}
    for j in range(i, len(ps)):
        p = ps[j]
        for start, _mask in g.free_starts(p):
            for v in _reachable(g.after(p, start), ps, pids, j):
                found.add(v[:j] + (v[j] + 1,) + v[j + 1:])
    out = frozenset(_maximal(found))
    if len(_memo) >= _CACHE_LIMIT:
        _memo.clear()
    _memo[ck] = out
    return out


def _maximal(vs: Iterable[Vec]) -> List[Vec]:
    """The vectors no other vector is at least as large as in every component (an antichain)."""
    ordered = sorted(set(vs), key=sum, reverse=True)
    keep: List[Vec] = []
    for v in ordered:
        if not any(all(a >= b for a, b in zip(k, v)) for k in keep):
            keep.append(v)
    return keep


def feasible(gpus: Sequence[_Gpu], demand: Sequence[Tuple[Callable[[_Model], Optional[_P]], int]]) -> bool:
    """Whether ``demand`` (per group: a chooser of the profile on a GPU's model, and a count) fits on
    ``gpus`` all together (exact)."""
    counts: Vec = tuple(c for _, c in demand)
    if not any(counts):
        return True
    steps = [s for s in (_step(g, demand) for g in gpus) if s.packings]
    if not steps:
        return False
    bounds = _Bounds(steps, len(counts))
    failed: Set[Tuple[int, Vec]] = set()

    def walk(k: int, rest: Vec) -> bool:
        # Depth first, the fullest packing first: a demand that fits is usually found on the first path;
        # one that does not is cut by the bounds, and a rest seen failing from GPU k is not tried again.
        if (k, rest) in failed or not bounds.allow(rest, k):
            return False
        step = steps[k]
        lefts: Set[Vec] = set()
        for m in step.packings:
            if step.simple:  # each profile serves one group: take what it can
                lefts.add(tuple(r - min(r, m[i]) if i >= 0 else r for r, i in zip(rest, step.slot)))
            else:
                lefts.update(_after(rest, m, step.groups))
        for left in sorted(lefts, key=bounds.weight):
            if not any(left) or (k + 1 < len(steps) and walk(k + 1, left)):
                return True
        failed.add((k, rest))
        return False

    return walk(0, counts)


_steps: Dict[Tuple[int, Tuple[Tuple[int, int, int], ...], Tuple[int, ...]], _Step] = {}


def _step(g: _Gpu, demand: Sequence[Tuple[Callable[[_Model], Optional[_P]], int]]) -> _Step:
    """The :class:`_Step` of GPU ``g`` for the profiles the demand chooses on it, memoised: a re-plan asks
    about the same GPUs and profiles many times over with other counts."""
    chosen = [choose(g.m) for choose, _ in demand]
    ck = (id(g.m), g.key, tuple(-1 if p is None else p.pid for p in chosen))
    found = _steps.get(ck)
    if found is None:
        if len(_steps) >= _CACHE_LIMIT:
            _steps.clear()
        found = _steps[ck] = _Step(g, chosen)
    return found


class _Step:
    """One GPU of the walk: the distinct profiles the demand's groups choose on it, their maximal
    packings, which groups each profile serves, and the most each packing holds (for the bounds)."""

    def __init__(self, g: _Gpu, chosen: List[Optional[_P]]):
        self.distinct: List[_P] = []
        self.groups: List[List[int]] = []
        for gi, p in enumerate(chosen):
            if p is None:
                continue
            if p in self.distinct:
                self.groups[self.distinct.index(p)].append(gi)
            else:
                self.distinct.append(p)
                self.groups.append([gi])
        self.chosen = chosen
        found = maximal_packings(g, tuple(self.distinct)) if self.distinct else frozenset()
        self.packings: List[Vec] = [m for m in found if any(m)]
        self.simple = all(len(gs) == 1 for gs in self.groups)
        # per group: the index of its profile in a packing (-1: nothing for it on this GPU)
        self.slot = [next((i for i, gs in enumerate(self.groups) if gi in gs), -1)
                     for gi in range(len(chosen))]
        ms = self.packings
        self.cap = [max((m[i] for m in ms), default=0) if i >= 0 else 0 for i in self.slot]
        self.mem = max((sum(k * p.size for k, p in zip(m, self.distinct)) for m in ms), default=0)
        self.cmp = max((sum(k * p.compute for k, p in zip(m, self.distinct)) for m in ms), default=0)
        self.num = max((sum(m) for m in ms), default=0)


class _Bounds:
    """Necessary conditions for a rest to fit on the GPUs from step ``k`` on: per group no more than
    their capacities add up to, and no more memory slices, compute slices or instances than their
    fullest packings hold. They cut the walk where most of it could never finish."""

    def __init__(self, steps: Sequence[_Step], n: int):
        big = 1 << 30
        self.size = [big] * n
        self.compute = [big] * n
        for s in steps:
            for gi, p in enumerate(s.chosen):
                if p is not None:
                    self.size[gi] = min(self.size[gi], p.size)
                    self.compute[gi] = min(self.compute[gi], p.compute)
        self.size = [0 if v == big else v for v in self.size]
        self.compute = [0 if v == big else v for v in self.compute]
        self.caps: List[List[int]] = [[0] * n]
        self.mem: List[int] = [0]
        self.cmp: List[int] = [0]
        self.num: List[int] = [0]
        for s in reversed(steps):
            self.caps.append([a + b for a, b in zip(self.caps[-1], s.cap)])
            self.mem.append(self.mem[-1] + s.mem)
            self.cmp.append(self.cmp[-1] + s.cmp)
            self.num.append(self.num[-1] + s.num)
        for table in (self.caps, self.mem, self.cmp, self.num):
            table.reverse()

    def weight(self, rest: Vec) -> Tuple[int, int]:
        """How much is left to place (memory slices, then instances): the walk tries the least first."""
        return (sum(r * z for r, z in zip(rest, self.size)), sum(rest))

    def allow(self, rest: Vec, k: int) -> bool:
        caps = self.caps[k]
        if any(r > c for r, c in zip(rest, caps)):
            return False
        if sum(rest) > self.num[k]:
            return False
        if sum(r * z for r, z in zip(rest, self.size)) > self.mem[k]:
            return False
        return sum(r * c for r, c in zip(rest, self.compute)) <= self.cmp[k]


def _after(rest: Vec, packing: Vec, groups: List[List[int]]) -> Iterable[Vec]:
    """What is left of ``rest`` once ``packing`` takes its share: one result per way of sharing a
    profile among the groups it serves (one way when each profile serves one group, the usual case)."""
    per_profile: List[List[Tuple[Tuple[int, int], ...]]] = []
    for amount, served in zip(packing, groups):
        per_profile.append(list(_shares(amount, [(gi, rest[gi]) for gi in served])))
    for combo in product(*per_profile):
        left = list(rest)
        for share in combo:
            for gi, k in share:
                left[gi] -= k
        yield tuple(left)


def _shares(amount: int, wants: List[Tuple[int, int]]) -> Iterable[Tuple[Tuple[int, int], ...]]:
    """Every way to give up to ``amount`` instances to groups ``(group, still wanted)``, each taking as
    much as it can up to what it wants, without waste (the total is ``min(amount, wanted)``)."""
    if len(wants) == 1:
        gi, want = wants[0]
        yield ((gi, min(amount, want)),)
        return
    total = min(amount, sum(w for _, w in wants))
    (gi, want), others = wants[0], wants[1:]
    for k in range(min(want, total), -1, -1):
        room = sum(w for _, w in others)
        if total - k > room:
            break
        for tail in _shares(total - k, others):
            yield ((gi, k),) + tail
