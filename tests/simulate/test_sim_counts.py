"""Count admission in the simulator (``default``): the node agent's rules on slot tuples, starts within the
published counts, no misfits, and no start limit."""

from __future__ import annotations

import random

import pytest

from slurm_gpu.core.catalog import load_catalog
from slurm_gpu.core.errors import NoFitError
from slurm_gpu.core.geometry import GpuState, NodeState, Slot
from slurm_gpu.core.target import (
    choose_target,
    choose_target_slots,
    consistent,
    held,
    held_slots,
    place,
    place_slots,
)
from slurm_gpu.simulate.base import SHIPPED_BF_INTERVAL, SHIPPED_MAX_STARTS
from slurm_gpu.simulate.cluster import parse_cluster
from slurm_gpu.simulate.counts import CountsPolicy
from slurm_gpu.simulate.engine import SimConfig, Simulation
from slurm_gpu.simulate.policies import FeaturesPolicy, make_policy
from slurm_gpu.simulate.traces import TraceJob, generate

CAT = load_catalog()
H100 = CAT.model("H100-80GB")
SMALL = parse_cluster("4x4xH100-80GB")


def _node(slots_per_gpu):
    return NodeState(tuple(GpuState(g, H100, tuple(Slot(*s) for s in slots))
                           for g, slots in enumerate(slots_per_gpu)))


def _random_node(rng, gpus=4):
    out = []
    for _ in range(gpus):
        gpu = GpuState(0, H100)
        for _ in range(rng.randint(0, 4)):
            p = rng.choice([p for p in H100.profiles if p.is_base])
            starts = gpu.free_starts(p)
            if starts:
                gpu = gpu.place(p, rng.choice(starts))
        out.append(tuple((s.start, s.size, s.profile_id) for s in gpu.slots))
    return out


def test_the_slot_forms_are_the_node_agents_rules():
    """choose_target_slots / place_slots answer exactly as choose_target / place on a NodeState."""
    rng = random.Random(7)
    names = ["1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb", "1g.20gb"]
    for _ in range(60):
        slots = _random_node(rng)
        node = _node(slots)
        demand = [(rng.choice(names), rng.randint(1, 2)) for _ in range(rng.randint(0, 8))]
        target = choose_target_slots(H100, slots, {}, demand)
        assert target == choose_target(node, {}, demand)
        assert held_slots(H100, slots) == held(node) and consistent(target, node)
        for name in sorted(target):
            try:
                want = place(node, target, name, 1)
            except NoFitError:
                with pytest.raises(NoFitError):
                    place_slots(H100, slots, target, name, 1)
                continue
            assert place_slots(H100, slots, target, name, 1) == want


def test_default_is_count_admission_and_features_keeps_the_start_limit():
    default, features = make_policy("default"), make_policy("features")
    assert isinstance(default, CountsPolicy) and default.name == "default"
    assert isinstance(features, FeaturesPolicy) and features.name == "features"
    trace = [TraceJob("1", 0.0, 10.0, "gpu:1g.10gb")]
    assert (Simulation(trace, SMALL, default).max_starts, Simulation(trace, SMALL, default).bf_interval) \
        == (0, 30.0)
    sim = Simulation(trace, SMALL, features)
    assert (sim.max_starts, sim.bf_interval) == (SHIPPED_MAX_STARTS, SHIPPED_BF_INTERVAL)


class _Checked(CountsPolicy):
    """Counts admission that checks, at every allocation and after every pass, what Slurm may see."""

    def allocate(self, job, exclude):
        before = [dict(self.counts(n)[1]) for n in range(len(self.nodes))]
        nodes = super().allocate(job, exclude)
        for n in nodes or ():
            name = self.names[n][job.key]
            assert before[n].get(name, 0) >= job.count  # within the published counts
        return nodes

    def end_pass(self):
        super().end_pass()
        for n, node in enumerate(self.nodes):
            state = _node(node.gpus)
            have = held(state)
            target, free = self.counts(n)
            # what Slurm sees free is the target less what is allocated (= held: prologs ran)
            assert free == {p: c - have.get(p, 0) for p, c in target.items()}
            assert consistent(target, state)  # the promise fits together


@pytest.mark.parametrize("kind,seed", [("steady", 1), ("bursty", 2), ("mostly-small", 3),
                                       ("mostly-large", 4)])
def test_counts_never_misfit_and_start_within_the_counts(kind, seed):
    trace = generate(kind, 250, H100, SMALL.memory_slices(), load=0.9, seed=seed)
    policy = _Checked()
    sim = Simulation(trace, SMALL, policy, SimConfig(check_invariants=True))
    result = sim.run()
    assert result.misfits == 0 and result.drains == 0
    assert result.started == len(trace) - result.rejected
    assert all(j.attempts == 1 for j in sim.jobs if j.start is not None)  # no requeue, ever
    assert policy.replans > 0


def _burst(n=32, at=0.0):
    return [TraceJob(str(i), at, 600.0, "gpu:1g.10gb:1", time_limit=3600.0) for i in range(n)]


def test_burst_fill_is_not_one_start_per_pass():
    cluster = parse_cluster("4x8xH100-80GB")
    counts = Simulation(_burst(), cluster, make_policy("default"), SimConfig(check_invariants=True))
    counts.run()
    starts = [j.start for j in counts.jobs]
    # one re-plan of the counts (the watch loop's next tick) admits the whole burst in one pass
    assert all(s is not None for s in starts) and max(starts) <= 5.0 and len(set(starts)) == 1
    limited = Simulation(_burst(), cluster, make_policy("features"), SimConfig())
    limited.run()
    assert max(j.start for j in limited.jobs) > 10 * max(max(starts), 1.0)


def test_a_new_profile_waits_for_the_next_re_plan():
    """On an idle node the counts are the fill (7g.80gb per GPU): a 1g.10gb job starts at the watch
    loop's next tick, not before; a job of a filled profile starts at once."""
    one = parse_cluster("1x1xH100-80GB")
    sim = Simulation([TraceJob("1", 12.0, 10.0, "gpu:1g.10gb")], one, CountsPolicy(publish_interval=5.0))
    sim.run()
    assert sim.jobs[0].start == 15.0
    sim = Simulation([TraceJob("1", 12.0, 10.0, "gpu:7g.80gb")], one, CountsPolicy(publish_interval=5.0))
    sim.run()
    assert sim.jobs[0].start == 12.0


def test_the_counts_follow_the_queue_where_the_planner_alone_fragments():
    # two 2g.20gb placed by the planner alone leave no aligned 3g.40gb start; a target that follows the
    # queue promises all three together
    one = parse_cluster("1x1xH100-80GB")
    trace = [TraceJob("1", 0.0, 1000.0, "gpu:2g.20gb:1"), TraceJob("2", 0.0, 1000.0, "gpu:2g.20gb:1"),
             TraceJob("3", 0.0, 1000.0, "gpu:3g.40gb:1")]
    counts = Simulation(trace, one, make_policy("default"), SimConfig(check_invariants=True))
    counts.run()
    features = Simulation(trace, one, make_policy("features"), SimConfig())
    features.run()
    assert [j.start for j in counts.jobs] == [0.0, 0.0, 0.0]
    assert features.jobs[2].start is not None and features.jobs[2].start >= 1000.0


def test_bad_publish_interval_is_refused():
    from slurm_gpu.core.errors import BadInputError

    with pytest.raises(BadInputError):
        CountsPolicy(publish_interval=0)
