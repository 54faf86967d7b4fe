"""Metrics comparable with published MIG results, the ideal bound and the instance-time model, on
hand-made traces whose answers follow from the H100 placement rules."""

from __future__ import annotations

import json

import pytest
from cli_runner import cli_runner

from slurm_gpu.cli.main import main as MAIN
from slurm_gpu.core.catalog import load_catalog
from slurm_gpu.core.fragmentation import spare_compute
from slurm_gpu.core.slotplan import slot_capacity
from slurm_gpu.simulate.cluster import parse_cluster
from slurm_gpu.simulate.engine import SimConfig, Simulation, simulate
from slurm_gpu.simulate.ideal import fluid_spare
from slurm_gpu.simulate.overhead import InstanceTimes, parse_times
from slurm_gpu.simulate.policies import POLICIES, make_policy
from slurm_gpu.simulate.traces import TraceJob, read_trace, write_trace

H100 = load_catalog().model("H100-80GB")
ONE_GPU = parse_cluster("1x1xH100-80GB")


def _jobs(*specs):
    """(submit, duration, gres) -> jobs; ids in order."""
    return [TraceJob(str(i), s, d, g) for i, (s, d, g) in enumerate(specs)]


def _slot(name, start):
    p = H100.profile(name)
    return (start, p.memory_slices, p.profile_id)


def test_spare_compute_follows_the_placement_rules():
    assert spare_compute(H100, ()) == 7
    # two 3g.40gb hold all 8 memory slices: the 7th compute slice can never be used
    assert spare_compute(H100, (_slot("3g.40gb", 0), _slot("3g.40gb", 4))) == 0
    # a 4g.40gb at 0 leaves a 3g.40gb at 4: all 3 free compute slices are usable
    assert spare_compute(H100, (_slot("4g.40gb", 0),)) == 3


def test_fluid_spare_is_a_knapsack_of_compute_and_memory():
    assert fluid_spare(H100, 7, 8) == (7, 8)
    assert fluid_spare(H100, 1, 0) == (0, 0)  # compute left, no memory: stranded
    assert fluid_spare(H100, 3, 4) == (3, 4)


def test_two_3g_instances_strand_one_compute_slice():
    trace = _jobs((0.0, 1000.0, "gpu:3g.40gb:1"), (0.0, 1000.0, "gpu:3g.40gb:1"),
                  (1000.0, 10.0, "gpu:1g.10gb:1"))
    out = simulate(trace, ONE_GPU, make_policy("oracle"), SimConfig(max_starts=0)).to_dict()
    assert out["stranded_capacity"] == pytest.approx(1.0)  # the one free compute slice is stranded
    assert out["stranded_of_total"] == pytest.approx(1 / 7)
    assert out["compute_utilization"] == pytest.approx(6 / 7)
    assert out["memory_utilization"] == pytest.approx(1.0) == out["utilization"]
    assert out["fragmentation"] == 0.0  # no free memory slice at all
    assert len(out["over_time"]["stranded_capacity"]) == 10


def test_ideal_ignores_alignment_and_request_fragmentation_is_counted():
    # two 2g.20gb where the planner puts them leave no aligned 3g.40gb start, though 4 slices are free
    trace = _jobs((0.0, 1000.0, "gpu:2g.20gb:1"), (0.0, 1000.0, "gpu:2g.20gb:1"),
                  (0.0, 1000.0, "gpu:3g.40gb:1"), (2000.0, 10.0, "gpu:1g.10gb:1"))
    real = simulate(trace, ONE_GPU, make_policy("features"), SimConfig()).to_dict()
    ideal = simulate(trace, ONE_GPU, make_policy("ideal"), SimConfig()).to_dict()
    assert real["request_fragmented"] == 1 and real["fragmentation"] > 0
    assert ideal["request_fragmented"] == 0 and ideal["fragmentation"] == 0
    assert ideal["mean_wait_s"] < 10 < real["mean_wait_s"]
    assert "ideal" in POLICIES


def test_instance_times_delay_the_run_and_hold_the_slices():
    trace = _jobs((0.0, 100.0, "gpu:7g.80gb:1"), (0.0, 100.0, "gpu:7g.80gb:1"), (500.0, 1.0, "gpu:1"))
    times = InstanceTimes()
    sim = Simulation(trace, ONE_GPU, make_policy("oracle"), SimConfig(instance_times=times))
    sim.run()
    first, second = sim.jobs[0], sim.jobs[1]
    assert first.setup == 1.5  # the default for the whole GPU
    assert first.end == pytest.approx(1.5 + 100.0 + 1.5)
    assert second.start >= first.end  # the slices were held while the instance was destroyed
    assert sim.result is not None and sim.result.to_dict()["instance_times"]["1g.10gb"]["create_s"] == 0.25
    static = simulate(trace, ONE_GPU, make_policy("static", layout="7g.80gb"),
                      SimConfig(instance_times=times))
    assert static.mean_wait_s < sim.result.mean_wait_s  # static makes no instances
    assert "instance_times" not in static.to_dict()


def test_parse_times():
    assert parse_times("0.5") == ({}, 0.5)
    assert parse_times("1g.10gb=0.3, 7G.80GB=1.4") == ({"1g.10gb": 0.3, "7g.80gb": 1.4}, None)
    assert parse_times(None) == ({}, None)
    with pytest.raises(Exception, match="PROFILE=SECONDS"):
        parse_times("fast")


def test_percentiles_and_window_in_the_cli(tmp_path):
    jobs = read_trace("traces/steady.jsonl")[:400]
    path = tmp_path / "t.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        write_trace(jobs, fh)
    res = cli_runner().invoke(MAIN, ["simulate", "--trace", str(path), "--cluster", "2x8xH100-80GB",
                               "--policy", "ideal", "--window", "600:3000", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["window_s"] == [600.0, 3000.0]
    assert out["p50_wait_s"] <= out["p95_wait_s"] <= out["p99_wait_s"]
    for key in ("compute_utilization", "memory_utilization", "stranded_capacity", "fragmentation",
                "request_fragmented", "over_time", "instance_times"):
        assert key in out
    bad = cli_runner().invoke(MAIN, ["simulate", "--trace", str(path), "--cluster", "2x8xH100-80GB",
                               "--create-time", "soon"])
    assert bad.exit_code == 3
    table = cli_runner().invoke(MAIN, ["simulate", "--trace", str(path), "--cluster", "2x8xH100-80GB",
                                 "--create-time", "0"])
    assert table.exit_code == 0 and "stranded_capacity:" in table.output
    both = cli_runner().invoke(MAIN, ["simulate", "--trace", str(path), "--cluster", "2x8xH100-80GB",
                                "--vs-ideal", "--json"])
    assert both.exit_code == 0, both.output
    doc = json.loads(both.stdout)
    assert doc["policy"] == "default" and set(doc["ideal"]) >= {"mean_wait_s", "stranded_capacity"}


@pytest.mark.parametrize("key", ["H100-80GB", "A30-24GB"])
def test_spare_compute_agrees_with_the_planner(key):
    """Random states: the planner's capacity (how many of one profile alone fit) bounds the spare
    compute from below, the free compute from above, and both say "nothing fits" together."""
    import random

    from slurm_gpu.core.geometry import GpuState

    model = load_catalog().model(key)
    rng = random.Random(7)
    for _ in range(40):
        gpu = GpuState(0, model)
        for _ in range(rng.randint(1, 5)):
            options = [(p, s) for p in model.profiles for s in gpu.free_starts(p)]
            if not options:
                break
            p, s = rng.choice(options)
            gpu = gpu.place(p, s)
        slots = tuple((s.start, s.size, s.profile_id) for s in gpu.slots)
        caps = slot_capacity(model, slots)
        spare = spare_compute(model, slots)
        free = model.compute_slices_total - sum(model.profile_by_id(pid).compute_slices for *_, pid in slots)
        best_single = max(model.profile(name).compute_slices * n for name, n in caps.items())
        assert best_single <= spare <= free, slots
        assert (spare == 0) == (best_single == 0), slots


def test_progress_reports_often_and_ends_full():
    calls = []
    trace = [TraceJob(str(i), float(i), 30.0, "gpu:1g.10gb:1") for i in range(120)]
    simulate(trace, ONE_GPU, make_policy("default"), SimConfig(progress=lambda d, t: calls.append((d, t))))
    assert len(calls) >= 10 and calls[-1] == (120, 120)
