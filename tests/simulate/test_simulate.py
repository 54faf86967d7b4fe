"""The trace simulator: the planner's answers on slot tuples, invariants of every policy, determinism, CLI."""

from __future__ import annotations

import json
import random

import pytest
from cli_runner import cli_runner

from slurm_gpu.core.catalog import load_catalog
from slurm_gpu.core.errors import BadInputError, NoFitError
from slurm_gpu.core.geometry import GpuState, NodeState, Slot
from slurm_gpu.core.planner import capacity as planner_capacity
from slurm_gpu.core.planner import plan as planner_plan
from slurm_gpu.simulate.cluster import parse_cluster
from slurm_gpu.simulate.engine import SimConfig, Simulation
from slurm_gpu.simulate.policies import (
    POLICIES,
    FeaturesPolicy,
    ShardsPolicy,
    make_policy,
)
from slurm_gpu.simulate.slots import ModelTable
from slurm_gpu.simulate.state import SimNode, plan_on_node
from slurm_gpu.simulate.static import StaticPolicy, maximal_layouts
from slurm_gpu.simulate.traces import TraceJob, generate, write_trace

CAT = load_catalog()
H100 = CAT.model("H100-80GB")
SMALL = parse_cluster("4x4xH100-80GB")


def _random_states(model, n, seed):
    """Random reachable GPU states built through geometry.GpuState.place (the reference rules)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        gpu = GpuState(0, model)
        for _ in range(rng.randint(0, 7)):
            p = rng.choice(model.profiles)
            starts = gpu.free_starts(p)
            if starts:
                gpu = gpu.place(p, rng.choice(starts))
        out.append(gpu)
    return out


@pytest.mark.parametrize("key", ["H100-80GB", "A100-40GB", "A30-24GB", "RTX-PRO-6000-Blackwell-96GB"])
def test_slot_tables_give_the_planners_capacity(key):
    model = CAT.model(key)
    names = [p.name for p in model.profiles]
    table = ModelTable(model, names)
    for gpu in _random_states(model, 300, seed=hash(key) % 1000):
        slots = tuple((s.start, s.size, s.profile_id) for s in gpu.slots)
        # capacity per profile alone equals the planner's answer for a one-GPU node
        expected = planner_capacity(NodeState((gpu,)))
        got = dict(zip(names, table.capacity(slots)))
        assert {n: got[n] for n in expected} == expected


@pytest.mark.parametrize("seed", range(3))
def test_replay_places_exactly_as_the_planner(seed):
    """Every placement of the replay is what ``planner.plan`` decides on the node's state."""
    rng = random.Random(seed)
    names = ["1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"]
    node = SimNode(0, "n", ModelTable(H100, names), 4)
    for _ in range(200):
        key, count = rng.randrange(len(names)), rng.choice([1, 1, 2])
        state = NodeState(
            tuple(GpuState(g, H100, tuple(Slot(*s) for s in slots)) for g, slots in enumerate(node.gpus))
        )
        try:
            expected = [(i.gpu_index, i.start) for i in planner_plan(state, names[key], count)]
        except NoFitError:  # the replay must find no room either
            expected = None
        got = plan_on_node(node, key, count)
        assert (None if got is None else [(g, start) for g, start, _ in got]) == expected
        if got is not None:
            for g, _start, after in got:
                node.set_gpu(g, after)
        if rng.random() < 0.4:  # free one instance somewhere
            used = [(g, s[0]) for g, slots in enumerate(node.gpus) for s in slots]
            if used:
                g, start = rng.choice(used)
                node.set_gpu(g, node.table.remove(node.gpus[g], start))


def test_layouts_are_maximal_and_valid():
    layouts = maximal_layouts(H100, H100.base_profiles())
    kinds = {tuple(sorted(pid for _, _, pid in slots)) for slots in layouts}
    assert len(kinds) == len(layouts) > 5
    for slots in layouts:
        gpu = GpuState(0, H100, tuple(Slot(*s) for s in slots))
        assert all(not gpu.free_starts(p) for p in H100.base_profiles())  # maximal
    assert ((0, 8, H100.profile("7g.80gb").profile_id),) in layouts


def _trace(kind="steady", n=300, seed=1, cluster=SMALL, load=0.9):
    return generate(kind, n, H100, cluster.memory_slices(), load=load, seed=seed)


def _run(policy, trace, cluster=SMALL, **cfg):
    sim = Simulation(trace, cluster, policy, SimConfig(check_invariants=True, **cfg))
    return sim, sim.run()


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("kind", ["steady", "bursty"])
def test_invariants_hold_for_every_policy(policy, kind):
    trace = _trace(kind)
    sim, result = _run(make_policy(policy), trace)  # check_invariants: no overlap, valid slots, books balance
    assert result.jobs == len(trace)
    # conservation: every job either ran to its end or was refused up front
    assert result.started + result.rejected == result.jobs
    for job in sim.jobs:
        if job.start is not None:
            assert job.start >= job.submit and job.end == job.start + job.duration
            assert not job.alloc  # released
    assert all(
        node.free == node.total and node.gpus == [()] * len(node.gpus) and not node.jobs for node in sim.nodes
    )
    assert result.misfit_rate == pytest.approx(
        result.misfits / (result.started + result.misfits or 1), abs=1e-6
    )
    assert 0 < result.utilization <= 1


def test_utilization_never_exceeds_the_cluster_at_any_instant():
    sim, result = _run(make_policy("default"), _trace("bursty"), record_series=True)
    assert max(result.series.used) <= sim.total_slices
    assert result.series.misfits[-1] == result.misfits


@pytest.mark.parametrize("kind", ["steady", "bursty", "mostly-small"])
def test_oracle_never_misfits_and_static_never_misfits(kind):
    trace = _trace(kind)
    for name in ("oracle", "static"):
        _, result = _run(make_policy(name), trace)
        assert result.misfits == 0 and result.drains == 0


def test_features_race_only_with_many_starts_per_pass_and_never_drain():
    trace = _trace("bursty", n=400)
    _, unlimited = _run(FeaturesPolicy(), trace, max_starts=0, bf_interval=30.0)  # Slurm's defaults
    _, shipped = _run(FeaturesPolicy(), trace)  # one start per pass, bf_interval=5
    _, shards = _run(ShardsPolicy(), trace)
    assert unlimited.misfits > 0  # snapshot features race within a pass
    assert unlimited.drains == shipped.drains == 0
    assert shipped.misfits == 0
    assert shards.drains == shards.misfits > 0


def test_identical_seeds_give_identical_results():
    a = _run(FeaturesPolicy(), _trace(seed=5))[1].to_dict()
    b = _run(FeaturesPolicy(), _trace(seed=5))[1].to_dict()
    c = _run(FeaturesPolicy(), _trace(seed=6))[1].to_dict()
    assert a == b
    assert a != c


def test_fifo_order_without_backfill_room():
    # one GPU: a 7g job blocks; the 1g job behind it must not start before it (ends after the reservation)
    cluster = parse_cluster("1x1xH100-80GB")
    trace = [
        TraceJob("1", 0.0, 100.0, "gpu:4g.40gb"),
        TraceJob("2", 1.0, 100.0, "gpu:7g.80gb"),
        TraceJob("3", 2.0, 500.0, "gpu:1g.10gb"),
        TraceJob("4", 3.0, 50.0, "gpu:3g.40gb"),  # fits now and ends before job 2 could start: backfilled
    ]
    sim, _ = _run(make_policy("oracle"), trace, cluster=cluster)
    start = {j.id: j.start for j in sim.jobs}
    assert start["1"] == 0.0
    assert start["2"] == 100.0
    assert start["3"] >= 200.0
    assert 3.0 <= start["4"] < 100.0


def test_static_layout_from_text_and_exact_profile_waits():
    cluster = parse_cluster("1x1xH100-80GB")
    trace = [
        TraceJob("1", 0.0, 100.0, "gpu:3g.40gb"),
        TraceJob("2", 0.0, 100.0, "gpu:3g.40gb"),
        TraceJob("3", 0.0, 100.0, "gpu:3g.40gb"),
        TraceJob("4", 0.0, 10.0, "gpu:1g.10gb"),
    ]
    sim, result = _run(StaticPolicy("3g.40gb,3g.40gb"), trace, cluster=cluster)
    start = {j.id: j.start for j in sim.jobs}
    assert start["1"] == start["2"] == 0.0 and start["3"] == 100.0
    assert result.rejected == 1  # no 1g.10gb slot in this layout, ever
    with pytest.raises(BadInputError):
        _run(StaticPolicy("4g.40gb,4g.40gb"), trace, cluster=cluster)


def test_best_static_layout_follows_the_mix():
    trace = _trace("mostly-large", n=300)
    policy = StaticPolicy()
    Simulation(trace, SMALL, policy)
    pids = [pid for node in policy.layouts for slots in node for _, _, pid in slots]
    big = pids.count(H100.profile("7g.80gb").profile_id) + pids.count(H100.profile("3g.40gb").profile_id)
    assert big > pids.count(H100.profile("1g.10gb").profile_id)


def test_multi_node_jobs_take_distinct_nodes():
    trace = [TraceJob(str(i), float(i), 100.0, "gpu:3g.40gb:2", nodes=2) for i in range(6)]
    for name in POLICIES:
        sim, result = _run(make_policy(name, layout="3g.40gb,3g.40gb"), trace)
        assert result.started == 6
        for job in sim.jobs:
            assert len(set(job.alloc_nodes)) == 2


def test_mixed_cluster_yaml(tmp_path):
    spec = tmp_path / "c.yaml"
    spec.write_text(
        "nodes:\n  - {count: 2, gpus: 4, model: H100-80GB}\n"
        "  - {count: 2, gpus: 2, model: A100-40GB, name: a}\n"
    )
    cluster = parse_cluster(str(spec))
    assert [n.name for n in cluster.nodes] == ["g0n000", "g0n001", "a000", "a001"]
    trace = [
        TraceJob("1", 0.0, 10.0, "gpu:1g.5gb"),
        TraceJob("2", 0.0, 10.0, "gpu:1"),
        TraceJob("3", 0.0, 10.0, "gpu:3g.40gb"),
        TraceJob("4", 0.0, 10.0, "gpu:40gb"),  # memory-sized: 3g.40gb on H100, 7g.40gb on A100-40GB
        TraceJob("5", 0.0, 10.0, "gpu:60gb"),  # only an H100 7g.80gb holds it
    ]
    sim, result = _run(make_policy("oracle"), trace, cluster=cluster)
    assert result.started == 5
    nodes = {j.id: cluster.nodes[j.alloc_nodes[0]].model for j in sim.jobs}
    assert nodes["1"] == "A100-40GB" and nodes["3"] == nodes["5"] == "H100-80GB"
    placed = {j.id: sim.nodes[j.alloc_nodes[0]].table.profiles[j.key].name for j in sim.jobs}
    assert placed["5"] == "7g.80gb"
    spec.write_text("nodes:\n  - {count: 2, gpus: 4, modle: H100-80GB}\n")
    with pytest.raises(BadInputError, match="unknown keys"):
        parse_cluster(str(spec))


@pytest.mark.parametrize("spec", ["16x8", "0x8xH100-80GB", "2x2xNOPE", "missing.yaml"])
def test_bad_cluster_specs(spec):
    with pytest.raises(BadInputError):
        parse_cluster(spec)


def test_cli_simulate_json_and_trace_generate(tmp_path):
    from slurm_gpu.cli import main as cli_main

    runner = cli_runner()
    path = tmp_path / "t.jsonl"
    r = runner.invoke(
        cli_main.main,
        [
            "trace",
            "generate",
            "steady",
            "--jobs",
            "200",
            "--cluster",
            "4x4xH100-80GB",
            "--seed",
            "3",
            "-o",
            str(path),
        ],
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli_main.main, ["trace", "info", str(path), "--cluster", "4x4xH100-80GB", "--json"])
    info = json.loads(r.stdout)
    assert info["offered_load_all_work"] == pytest.approx(0.9, abs=1e-3)  # what --load sizes
    assert info["offered_load"] < info["offered_load_all_work"]  # the in-window share of it
    docs = {}
    for policy in POLICIES:
        r = runner.invoke(
            cli_main.main,
            ["simulate", "--trace", str(path), "--cluster", "4x4xH100-80GB", "--policy", policy, "--json"],
        )
        assert r.exit_code == 0, r.output
        docs[policy] = json.loads(r.stdout)
    keys = [
        "schema",
        "policy",
        "jobs",
        "started",
        "misfits",
        "misfit_rate",
        "utilization",
        "mean_wait_s",
        "p95_wait_s",
        "makespan_s",
        "drains",
    ]
    for policy, doc in docs.items():
        assert list(doc)[: len(keys)] == keys
        assert doc["policy"] == policy and doc["jobs"] == 200
    r = runner.invoke(cli_main.main, ["simulate", "--trace", str(path), "--cluster", "bad", "--json"])
    assert r.exit_code == 3


def test_cli_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    from slurm_gpu.cli import main as cli_main

    path = tmp_path / "t.jsonl"
    with open(path, "w") as fh:
        write_trace(_trace(n=100), fh)
    png = tmp_path / "p.png"
    r = cli_runner().invoke(
        cli_main.main, ["simulate", "--trace", str(path), "--cluster", "4x4xH100-80GB", "--plot", str(png)]
    )
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_planner_placement_keeps_the_invariants_and_the_outcome():
    trace = _trace("steady", n=200)
    _, real = _run(make_policy("default"), trace)  # slurm_gpu.core.planner places
    assert real.misfits == 0
    assert real.started == 200


def test_features_admission_is_the_published_fit_features():
    """What the features policy lets Slurm see is exactly features.active_features(planner.capacity(node))."""
    from slurm_gpu.core.features import active_features, feature

    trace = _trace("mostly-small", n=150)
    policy = FeaturesPolicy()
    sim = Simulation(trace, SMALL, policy, SimConfig())
    seen = []
    begin = policy.begin_pass

    def check():
        begin()
        node = random.Random(len(seen)).choice(sim.nodes)
        state = NodeState(
            tuple(GpuState(g, H100, tuple(Slot(*s) for s in slots)) for g, slots in enumerate(node.gpus))
        )
        published = set(active_features(planner_capacity(state), 8))
        snapshot = policy.tiers[0][node.index]
        for k, key in enumerate(sim.keys):
            for count in (1, 2):
                assert (snapshot[k] >= count) == (feature(key, count) in published)
        seen.append(node.index)

    policy.begin_pass = check
    sim.run()
    assert len(seen) > 50


@pytest.mark.parametrize("priority, first", [("submit", "2"), ("small-first", "3"), ("large-first", "2")])
def test_priority_order_decides_who_takes_the_freed_gpu(priority, first):
    # one GPU, full until t=100; a 7g job and then a 1g job wait for it: the queue's order picks which
    # starts at 100 (the other waits for it to end: neither fits beside the other's reservation)
    cluster = parse_cluster("1x1xH100-80GB")
    trace = [
        TraceJob("1", 0.0, 100.0, "gpu:7g.80gb"),
        TraceJob("2", 1.0, 100.0, "gpu:7g.80gb"),
        TraceJob("3", 2.0, 500.0, "gpu:1g.10gb"),
    ]
    sim, _ = _run(make_policy("oracle"), trace, cluster=cluster, priority=priority)
    start = {j.id: j.start for j in sim.jobs}
    assert start[first] == 100.0
    assert start["3" if first == "2" else "2"] >= 200.0


def test_unknown_priority_is_refused():
    with pytest.raises(BadInputError, match="priority 'fair'"):
        Simulation([TraceJob("1", 0.0, 1.0, "gpu:1g.10gb")], parse_cluster("1x1xH100-80GB"),
                   make_policy("default"), SimConfig(priority="fair"))
