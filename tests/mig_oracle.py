"""Brute-force statements of the MIG rules, written independently of slurm_gpu.core.geometry/planner.

Used by tests only: they compare the library against these on small cases.
"""

from __future__ import annotations

import itertools
from typing import Iterable, List, Sequence, Tuple


def oracle_valid(model, layout) -> bool:
    """Whether a whole set of (Profile, start) is a valid occupancy of one GPU of ``model``."""
    layout = list(layout)
    if len(layout) > model.max_gpu_instances:
        return False
    if sum(p.compute_slices for p, _ in layout) > model.compute_slices_total:
        return False
    cells: List[int] = []
    for p, start in layout:
        if start not in p.placement_starts:
            return False
        cells.extend(range(start, start + p.memory_slices))
    if len(cells) != len(set(cells)) or max(cells, default=0) >= model.memory_slices_total:
        return False
    for p in {p for p, _ in layout}:
        if sum(1 for q, _ in layout if q == p) > p.max_instances:
            return False
    variants = [p.variant for p, _ in layout]
    if variants.count("+me.all") > 1:
        return False
    if "+me.all" in variants and any(v not in ("-me", "+me.all") for v in variants):
        return False
    return True


def all_placements(profiles: Iterable) -> List[Tuple[object, int]]:
    return [(p, s) for p in profiles for s in p.placement_starts]


def max_addable(model, existing: Sequence, profile) -> int:
    """Most instances of ``profile`` that can join ``existing`` on one GPU (all subsets tried)."""
    starts = profile.placement_starts
    for k in range(len(starts), 0, -1):
        for combo in itertools.combinations(starts, k):
            if oracle_valid(model, list(existing) + [(profile, s) for s in combo]):
                return k
    return 0


def addable_multisets(model, existing: Sequence, profiles: Sequence) -> set:
    """Every multiset (sorted tuple of names) of ``profiles`` that can join ``existing`` on one GPU."""
    cands = all_placements(profiles)
    out = set()
    for k in range(len(cands) + 1):
        for combo in itertools.combinations(cands, k):
            if oracle_valid(model, list(existing) + list(combo)):
                out.add(tuple(sorted(p.name for p, _ in combo)))
    return out
