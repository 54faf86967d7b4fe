"""Placement decisions, capacity and fit checks of the planner."""

import pytest

from slurm_gpu.core.catalog import load_catalog
from slurm_gpu.core.errors import BadInputError, NoFitError, RequestError, UnknownProfileError
from slurm_gpu.core.geometry import GpuState, NodeState
from slurm_gpu.core.planner import PlannedInstance, capacity, fits, plan, plan_request
from slurm_gpu.core.requests import GresRequest, parse_gres

CAT = load_catalog()
H100 = CAT.model("H100-80GB")
A100 = CAT.model("A100-40GB")


def apply(node, planned):
    """Place what the planner planned through geometry (raises on anything invalid)."""
    for inst in planned:
        profile = node.gpu(inst.gpu_index).model.profile_by_id(inst.profile_id)
        assert (profile.name, profile.memory_slices) == (inst.profile_name, inst.size)
        node = node.place(inst.gpu_index, profile, inst.start)
    return node


def test_plan_returns_valid_planned_instances():
    node = NodeState.empty(H100, 2)
    got = plan(node, "3g.40gb", 3)
    assert len(got) == 3
    assert all(isinstance(i, PlannedInstance) and i.profile_id == 9 and i.size == 4 for i in got)
    apply(node, got)  # raises if any placement were invalid or overlapping


def test_first_1g_keeps_4g_and_3g_possible():
    gpu_plan = plan(NodeState.empty(H100, 1), "1g.10gb")
    node = apply(NodeState.empty(H100, 1), gpu_plan)
    assert gpu_plan[0].start == 6
    assert node.gpu(0).can_place("4g.40gb", 0)
    assert node.gpu(0).can_place("3g.40gb", 0)


def test_small_instances_go_to_a_used_gpu_before_an_empty_one():
    node = NodeState.empty(H100, 2).place(1, "3g.40gb", 4)
    got = plan(node, "1g.10gb")
    assert got[0].gpu_index == 1
    assert fits(apply(node, got), "7g.80gb", 1)


def test_does_not_overlap_and_fills_gpu():
    node = NodeState.empty(H100, 1)
    got = plan(node, "1g.10gb", 7)
    assert sorted(i.start for i in got) == list(range(7))
    with pytest.raises(NoFitError):
        plan(apply(node, got), "1g.10gb")


def test_no_fit_raises_and_leaves_input_alone():
    node = NodeState.empty(H100, 2).place(0, "4g.40gb", 0).place(1, "4g.40gb", 0)
    with pytest.raises(NoFitError):
        plan(node, "4g.40gb")
    with pytest.raises(NoFitError):
        plan(node, "3g.40gb", 3)
    assert len(plan(node, "3g.40gb", 2)) == 2


def test_count_that_needs_planning_across_gpus():
    # GPU 0 holds 1g@6, GPU 1 is empty; two 3g.40gb fit only as 3g@0 on GPU 0 plus one on GPU 1
    node = NodeState.empty(H100, 2).place(0, "1g.10gb", 6)
    got = plan(node, "3g.40gb", 3)
    assert sorted((i.gpu_index, i.start) for i in got) == [(0, 0), (1, 0), (1, 4)]


def test_unknown_profile_and_bad_count():
    node = NodeState.empty(H100, 1)
    with pytest.raises(UnknownProfileError) as info:
        plan(node, "1g.5gb")
    assert info.value.part == "1g.5gb"
    with pytest.raises(BadInputError):
        plan(node, "1g.10gb", 0)
    with pytest.raises(BadInputError):
        fits(node, "1g.10gb", -1)


def test_capacity_empty_h100():
    cap = capacity(NodeState.empty(H100, 8))
    assert cap == {
        "1g.10gb": 56, "1g.10gb+me": 8, "1g.20gb": 32, "2g.20gb": 24,
        "3g.40gb": 16, "4g.40gb": 8, "7g.80gb": 8,
    }


def test_capacity_respects_compute_and_instances():
    # A100-40GB with a 4g.20gb at 0: three 1g.5gb (compute 4+3=7), one 3g.20gb, one 2g.10gb at 4 only?
    node = NodeState.empty(A100, 1).place(0, "4g.20gb", 0)
    cap = capacity(node)
    assert cap["1g.5gb"] == 3
    assert cap["3g.20gb"] == 1
    assert cap["2g.10gb"] == 1  # 2g@4 + 2g@6 is no placement; and 4+2+2 > 7 compute
    assert cap["7g.40gb"] == 0


def test_mig_disabled_gpu_is_never_used():
    node = NodeState((GpuState(0, H100, mig_enabled=False), GpuState(1, H100)))
    got = plan(node, "1g.10gb", 7)
    assert {i.gpu_index for i in got} == {1}
    assert capacity(node)["7g.80gb"] == 1


def test_plan_request_mixed_and_memory_sized():
    node = NodeState.empty(H100, 1)
    got = plan_request(node, parse_gres("1g.10gb:3,4g.40gb,gres:shard:2"))
    names = sorted(i.profile_name for i in got)
    assert names == ["1g.10gb", "1g.10gb", "1g.10gb", "4g.40gb"]
    apply(node, got)
    got = plan_request(node, parse_gres("gpu:20gb:2"))
    assert [i.profile_name for i in got] == ["1g.20gb", "1g.20gb"]
    got = plan_request(NodeState.empty(H100, 2), parse_gres("gpu:2"))
    assert sorted(i.gpu_index for i in got) == [0, 1] and {i.profile_name for i in got} == {"7g.80gb"}
    with pytest.raises(RequestError):
        plan_request(node, parse_gres("1g.5gb"))


def test_plan_request_needs_exact_joint_search():
    # 4g.40gb + 3g.40gb + nothing else fits one H100 only as 4g@0, 3g@4
    node = NodeState.empty(H100, 1)
    got = plan_request(node, parse_gres("3g.40gb,4g.40gb"))
    assert sorted((i.profile_name, i.start) for i in got) == [("3g.40gb", 4), ("4g.40gb", 0)]
    with pytest.raises(NoFitError):
        plan_request(node, parse_gres("3g.40gb,4g.40gb,1g.10gb"))


def test_mixed_models_node():
    node = NodeState((GpuState(0, A100), GpuState(1, H100)))
    got = plan_request(node, parse_gres("gpu:1g.10gb:1"))  # only the H100 has a 1g.10gb with id 19
    assert got[0].gpu_index in (0, 1)
    prof = node.gpu(got[0].gpu_index).model.profile_by_id(got[0].profile_id)
    assert prof.name == "1g.10gb"
    got = plan_request(node, parse_gres("gpu:2"))
    assert sorted((i.gpu_index, i.profile_name) for i in got) == [(0, "7g.40gb"), (1, "7g.80gb")]
    assert capacity(node)["1g.10gb"] == 4 + 7


def test_plan_is_deterministic():
    node = NodeState.empty(H100, 4).place(2, "2g.20gb", 2).place(0, "1g.10gb", 6)
    first = plan(node, "1g.20gb", 5)
    assert all(plan(node, "1g.20gb", 5) == first for _ in range(3))


# --- properties against brute force -------------------------------------------------------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from mig_oracle import addable_multisets, max_addable, oracle_valid  # noqa: E402

SMALL = ["A30-24GB", "H100-80GB", "A100-40GB", "RTX-PRO-6000-Blackwell-96GB"]


@st.composite
def small_nodes(draw):
    """A node of 1-2 GPUs in a random reachable state."""
    model = CAT.model(draw(st.sampled_from(SMALL)))
    node = NodeState.empty(model, draw(st.integers(1, 2)))
    for _ in range(draw(st.integers(0, 6))):
        g = draw(st.integers(0, len(node.gpus) - 1))
        p = draw(st.sampled_from(model.profiles))
        starts = node.gpu(g).free_starts(p)
        if starts:
            node = node.place(g, p, draw(st.sampled_from(starts)))
    return node


def existing(gpu):
    return [(gpu.model.profile_by_id(s.profile_id), s.start) for s in gpu.slots]


@settings(max_examples=150, deadline=None)
@given(node=small_nodes(), count=st.integers(1, 8))
def test_capacity_and_fits_agree_with_brute_force(node, count):
    model = node.gpus[0].model
    cap = capacity(node)
    assert set(cap) == {p.name for p in model.profiles}
    for p in model.profiles:
        want = sum(max_addable(model, existing(g), p) for g in node.gpus)
        assert cap[p.name] == want, p.name
        assert fits(node, p.name, count) == (count <= want)


@settings(max_examples=100, deadline=None)
@given(node=small_nodes(), data=st.data())
def test_plan_request_succeeds_exactly_when_brute_force_says_it_fits(node, data):
    model = node.gpus[0].model
    base = list(model.base_profiles())
    names = data.draw(st.lists(st.sampled_from([p.name for p in base]), min_size=1, max_size=4))
    wanted = tuple(sorted(names))
    # brute force: split the demand over the GPUs, each part addable to that GPU
    per_gpu = [addable_multisets(model, existing(g), sorted({model.profile(n) for n in names},
                                                             key=lambda p: p.name)) for g in node.gpus]
    possible = any(
        tuple(sorted(sum((list(part) for part in parts), []))) == wanted
        for parts in _products(per_gpu)
    )
    counts = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    reqs = [GresRequest("gpu", n, c, None, f"{n}:{c}") for n, c in counts.items()]
    if possible:
        planned = plan_request(node, reqs)
        after = apply(node, planned)
        assert sorted(i.profile_name for i in planned) == list(wanted)
        assert all(oracle_valid(model, existing(g)) for g in after.gpus)
    else:
        with pytest.raises(NoFitError):
            plan_request(node, reqs)


def _products(per_gpu):
    import itertools

    return itertools.product(*per_gpu)


@settings(max_examples=60, deadline=None)
@given(node=small_nodes(), data=st.data())
def test_plan_is_deterministic_and_valid(node, data):
    from slurm_gpu.core import planner

    model = node.gpus[0].model
    p = data.draw(st.sampled_from(model.profiles))
    count = data.draw(st.integers(1, 3))
    try:
        first = plan(node, p.name, count)
    except NoFitError:
        assert not fits(node, p.name, count)
        return
    planner.clear_caches()  # a cold cache gives the same answer
    assert plan(node, p.name, count) == first
    apply(node, first)


@settings(max_examples=40, deadline=None)
@given(
    seq=st.lists(st.tuples(st.sampled_from(["1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb",
                                            "7g.80gb"]), st.integers(1, 3), st.integers(0, 99)),
                 max_size=30)
)
def test_random_plan_and_release_on_8_gpus_stays_valid(seq):
    node = NodeState.empty(H100, 8)
    live = []
    for name, count, release in seq:
        if live and release < 30:
            gpu_index, start = live.pop(release % len(live))
            node = node.remove(gpu_index, start)
            continue
        if fits(node, name, count):
            planned = plan(node, name, count)
            node = apply(node, planned)
            live.extend((i.gpu_index, i.start) for i in planned)
        else:
            with pytest.raises(NoFitError):
                plan(node, name, count)
        for g in node.gpus:
            assert oracle_valid(H100, existing(g))
