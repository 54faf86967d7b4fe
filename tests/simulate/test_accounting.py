"""Explicit accounting of a replay: in-window offered load, every rejected job with its reason, one exit
behaviour for `trace info` and `simulate`, equivalent spellings, multi-GPU jobs under static and shards."""

from __future__ import annotations

import json

import pytest
from cli_runner import cli_runner

from slurm_gpu.simulate.accounting import account_trace
from slurm_gpu.simulate.cluster import parse_cluster
from slurm_gpu.simulate.engine import SHIPPED_BF_INTERVAL, SHIPPED_MAX_STARTS, SimConfig, Simulation
from slurm_gpu.simulate.policies import POLICIES, make_policy
from slurm_gpu.simulate.traces import TraceJob, parse_job_gres, write_trace


def _trace(tmp_path, jobs):
    path = tmp_path / "t.jsonl"
    with open(path, "w") as fh:
        write_trace(jobs, fh)
    return str(path)


def _cli(*args):
    from slurm_gpu.cli import main as cli_main

    return cli_runner().invoke(cli_main.main, list(args))


def test_in_window_offered_load_and_the_all_work_figure():
    # 1 node x 1 H100 (8 memory slices), arrivals over 100 s: a 7g job for 50 s in the window, one that
    # runs 10,000 s from t=50 (50 s of it in the window), and the last arrival.
    jobs = [
        TraceJob("1", 0.0, 50.0, "gpu:7g.80gb:1"),
        TraceJob("2", 50.0, 10000.0, "gpu:7g.80gb:1"),
        TraceJob("3", 100.0, 10.0, "gpu:1g.10gb:1"),
    ]
    acc = account_trace(jobs, parse_cluster("1x1xH100-80GB"))
    assert acc.offered_load == pytest.approx((8 * 50 + 8 * 50 + 0) / (8 * 100))
    assert acc.offered_load_all_work == pytest.approx((8 * 50 + 8 * 10000 + 1 * 10) / (8 * 100), abs=1e-4)


@pytest.mark.parametrize(
    "text,key",
    [
        ("gpu:nvidia_h100_80gb_hbm3_3g.40gb:1", "3g.40gb"),  # Slurm's AutoDetect=nvml name
        ("gres/gpu:nvidia_a100-sxm4-80gb_1g.10gb=2", "1g.10gb"),
        ("gpu:a100:2", "a100"),  # a site's GPU type: whole GPUs of the models it names
    ],
)
def test_slurm_type_names_are_normalised(text, key):
    assert parse_job_gres(text)[0] == key


def test_equivalent_spellings_are_one_request():
    jobs = [
        TraceJob("1", 0.0, 10.0, "gpu:1"),
        TraceJob("2", 1.0, 10.0, "gpu:7g.80gb:1"),
        TraceJob("3", 2.0, 10.0, "gpu:40gb"),
        TraceJob("4", 3.0, 10.0, "gpu:nvidia_h100_80gb_hbm3_3g.40gb:1"),
    ]
    acc = account_trace(jobs, parse_cluster("1x2xH100-80GB"))
    assert acc.mix == {"40gb": 2, "gpu": 2}
    sim = Simulation(jobs, parse_cluster("1x2xH100-80GB"), make_policy("static"))
    assert len({j.key for j in sim.jobs}) == 2  # the layout picker sees two profiles, not four


def test_gpu_type_resolves_on_its_model_only():
    jobs = [TraceJob("1", 0.0, 10.0, "gpu:a100:2"), TraceJob("2", 1.0, 10.0, "gpu:1g.10gb:1")]
    on_h100 = account_trace(jobs, parse_cluster("1x4xH100-80GB"))
    assert on_h100.rejected_reasons == {"a100: no profile or GPU type of H100-80GB": 1}
    assert account_trace(jobs, parse_cluster("1x4xA100-80GB")).rejected == 0


def _unknown_trace(tmp_path):
    return _trace(
        tmp_path,
        [
            TraceJob("1", 0.0, 10.0, "gpu:a100:2"),
            TraceJob("2", 5.0, 10.0, "gpu:1g.10gb:1"),
            TraceJob("3", 9.0, 10.0, "gpu:3g.40gb:9"),
        ],
    )


@pytest.mark.parametrize("policy", POLICIES)
def test_simulate_counts_every_rejection_with_its_reason(tmp_path, policy):
    path = _unknown_trace(tmp_path)
    r = _cli("simulate", "--trace", path, "--cluster", "1x4xH100-80GB", "--policy", policy, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["rejected"] == 2 and doc["started"] == 1
    assert doc["rejected_reasons"] == {
        "a100: no profile or GPU type of H100-80GB": 1,
        "needs 9 x 3g.40gb on one node; a node holds at most 8": 1,
    }
    assert "2 jobs could never run" in r.stderr
    strict = _cli("simulate", "--trace", path, "--cluster", "1x4xH100-80GB", "--policy", policy, "--strict")
    assert strict.exit_code == 3 and "a100: no profile" in strict.stderr


def test_trace_info_exits_as_simulate_does(tmp_path):
    path = _unknown_trace(tmp_path)
    r = _cli("trace", "info", path, "--cluster", "1x4xH100-80GB", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["rejected"] == 2 and "2 jobs could never run" in r.stderr
    assert set(doc) >= {"offered_load", "offered_load_all_work", "rejected_reasons", "mix"}
    assert _cli("trace", "info", path, "--cluster", "1x4xH100-80GB", "--strict").exit_code == 3
    table = _cli("trace", "info", path, "--cluster", "1x4xH100-80GB")
    assert "rejected_reasons:" in table.stdout


def test_each_policy_runs_on_the_scheduler_settings_shipped_for_its_admission(tmp_path):
    jobs = [TraceJob("1", 0.0, 10.0, "gpu:1g.10gb:1"), TraceJob("2", 1.0, 10.0, "gpu:1g.10gb:1")]
    for name in POLICIES:
        sim = Simulation(jobs, parse_cluster("1x1xH100-80GB"), make_policy(name))
        # feature admission ships one start per pass; count admission (default) and the baselines run
        # Slurm's own defaults
        shipped = (SHIPPED_MAX_STARTS, SHIPPED_BF_INTERVAL) if name == "features" else (0, 30.0)
        assert (sim.max_starts, sim.bf_interval) == shipped, name
    asked = Simulation(jobs, parse_cluster("1x1xH100-80GB"), make_policy("features"),
                       SimConfig(max_starts=0, bf_interval=30.0))
    assert (asked.max_starts, asked.bf_interval) == (0, 30.0)
    limited = Simulation(jobs, parse_cluster("1x1xH100-80GB"), make_policy("default"),
                         SimConfig(max_starts=1, bf_interval=5.0))
    assert (limited.max_starts, limited.bf_interval) == (1, 5.0)


CHECKED = SimConfig(check_invariants=True)


def _multi_gpu_jobs():
    jobs = [TraceJob(str(i), float(i), 100.0, "gpu:1g.10gb:1") for i in range(20)]
    jobs += [TraceJob(f"w{i}", 5.0 + i, 300.0, "gpu:8") for i in range(3)]
    jobs.append(TraceJob("multi", 9.0, 300.0, "gpu:16", nodes=2))  # per node: 8 GPUs on each of 2
    return jobs


def test_static_layout_keeps_nodes_for_multi_gpu_jobs_and_is_reported(tmp_path):
    path = _trace(tmp_path, _multi_gpu_jobs())
    r = _cli("simulate", "--trace", path, "--cluster", "3x8xH100-80GB", "--policy", "static", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    # gpu:16 per node is 16 whole GPUs on an 8-GPU node: the trace's own error, rejected by every policy
    assert doc["rejected"] == 1 and list(doc["rejected_reasons"]) == [
        "needs 16 x 7g.80gb on one node; a node holds at most 8"
    ]
    assert doc["started"] == 23  # the three gpu:8 jobs run
    layout = {d["layout"]: d["gpus"] for d in doc["static_layout"]}
    assert layout["7g.80gb"] >= 8 and sum(layout.values()) == 24
    table = _cli("simulate", "--trace", path, "--cluster", "3x8xH100-80GB", "--policy", "static")
    assert "static_layout:" in table.stdout and "x H100-80GB: 7g.80gb" in table.stdout


def test_static_says_why_a_layout_cannot_hold_a_job(tmp_path):
    jobs = [TraceJob("1", 0.0, 10.0, "gpu:3g.40gb:2"), TraceJob("2", 1.0, 10.0, "gpu:1g.10gb:1")]
    sim = Simulation(jobs, parse_cluster("2x1xH100-80GB"), make_policy("static", layout="3g.40gb,1g.10gb*4"))
    assert sim.rejected_reasons == {"the static layout has 0 nodes with 2 x 3g.40gb; the job needs 1": 1}


def test_shards_run_whole_gpu_jobs_on_idle_gpus_and_say_why_not_others():
    jobs = [
        TraceJob("whole", 0.0, 100.0, "gpu:2"),
        TraceJob("small", 1.0, 100.0, "gpu:1g.10gb:1"),
        TraceJob("split", 2.0, 100.0, "gpu:4g.40gb:2"),  # 8 shards from one GPU of 7
    ]
    sim = Simulation(jobs, parse_cluster("1x4xH100-80GB"), make_policy("shards"), CHECKED)
    result = sim.run()
    assert result.started == 2 and result.rejected == 1
    assert list(result.rejected_reasons) == [
        "needs 8 shards on one GPU (Slurm takes all of a job's shards on a node from one GPU); a GPU has 7"
    ]
    assert sim.jobs[0].start == 0.0 and sim.jobs[1].start == 1.0  # the 1g job shares no GPU of it


def test_whole_gpu_jobs_need_idle_gpus_under_shards():
    # a 1g job holds GPU 0's shards: the 4-GPU job must wait for it, as gres/gpu and gres/shard exclude
    jobs = [TraceJob("small", 0.0, 100.0, "gpu:1g.10gb:1"), TraceJob("whole", 1.0, 50.0, "gpu:4")]
    sim = Simulation(jobs, parse_cluster("1x4xH100-80GB"), make_policy("shards"), CHECKED)
    sim.run()
    assert sim.jobs[1].start == 100.0
