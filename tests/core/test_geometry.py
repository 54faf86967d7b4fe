"""Validity rules of MIG placements on one GPU."""

import dataclasses

import pytest

from slurm_gpu.core.catalog import load_catalog
from slurm_gpu.core.errors import BadInputError, NoFitError
from slurm_gpu.core.geometry import GpuState, NodeState, Slot

CAT = load_catalog()
H100 = CAT.model("H100-80GB")
RTX = CAT.model("RTX-PRO-6000-Blackwell-96GB")


def test_placements_come_from_the_catalog():
    gpu = GpuState(0, H100)
    for p in H100.profiles:
        assert gpu.free_starts(p) == p.placement_starts
    with pytest.raises(BadInputError) as info:
        gpu.place(H100.profile("3g.40gb"), 2)
    assert info.value.part == "2"
    with pytest.raises(BadInputError):
        gpu.place(H100.profile("1g.10gb"), 7)  # slice 7 takes no 1g instance on H100


def test_no_overlap():
    gpu = GpuState(0, H100).place("3g.40gb", 4)
    assert not gpu.can_place("1g.10gb", 5)
    assert not gpu.can_place("2g.20gb", 4)
    assert gpu.can_place("4g.40gb", 0)  # 4g@0 + 3g@4 is valid (R510+)
    with pytest.raises(NoFitError):
        gpu.place("1g.20gb", 6)


def test_max_instances():
    gpu = GpuState(0, H100).place("1g.10gb+me", 0)
    assert gpu.why_not("1g.10gb+me", 1) is not None
    assert gpu.can_place("1g.10gb", 1)


def test_compute_slice_total():
    # 1g.20gb uses 2 memory slices but 1 compute slice; four of them use 4 of 7 compute slices
    gpu = GpuState(0, H100)
    for s in (0, 2, 4, 6):
        gpu = gpu.place("1g.20gb", s)
    assert gpu.used_compute_slices == 4
    # 3g.40gb@0 + 3g.40gb@4 = 6 compute; a 4g@0 + 3g@4 = 7; 2g x 3 + ... exhaust compute
    gpu = GpuState(0, H100).place("4g.40gb", 0).place("2g.20gb", 4)
    assert gpu.used_compute_slices == 6
    assert gpu.free_starts("2g.20gb") == ()  # 2g@6 is no placement
    assert gpu.can_place("1g.10gb", 6)
    gpu = gpu.place("1g.10gb", 6)
    assert gpu.used_compute_slices == 7
    # slices 7 is free but a 1g.10gb cannot start there; a 1g.20gb needs a compute slice
    assert "occupied" in gpu.why_not("1g.20gb", 6)
    free_compute = GpuState(0, H100).place("4g.40gb", 0).place("2g.20gb", 4).place("1g.10gb", 6)
    assert free_compute.free_starts("1g.10gb") == ()


def test_compute_limit_alone_blocks():
    # Real catalogs rarely exhaust compute before memory, so shrink the compute budget of an H100
    small = dataclasses.replace(H100, compute_slices_total=4)
    gpu = GpuState(0, small).place("3g.40gb", 0)
    assert gpu.can_place("1g.10gb", 4)
    assert not gpu.can_place("2g.20gb", 4)
    assert "compute" in gpu.why_not("2g.20gb", 4)
    assert gpu.place("1g.10gb", 4).free_starts("1g.10gb") == ()


def test_max_gpu_instances():
    gpu = GpuState(0, H100)
    for s in range(7):
        gpu = gpu.place("1g.10gb", s)
    assert len(gpu.slots) == H100.max_gpu_instances
    assert all(not gpu.free_starts(p) for p in H100.profiles)


def test_me_all_is_exclusive_except_no_me():
    gpu = GpuState(0, RTX).place("1g.24gb+me.all", 0)
    assert gpu.can_place("1g.24gb-me", 3)
    assert gpu.can_place("2g.48gb-me", 6)
    assert not gpu.can_place("1g.24gb", 3)
    assert not gpu.can_place("1g.24gb+gfx", 3)
    assert "media engines" in gpu.why_not("1g.24gb", 3)
    # and the other way round
    other = GpuState(0, RTX).place("1g.24gb", 0)
    assert not other.can_place("1g.24gb+me.all", 3)
    no_me = GpuState(0, RTX).place("1g.24gb-me", 0)
    assert no_me.can_place("1g.24gb+me.all", 3)


def test_mig_mode_disabled():
    gpu = GpuState(0, H100, mig_enabled=False)
    assert gpu.free_starts("1g.10gb") == ()
    with pytest.raises(NoFitError):
        gpu.place("1g.10gb", 0)
    assert gpu.with_mig(True).can_place("1g.10gb", 0)


def test_values_are_immutable_and_sorted():
    gpu = GpuState(0, H100)
    placed = gpu.place("1g.10gb", 5).place("1g.10gb", 1)
    assert gpu.slots == ()
    assert [s.start for s in placed.slots] == [1, 5]
    with pytest.raises(AttributeError):
        placed.index = 3  # type: ignore[misc]
    assert placed.remove(5).slots == (Slot(1, 1, 19),)
    with pytest.raises(BadInputError):
        placed.remove(3)


def test_constructor_rejects_impossible_slots():
    with pytest.raises(BadInputError):
        GpuState(0, H100, (Slot(0, 4, 9), Slot(2, 2, 14)))  # overlap
    with pytest.raises(BadInputError):
        GpuState(0, H100, (Slot(6, 4, 9),))  # past the last slice
    with pytest.raises(BadInputError):
        GpuState(0, H100, (Slot(0, 2, 9),))  # wrong size for the profile
    with pytest.raises(BadInputError):
        GpuState(0, H100, (Slot(0, 1, 99),))  # unknown profile id


def test_profile_of_another_model_is_refused():
    a100 = CAT.model("A100-40GB")
    with pytest.raises(BadInputError):
        GpuState(0, H100).can_place(a100.profile("1g.5gb"), 0)


def test_node_state():
    node = NodeState.empty(H100, 3)
    node2 = node.place(2, "7g.80gb", 0)
    assert node.gpu(2).is_empty and not node2.gpu(2).is_empty
    assert node2.remove(2, 0) == node
    with pytest.raises(BadInputError):
        node.gpu(5)
    with pytest.raises(BadInputError):
        NodeState((GpuState(0, H100), GpuState(0, H100)))


# --- properties ---------------------------------------------------------------------------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from mig_oracle import oracle_valid  # noqa: E402

MODELS = [m.key for m in CAT.models]


@settings(max_examples=200, deadline=None)
@given(
    key=st.sampled_from(MODELS),
    ops=st.lists(st.tuples(st.booleans(), st.integers(0, 63), st.integers(0, 15)), max_size=40),
)
def test_random_place_remove_never_breaks_the_rules(key, ops):
    model = CAT.model(key)
    gpu = GpuState(0, model)
    for is_place, pick, start_pick in ops:
        if is_place or not gpu.slots:
            p = model.profiles[pick % len(model.profiles)]
            start = p.placement_starts[start_pick % len(p.placement_starts)]
            before = [(model.profile_by_id(s.profile_id), s.start) for s in gpu.slots]
            legal = oracle_valid(model, before + [(p, start)])
            assert gpu.can_place(p, start) == legal
            if legal:
                gpu = gpu.place(p, start)
            else:
                with pytest.raises((NoFitError, BadInputError)):
                    gpu.place(p, start)
        else:
            gpu = gpu.remove(gpu.slots[pick % len(gpu.slots)].start)
        layout = [(model.profile_by_id(s.profile_id), s.start) for s in gpu.slots]
        assert oracle_valid(model, layout)
        masks = [s.mask for s in gpu.slots]
        assert sum(masks) == gpu.used_mask  # disjoint masks add up to their union
