"""The exporter without a cluster: fragmentation, the families of a node the agent changed on the simulated
driver, what the hooks record for it, the dcgm-exporter mapping files, and the command's outputs."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from cli_runner import cli_runner
from fakes import FakeSlurm
from promhelp import promtool

from slurm_gpu.core.catalog import load_catalog
from slurm_gpu.core.fragmentation import fragmentation
from slurm_gpu.core.geometry import GpuState
from slurm_gpu.devices import simstate
from slurm_gpu.devices.calllog import NvmlCallLog
from slurm_gpu.devices.open import open_driver
from slurm_gpu.node.agent import NodeAgent
from slurm_gpu.node.config import parse_config
from slurm_gpu.node.context import AgentPolicy, JobContext
from slurm_gpu.node.hookstats import LogStats, requeue_cause
from slurm_gpu.node.metrics import NodeView, feature_counts, node_families, pending_families
from slurm_gpu.state.journal import Journal

H100 = load_catalog().model("H100-80GB")


def run_cli(args):
    from slurm_gpu.cli.main import main

    return cli_runner().invoke(main, list(args))


def samples(families, name):
    fam = next(f for f in families if f.name == name)
    return [(dict(zip(fam.labels, v)), x) for v, x in fam.samples]


# ------------------------------------------------------------------ fragmentation (pure)
def test_fragmentation_two_holes_cannot_host_a_3g():
    gpu = GpuState(0, H100).place("2g.20gb", 2).place("1g.10gb", 6)
    f = fragmentation(gpu)
    # free 0,1,4,5,7: slice 7 fits nothing (1g.10gb stops at 6, 1g.20gb at 6 is taken); no 3g.40gb fits
    assert (f.free_slices, f.stranded_slices, f.largest_slices) == (5, 1, 2)
    assert f.largest_profile in ("1g.20gb", "2g.20gb") and round(f.ratio, 2) == 0.6
    full = GpuState(0, H100).place("7g.80gb", 0)
    assert fragmentation(full).free_slices == 0 and fragmentation(full).ratio == 0.0
    off = GpuState(0, H100, mig_enabled=False)
    assert fragmentation(off).stranded_slices == 8 and fragmentation(off).largest_slices == 0


def test_fragmentation_never_counts_a_usable_slice_as_stranded():
    gpu = GpuState(0, H100)
    for start in (0, 1, 2, 4):
        gpu = gpu.place("1g.10gb", start)
    f = fragmentation(gpu)
    for profile in H100.profiles:
        for start, size in profile.placements:
            if gpu.can_place(profile, start):
                assert f.largest_slices >= size
    assert f.stranded_slices <= f.free_slices


# ------------------------------------------------------------------ a node changed by the agent
@pytest.fixture
def node(tmp_path):
    state = str(tmp_path / "sim.json")
    simstate.init_state(state, [("H100-80GB", 2)], sandbox=str(tmp_path / "sb"))
    log = NvmlCallLog()
    driver = open_driver("sim", sim_state=state, call_log=log)
    journal = Journal(str(tmp_path / "state"), boot_id="boot-1")
    policy = AgentPolicy(admission="features", release_wait_s=0.3, release_poll_s=0.05,
                         caps_dir=str(tmp_path / "sb/dev/nvidia-caps"), cgroup_root=None,
                         hpc_job_mapping_dir=str(tmp_path / "hpc"))
    agent = NodeAgent("n1", driver, journal, FakeSlurm("n1"), policy)
    agent.call_log = log
    return agent


def ctx(job_id):
    return JobContext(str(job_id), os.getuid(), os.getgid())


def view_of(agent, slurm_jobs=None):
    snap = agent.snapshot()
    return NodeView("n1", "host1", snap, agent.publisher.fit_features(snap.state()), slurm_jobs,
                    sorted(agent.slurm.active))


def test_families_match_the_driver_and_what_slurm_was_told(node):
    node.slurm.add(10, "3g.40gb", 2, slices=8)
    node.slurm.add(11, "1g.10gb", 1, slices=1)
    assert node.prepare(ctx(10)).action == "created"
    assert node.prepare(ctx(11)).action == "created"
    fams = node_families(view_of(node))
    per = samples(fams, "slurm_gpu_mig_instances")
    assert sum(x for _, x in per) == len(node.driver.instances()) == 3
    each = samples(fams, "slurm_gpu_mig_instance")
    assert {s["mig_uuid"] for s, _ in each} == {i.mig_uuid for i in node.driver.instances()}
    assert all(set(s) >= {"gpu", "UUID", "GPU_I_ID", "GPU_I_PROFILE", "ci_id", "Hostname"} for s, _ in each)
    assert not any("job_id" in s for s, _ in each)
    jobs = samples(fams, "slurm_gpu_mig_instance_job")
    assert sorted(s["job_id"] for s, _ in jobs) == ["10", "10", "11"]
    told = feature_counts(sorted(node.slurm.active))
    published = {s["profile"]: x for s, x in samples(fams, "slurm_gpu_profile_published_instances")}
    assert {p: told.get(p, 0) for p in published} == published
    assert samples(fams, "slurm_gpu_slurm_profile_instances") == samples(
        fams, "slurm_gpu_profile_published_instances")
    # A job Slurm no longer runs here makes its instances unowned; an unclaimed instance is an orphan.
    fams = node_families(view_of(node, slurm_jobs={"10"}))
    unowned = {s["mig_uuid"]: x for s, x in samples(fams, "slurm_gpu_mig_instance_unowned")}
    assert sorted(unowned.values()) == [0, 0, 1]


def test_mapping_files_follow_prepare_and_release(node, tmp_path):
    node.slurm.add(10, "2g.20gb", 2, slices=4)
    out = node.prepare(ctx(10))
    files = {p: open(tmp_path / "hpc" / p).read() for p in os.listdir(tmp_path / "hpc")}
    expected = {f"{i.gpu_index}.{i.gi_id}": "10\n" for i in node.driver.instances()}
    assert files == expected and len(files) == 2, out
    assert node.release(ctx(10)).action == "released"
    assert os.listdir(tmp_path / "hpc") == []


def test_a_mapping_file_that_cannot_be_written_is_a_problem_not_a_failure(node, tmp_path):
    (tmp_path / "hpc").write_text("not a directory")
    node.slurm.add(10, "1g.10gb", 1, slices=1)
    out = node.prepare(ctx(10))
    assert out.action == "created" and any("mapping" in p for p in out.problems)


def test_hook_lines_carry_nvml_times_and_feed_the_histograms(node):
    node.slurm.add(10, "1g.10gb", 1, slices=1)
    node.prepare(ctx(10))
    ops = [op for op, _ in node.call_log.timings]
    assert ops == ["gpu_instance_create", "compute_instance_create"]
    stats = LogStats("n1")
    stats.add_hook_line({"hook": "prolog", "action": "created", "seconds": 0.3,
                         "nvml": node.call_log.to_dict(), "capacity_updates": 1, "problems": []})
    stats.add_hook_line({"hook": "epilog", "error": "x"})
    # a served Epilog's re-plan after its answer: its updates and problems count, it is no run of its own
    stats.add_hook_line({"hook": "replan", "job_id": "10", "seconds": 2.0, "capacity_updates": 2,
                         "problems": ["publishing features: x"]})
    stats.add_hook_line({"hook": "reconcile", "failed": 0, "repairs": {"destroy_orphan": 2}})
    stats.add_history_line({"event": "cancelled", "reason": "node lock of n1 busy"})
    fams = {f.name: f for f in stats.families()}
    hist = dict(fams["slurm_gpu_nvml_operation_duration_seconds"].histograms)
    assert hist[("n1", "gpu_instance_create")].count == 1
    assert dict(fams["slurm_gpu_hook_duration_seconds"].histograms)[("n1", "prolog")].count == 1
    runs = {v: x for v, x in fams["slurm_gpu_hook_runs"].samples}
    assert runs[("n1", "epilog", "error")] == 1 and runs[("n1", "reconcile", "ok")] == 1
    assert not [v for v in runs if "replan" in v]
    assert dict(fams["slurm_gpu_hook_duration_seconds"].histograms)[("n1", "epilog")].count == 0
    assert {v: x for v, x in fams["slurm_gpu_capacity_updates"].samples}[("n1",)] == 3
    assert {v: x for v, x in fams["slurm_gpu_reconcile_repairs"].samples}[("n1", "destroy_orphan")] == 2
    assert {v: x for v, x in fams["slurm_gpu_requeues"].samples}[("n1", "cancelled", "lock_busy")] == 1
    assert requeue_cause("no placement for 2x3g.40gb on n2") == "no_placement"


def test_pending_demand_by_profile():
    fams = pending_families(["mig.3g.40gb.2", "mig.3g.40gb.1", "(null)", "mig.7g.80gb.4"], ["1g.10gb"])
    jobs = {s["profile"]: x for s, x in samples(fams, "slurm_gpu_pending_jobs")}
    inst = {s["profile"]: x for s, x in samples(fams, "slurm_gpu_pending_instances")}
    assert jobs == {"1g.10gb": 0, "3g.40gb": 2, "7g.80gb": 1}
    assert inst == {"1g.10gb": 0, "3g.40gb": 3, "7g.80gb": 4}


def test_config_key_is_off_by_default_and_checked():
    assert parse_config({"version": 1}, node="n1").monitoring.hpc_job_mapping_dir is None
    cfg = parse_config({"version": 1, "monitoring": {"hpc_job_mapping_dir": "/run/dcgm/{node}"}}, node="n1")
    assert cfg.monitoring.hpc_job_mapping_dir == "/run/dcgm/n1"
    from slurm_gpu.core.errors import ConfigError

    with pytest.raises(ConfigError):
        parse_config({"version": 1, "monitoring": {"hpc_job_mapping_dir": "relative"}}, node="n1")


def test_log_tail_reads_appended_lines_and_follows_a_rotation(tmp_path):
    from slurm_gpu.cli.collector import LogTail

    path = tmp_path / "history.log"
    tail = LogTail(str(path))
    assert tail.lines() == []
    path.write_text('{"a":1}\n{"a":2}\n{"a"')
    assert tail.lines() == ['{"a":1}', '{"a":2}']
    with open(path, "a") as f:
        f.write(':3}\n')
    os.replace(path, str(path) + ".1")
    path.write_text('{"a":4}\n')
    assert tail.lines() == ['{"a":3}', '{"a":4}']


# ------------------------------------------------------------------ the command
@pytest.fixture
def configured(tmp_path, monkeypatch):
    state = str(tmp_path / "gpus.json")
    simstate.init_state(state, [("H100-80GB", 2)])
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"version: 1\ndriver: {{kind: sim, sim_state: {state}}}\nstate_dir: {tmp_path}/state\n")
    monkeypatch.setenv("SLURM_GPU_CONFIG", str(cfg))
    return tmp_path


def test_help_has_an_example():
    result = run_cli(["exporter", "--help"])
    assert result.exit_code == 0 and "Example:" in result.output and "9470" in result.output


def test_json_document(configured):
    result = run_cli(["exporter", "--node", "n1", "--slurm-interval", "0", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["schema"] == "slurm-gpu.exporter/v1" and doc["node"] == "n1"
    names = {f["name"] for f in doc["families"]}
    assert {"slurm_gpu_gpu_info", "slurm_gpu_profile_fit_instances", "slurm_gpu_hook_duration_seconds",
            "slurm_gpu_gpu_fragmentation_ratio"} <= names


def test_textfile_is_written_atomically(configured):
    out = configured / "tf" / "slurm_gpu.prom"
    out.parent.mkdir()
    result = run_cli(["exporter", "--node", "n1", "--slurm-interval", "0", "--textfile", str(out)])
    assert result.exit_code == 0, result.output
    assert "slurm_gpu_gpu_mig_mode{" in out.read_text()
    assert [p.name for p in out.parent.iterdir()] == ["slurm_gpu.prom"]  # no temporary file left


@pytest.mark.metrics
def test_promtool_check_metrics_on_the_exposition(configured):
    if not promtool():
        pytest.skip("promtool not installed")
    result = run_cli(["exporter", "--node", "n1", "--slurm-interval", "0", "--once"])
    assert result.exit_code == 0
    check = subprocess.run([promtool(), "check", "metrics"], input=result.output.encode(),
                           capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr
