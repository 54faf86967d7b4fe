"""Count admission's target layout (slurm_gpu.core.target): whatever Slurm allocates within the published
counts fits, and the Prolog's placements keep the rest of the promise placeable."""

from __future__ import annotations

import itertools
import random
from typing import Dict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slurm_gpu.core import target
from slurm_gpu.core.catalog import load_catalog
from slurm_gpu.core.errors import NoFitError
from slurm_gpu.core.geometry import NodeState
from slurm_gpu.core.planner import fits_counts, plan

CATALOG = load_catalog()
MODELS = ("H100-80GB", "A100-40GB", "A30-24GB")


def _node(model: str, gpus: int, seed: int, fill: int) -> NodeState:
    """A node with ``fill`` random instances placed by the planner (a state the agent could reach)."""
    rng = random.Random(seed)
    node = NodeState.empty(CATALOG.model(model), gpus)
    names = [p.name for p in CATALOG.model(model).base_profiles()]
    for _ in range(fill):
        try:
            for p in plan(node, rng.choice(names), 1):
                node = node.place(p.gpu_index, p.profile_name, p.start)
        except NoFitError:
            continue
    return node


def _random_demand(model: str, seed: int):
    rng = random.Random(seed * 7 + 1)
    names = [p.name for p in CATALOG.model(model).profiles]
    return [(rng.choice(names), rng.randint(1, 3)) for _ in range(rng.randint(0, 6))]


@settings(max_examples=60, deadline=None)
@given(model=st.sampled_from(MODELS), gpus=st.integers(1, 3), seed=st.integers(0, 10_000),
       fill=st.integers(0, 6))
def test_every_allocation_within_the_counts_fits(model: str, gpus: int, seed: int, fill: int) -> None:
    node = _node(model, gpus, seed, fill)
    counts = target.choose_target(node, {}, _random_demand(model, seed))
    assert target.consistent(counts, node)
    rest = target.outstanding(counts, node)
    assert all(v >= 0 for v in rest.values())
    # Slurm may allocate any sub-multiset of the promise: each must fit (exhaustive when small).
    names = sorted(rest)
    for take in itertools.islice(itertools.product(*(range(rest[n] + 1) for n in names)), 400):
        assert fits_counts(node, {n: k for n, k in zip(names, take) if k})


@settings(max_examples=40, deadline=None)
@given(model=st.sampled_from(MODELS), gpus=st.integers(1, 3), seed=st.integers(0, 10_000))
def test_placing_within_the_promise_keeps_it(model: str, gpus: int, seed: int) -> None:
    """Prologs in any order, each placing where ``target.place`` says: the invariant holds after each."""
    rng = random.Random(seed)
    node = _node(model, gpus, seed, rng.randint(0, 3))
    counts = target.choose_target(node, {}, _random_demand(model, seed))
    while True:
        rest = {n: c for n, c in target.outstanding(counts, node).items() if c > 0}
        if not rest:
            break
        name = rng.choice(sorted(rest))
        (p,) = target.place(node, counts, name, 1)
        node = node.place(p.gpu_index, p.profile_name, p.start)
        assert target.consistent(counts, node)
    assert target.held(node) == {n: c for n, c in counts.items() if c}


def test_claims_come_first_and_demand_follows_the_queue() -> None:
    node = NodeState.empty(CATALOG.model("H100-80GB"), 2)
    counts = target.choose_target(node, {"3g.40gb": 2}, [("1g.10gb", 5), ("7g.80gb", 1)])
    assert counts["3g.40gb"] >= 2 and counts["1g.10gb"] >= 5
    assert counts.get("7g.80gb", 0) == 0  # the queue's 7g no longer fits after what came first
    with pytest.raises(NoFitError):
        target.choose_target(node, {"7g.80gb": 3}, [])


def test_an_idle_node_offers_its_largest_profiles() -> None:
    node = NodeState.empty(CATALOG.model("H100-80GB"), 8)
    assert target.choose_target(node, {}, []) == {"7g.80gb": 8}
    assert target.choose_target(node, {}, [], fill=False) == {}


def test_place_refuses_beyond_the_promise() -> None:
    node = NodeState.empty(CATALOG.model("H100-80GB"), 1)
    counts: Dict[str, int] = {"3g.40gb": 1, "1g.10gb": 4}
    with pytest.raises(NoFitError, match="exceed the 1 promised"):
        target.place(node, counts, "3g.40gb", 2)
    # The first 1g must leave room for the promised 3g: never at a start that splits both halves.
    (p,) = target.place(node, counts, "1g.10gb", 1)
    after = node.place(p.gpu_index, p.profile_name, p.start)
    assert target.consistent(counts, after)


def test_lowered_is_the_smaller_count_of_every_profile() -> None:
    assert target.lowered({"1g.10gb": 3, "7g.80gb": 1}, {"1g.10gb": 1, "3g.40gb": 2}) == {
        "1g.10gb": 1, "3g.40gb": 0, "7g.80gb": 0}


def test_counts_the_node_holds_more_of_are_inconsistent() -> None:
    node = NodeState.empty(CATALOG.model("H100-80GB"), 1)
    (p,) = plan(node, "3g.40gb", 1)
    node = node.place(p.gpu_index, p.profile_name, p.start)
    assert not target.consistent({}, node)
    assert target.consistent({"3g.40gb": 1}, node)
    assert target.total_slots(node) == 7
    assert target.gres_type("1g.10gb+me") == "1g.10gb_me"
    assert target.profile_of_type("1g.10gb_me") == "1g.10gb+me"


# ---------------------------------------------------------------------------- alias types (mixed models)

def test_an_alias_means_one_profile_per_node_or_none():
    from slurm_gpu.core.aliases import alias_profile

    h100, a100 = CATALOG.model("H100-80GB"), CATALOG.model("A100-40GB")
    assert [alias_profile(t, [h100]) for t in ("5gb", "20gb", "40gb", "whole")] == \
        ["1g.10gb", "1g.20gb", "3g.40gb", "7g.80gb"]
    assert alias_profile("20gb", [h100, a100]) is None  # a node of both models: they disagree
    assert alias_profile("80gb", [a100]) is None  # no A100-40GB profile holds it
    assert alias_profile("3g.40gb", [h100]) is None  # a profile's type is no alias


def test_typed_target_is_the_profile_target_when_no_alias_is_asked():
    node = NodeState.empty(CATALOG.model("H100-80GB"), 2).place(0, "3g.40gb", 4)
    types = target.node_types(node, ["20gb", "whole"])
    for alloc, demand in [({}, []), ({"3g.40gb": 1}, [("1g.10gb", 3)]), ({"3g.40gb": 2}, [("2g.20gb", 2)])]:
        have = target.held(node)
        claims = {p: n - have.get(p, 0) for p, n in alloc.items() if n > have.get(p, 0)}
        assert target.choose_typed_target(node, alloc, demand, types) == \
            target.choose_target(node, claims, demand)


def test_alias_and_profile_slots_are_promised_together():
    node = NodeState.empty(CATALOG.model("A100-40GB"), 1)
    types = target.node_types(node, ["20gb", "whole"])
    counts = target.choose_typed_target(node, {}, [("20gb", 1), ("3g.20gb", 1), ("whole", 1)], types)
    assert counts == {"20gb": 1, "3g.20gb": 1}  # two 3g.20gb slots fill the GPU: no whole one is left
    assert target.consistent(target.by_profile(counts, types), node)
    with pytest.raises(NoFitError):  # Slurm allocated more than fits: the claims must be kept, and cannot
        target.choose_typed_target(node, {"20gb": 2, "whole": 1}, [], types)


def test_the_placements_that_strand_compute():
    from slurm_gpu.core.planner import stranding_placements

    h100 = CATALOG.model("H100-80GB")
    found = {(h100.profile_by_id(pid).name, start) for pid, start in stranding_placements(h100)}
    # a 3g.40gb at 0 takes memory slices 0-3 for compute 0-2: compute slice 3 has no memory slice left
    assert found == {("3g.40gb", 0), ("1g.20gb", 0), ("1g.20gb", 2), ("1g.20gb", 4)}


def test_the_stranding_rule_agrees_with_the_geometry_rules_on_every_model():
    from slurm_gpu.core.fragmentation import spare_compute
    from slurm_gpu.core.planner import stranding_placements

    for key in CATALOG.keys():
        m = CATALOG.model(key)
        free = {p.profile_id: m.compute_slices_total - p.compute_slices for p in m.profiles}
        by_geometry = {(p.profile_id, start) for p in m.profiles for start, size in p.placements
                       if spare_compute(m, ((start, size, p.profile_id),)) < free[p.profile_id]}
        assert stranding_placements(m) == by_geometry, key


def test_the_target_promises_without_stranding_while_the_queue_can_use_the_space():
    h100 = CATALOG.model("H100-80GB")
    node = NodeState.empty(h100, 1).place(0, "3g.40gb", 4)  # slices 4-7 taken: a new 3g.40gb only fits at 0
    # Smaller jobs wait behind a 3g.40gb: they get the half GPU it would strand a compute slice in; the
    # profile asked for is never changed.
    assert target.choose_target(node, {}, [("3g.40gb", 1), ("1g.10gb", 1), ("2g.20gb", 1)]) == {
        "1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1}
    # Nothing else waits: the 3g.40gb is promised there all the same.
    assert target.choose_target(node, {}, [("3g.40gb", 1)]) == {"3g.40gb": 2}
    # What Slurm allocated keeps its slot, stranding or not.
    assert target.choose_target(node, {"3g.40gb": 1}, [("1g.10gb", 4)])["3g.40gb"] == 2


@pytest.mark.parametrize("model", MODELS)
def test_the_node_checker_answers_as_fits_counts(model):
    from slurm_gpu.core.slotplan import node_counts_checker

    names = [p.name for p in CATALOG.model(model).profiles]
    for seed in range(40):
        node = _node(model, 2, seed, fill=seed % 6)
        rng = random.Random(seed)
        for strict in (False, True):
            check = node_counts_checker(node, strict)
            for _ in range(25):
                counts = {n: rng.randint(0, 3) for n in rng.sample(names, rng.randint(1, 3))}
                assert check(counts) == fits_counts(node, counts, strict), (seed, strict, counts)
