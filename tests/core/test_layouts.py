"""Exhaustive evidence: every maximal MIG layout of every model, checked against geometry and planner.

Layouts are enumerated here by brute force from the catalog's placements with an oracle written
independently of slurm_gpu.core.geometry (sets of (profile, start), rules applied to the whole set).
"""

from __future__ import annotations

import itertools

import pytest
from mig_oracle import all_placements, oracle_valid

from slurm_gpu.core.catalog import load_catalog
from slurm_gpu.core.errors import NoFitError
from slurm_gpu.core.geometry import GpuState, NodeState
from slurm_gpu.core.planner import plan_request
from slurm_gpu.core.requests import GresRequest

CAT = load_catalog()
EIGHT_SLICE = ["A100-40GB", "A100-80GB", "H100-80GB", "H100-NVL-94GB", "GH200-96GB", "GH200-144GB",
               "H200-141GB", "B200-180GB"]


def maximal_layouts(model, profiles):
    """Every valid layout to which no further placement of ``profiles`` can be added."""
    cands = all_placements(profiles)
    found = set()

    def grow(i, layout):
        for j in range(i, len(cands)):
            nxt = layout + [cands[j]]
            if oracle_valid(model, nxt):
                grow(j + 1, nxt)
        if not any(oracle_valid(model, layout + [c]) for c in cands if c not in layout):
            found.add(frozenset((p.name, s) for p, s in layout))

    grow(0, [])
    return found


def classic(model):
    """The base profiles without the double-memory 1g one (1 compute slice, 2 memory slices)."""
    return [p for p in model.base_profiles() if not (p.compute_slices == 1 and p.memory_slices == 2)]


def geometry_accepts(model, layout) -> bool:
    gpu = GpuState(0, model)
    for name, start in sorted(layout):
        p = model.profile(name)
        if not gpu.can_place(p, start):
            return False
        gpu = gpu.place(p, start)
    return True


EXPECTED = {key: (19, 78) for key in EIGHT_SLICE}


@pytest.mark.parametrize("key", EIGHT_SLICE)
def test_layout_counts_eight_slice_models(key):
    model = CAT.model(key)
    without = maximal_layouts(model, classic(model))
    with_double = maximal_layouts(model, model.base_profiles())
    print(f"{key}: {len(without)} maximal layouts (1g/2g/3g/4g/7g), {len(with_double)} with 1g double-memory")
    assert (len(without), len(with_double)) == EXPECTED[key]


def test_layout_count_a30():
    model = CAT.model("A30-24GB")
    layouts = maximal_layouts(model, model.base_profiles())
    print(f"A30-24GB: {len(layouts)} maximal layouts")
    assert len(layouts) == 5


def test_layout_count_rtx_pro():
    model = CAT.model("RTX-PRO-6000-Blackwell-96GB")
    layouts = maximal_layouts(model, model.base_profiles())
    # 4g; 2g+2g; 2g+1g+1g (x2 sides); 1g x4
    print(f"{model.key}: {len(layouts)} maximal layouts")
    assert len(layouts) == 5


@pytest.mark.parametrize("key", [m.key for m in CAT.models])
def test_every_maximal_layout_is_accepted_and_planned(key):
    model = CAT.model(key)
    layouts = maximal_layouts(model, model.base_profiles())
    assert layouts
    for layout in layouts:
        assert geometry_accepts(model, layout), sorted(layout)
        # the planner, given the layout's profiles as requests, packs all of them onto one empty GPU
        counts = {}
        for name, _ in layout:
            counts[name] = counts.get(name, 0) + 1
        requests = [GresRequest("gpu", name, n, None, f"{name}:{n}") for name, n in sorted(counts.items())]
        node = NodeState.empty(model, 1)
        planned = plan_request(node, requests)
        assert sorted(i.profile_name for i in planned) == sorted(name for name, _ in layout)
        assert {i.gpu_index for i in planned} == {0}
        placed = [(model.profile_by_id(i.profile_id), i.start) for i in planned]
        assert oracle_valid(model, placed), [(p.name, s) for p, s in placed]
        for inst in planned:
            node = node.place(inst.gpu_index, model.profile_by_id(inst.profile_id), inst.start)
        # one more instance of the layout's largest profile would not fit: the GPU was really full
        largest = max((model.profile(name) for name, _ in layout), key=lambda p: p.memory_slices)
        if not any(oracle_valid(model, placed + [(largest, s)]) for s in largest.placement_starts):
            with pytest.raises(NoFitError):
                plan_request(node, [GresRequest("gpu", largest.name, 1, None, largest.name)])


def _subsets_up_to(items, k):
    for r in range(k + 1):
        yield from itertools.combinations(items, r)


@pytest.mark.parametrize(
    "key, profiles, max_size",
    [
        ("A30-24GB", "all", None),  # 13 placements: all 8192 subsets
        ("H100-80GB", "classic", None),  # 14 placements: all 16384 subsets
        ("A100-40GB", "all", 3),
        ("RTX-PRO-6000-Blackwell-96GB", "all", 3),
    ],
)
def test_geometry_agrees_with_oracle_on_subsets(key, profiles, max_size):
    model = CAT.model(key)
    chosen = model.profiles if profiles == "all" else classic(model)
    cands = all_placements(chosen)
    n = len(cands) if max_size is None else max_size
    checked = accepted = 0
    for subset in _subsets_up_to(cands, n):
        want = oracle_valid(model, list(subset))
        got = geometry_accepts(model, {(p.name, s) for p, s in subset})
        assert got == want, [(p.name, s) for p, s in subset]
        checked += 1
        accepted += want
    print(f"{key}: {checked} subsets checked, {accepted} valid")
    assert 0 < accepted < checked
