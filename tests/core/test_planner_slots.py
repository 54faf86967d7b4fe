"""The planner on plain slot tuples (``plan_slots``, ``slot_capacity``) decides as on a NodeState."""

import random

import pytest

from slurm_gpu.core.catalog import load_catalog
from slurm_gpu.core.errors import NoFitError, UnknownProfileError
from slurm_gpu.core.geometry import GpuState, NodeState
from slurm_gpu.core.planner import capacity, plan
from slurm_gpu.core.slotplan import plan_slots, slot_capacity

CAT = load_catalog()


def _slots(gpu: GpuState):
    return tuple((s.start, s.size, s.profile_id) for s in gpu.slots)


@pytest.mark.parametrize("key", ["H100-80GB", "A100-40GB", "A30-24GB", "RTX-PRO-6000-Blackwell-96GB"])
def test_same_decisions_as_on_a_node_state(key):
    model = CAT.model(key)
    rng = random.Random(key)
    for _ in range(60):
        gpus = []
        for g in range(rng.randint(1, 4)):
            gpu = GpuState(g, model)
            for _ in range(rng.randint(0, 5)):
                p = rng.choice(model.profiles)
                starts = gpu.free_starts(p)
                if starts:
                    gpu = gpu.place(p, rng.choice(starts))
            gpus.append(gpu)
        node = NodeState(tuple(gpus))
        raw = [(g.index, _slots(g)) for g in gpus]
        for g in gpus:
            assert slot_capacity(model, _slots(g)) == capacity(NodeState((g,)))
        for p in model.profiles:
            count = rng.randint(1, 3)
            try:
                expected = plan(node, p.name, count)
            except NoFitError:
                with pytest.raises(NoFitError):
                    plan_slots(model, raw, p.name, count)
            else:
                assert plan_slots(model, raw, p.name, count) == expected


def test_unknown_profile_names_the_profile():
    with pytest.raises(UnknownProfileError) as info:
        plan_slots(CAT.model("H100-80GB"), [(0, ())], "1g.5gb")
    assert info.value.part == "1g.5gb"
