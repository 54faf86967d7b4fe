"""The node agent on the simulated driver (real NvmlDriver code path) with a temporary journal.

The Slurm controller is replaced by ``FakeSlurm`` (same methods as ``SlurmCli``) so that refusals and
requeues can be observed; the real controller is exercised in tests/cluster/test_integration_hooks.py.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
from fakes import FakeSlurm

from slurm_gpu.core.features import is_fit_feature
from slurm_gpu.devices import simstate
from slurm_gpu.devices.open import open_driver
from slurm_gpu.devices.simprocs import attach_process
from slurm_gpu.node.agent import NodeAgent
from slurm_gpu.node.context import AgentPolicy, JobContext
from slurm_gpu.slurm.parse import JobInfo
from slurm_gpu.state.journal import Journal
from slurm_gpu.state.task_env import read_task_env


@pytest.fixture
def node(tmp_path):
    state = str(tmp_path / "sim.json")
    simstate.init_state(state, [("H100-80GB", 2)], sandbox=str(tmp_path / "sb"))
    driver = open_driver("sim", sim_state=state)
    journal = Journal(str(tmp_path / "state"), boot_id="boot-1")
    slurm = FakeSlurm("n1")
    policy = AgentPolicy(admission="features",
                         release_wait_s=0.3, release_poll_s=0.05, create_busy_wait_s=0.3,
                         create_busy_poll_s=0.05, caps_dir=str(tmp_path / "sb/dev/nvidia-caps"),
                         cgroup_root=None)
    agent = NodeAgent("n1", driver, journal, slurm, policy)
    agent.state_path = state
    return agent


def ctx(job_id, uid=None, gid=None):
    return JobContext(str(job_id), os.getuid() if uid is None else uid, os.getgid() if gid is None else gid)


def fit(agent):
    return sorted(f for f in agent.slurm.active if is_fit_feature(f))


def test_prepare_creates_journals_and_writes_task_file(node):
    node.slurm.add(10, "1g.10gb", 1, slices=1)
    out = node.prepare(ctx(10))
    assert out.action == "created", out
    assert len(out.mig_uuids) == 1 and out.mig_uuids[0].startswith("MIG-")
    live = node.driver.instances()
    assert [i.mig_uuid for i in live] == list(out.mig_uuids)
    rec = node.journal.get("10")
    assert rec.phase == "PrepareCompleted" and rec.instances[0].actual.mig_uuid == out.mig_uuids[0]
    assert read_task_env(node.journal.state_dir, os.getuid(), "10") == out.mig_uuids
    mode = stat.S_IMODE(os.stat(node.journal.task_env_path(os.getuid(), "10")).st_mode)
    assert mode == 0o400


def test_prepare_publishes_exact_features_and_keeps_admin_features(node):
    node.slurm.add(11, "7g.80gb", 1, slices=8)
    node.prepare(ctx(11))
    assert "gpu_h100" in node.slurm.active and "gpu_h100" in node.slurm.available
    # One H100 is full, the other empty: exactly one more 7g fits, seven 1g.10gb.
    assert "mig.7g.80gb.1" in fit(node) and "mig.7g.80gb.2" not in fit(node)
    assert "mig.1g.10gb.7" in fit(node) and "mig.1g.10gb.8" not in fit(node)
    assert "mig.7g.80gb.2" in node.slurm.available


def test_non_mig_job_is_left_alone(node):
    node.slurm.add(12)
    out = node.prepare(ctx(12))
    assert out.action == "none"
    assert node.driver.instances() == [] and node.journal.get("12") is None
    assert node.slurm.calls == []


@pytest.mark.parametrize(
    "profile,count,slices,why",
    [
        (None, 1, 4, "without a recorded"),  # someone used the mig gres directly
        ("1g.10gb", 1, 8, "allocated mig:8"),  # forged/mismatched allocation
        ("3g.40gb", 2, 4, "allocated mig:4"),  # too few slices for the request
        ("1g.5gb", 1, 1, "does not exist"),  # an A100-40GB profile on an H100 node
        ("1g.10gb", 9, 9, "max_count_per_node"),
    ],
)
def test_mismatch_is_refused_and_creates_nothing(node, profile, count, slices, why):
    node.slurm.add(13, profile, count, slices=slices)
    out = node.prepare(ctx(13))
    assert out.action == "refused" and why in out.message
    assert node.driver.instances() == []
    assert node.journal.get("13") is None
    assert node.slurm.calls and node.slurm.calls[0][0] == "hold"


def test_race_requeues_without_failing_and_counts(node):
    node.slurm.add(20, "7g.80gb", 1, slices=8)
    node.slurm.add(21, "7g.80gb", 1, slices=8)
    node.slurm.add(22, "4g.40gb", 1, slices=4)
    assert node.prepare(ctx(20)).action == "created"
    assert node.prepare(ctx(21)).action == "created"
    out = node.prepare(ctx(22))  # both GPUs full: the third job raced onto the node
    assert out.action == "requeued"
    assert [c[:2] for c in node.slurm.calls if c[0] == "requeue"] == [("requeue", 22)]
    assert node.journal.get("22") is None
    events = [h for h in node.journal.history() if h.get("event") == "requeued"]
    assert [e["job_id"] for e in events] == ["22"]


@pytest.mark.parametrize("error,drains", [("GPU_IS_LOST", True), ("UNKNOWN", True),
                                          ("INSUFFICIENT_RESOURCES", False), ("IN_USE", False)])
def test_a_broken_gpu_drains_the_node_once_with_the_reason_a_race_does_not(node, error, drains):
    from slurm_gpu.devices.nvml import NvmlDriver
    from slurm_gpu.devices.simnvml import SimNvml

    faults = f"nvmlDeviceCreateGpuInstanceWithPlacement={error}"
    node.driver = NvmlDriver(SimNvml(node.state_path, faults=faults), mig_minors_path="")
    node.slurm.add(25, "1g.10gb", 1, slices=1)
    out = node.prepare(ctx(25))
    assert out.action == "requeued" and node.driver.instances() == []
    drained = [c for c in node.slurm.calls if c[0] == "drain"]
    assert len(drained) == (1 if drains else 0)
    if drains:
        assert drained[0][2].startswith("slurm-gpu: GPU or driver failure:") and "NVML code" in drained[0][2]


def test_a_history_line_that_cannot_be_written_never_fails_a_requeue(node):
    node.slurm.add(23, "7g.80gb", 2, slices=16)
    node.slurm.add(24, "1g.10gb", 1, slices=1)
    assert node.prepare(ctx(23)).action == "created"
    if os.path.exists(node.journal.history_path):
        os.unlink(node.journal.history_path)
    os.mkdir(node.journal.history_path)  # appending to it now fails
    assert node.prepare(ctx(24)).action == "requeued"


@pytest.mark.parametrize(
    "comment,slices,profile",
    [
        # job_submit.lua on an H100 + A100-40GB cluster: 20gb is 1g.20gb (2 slices) on H100 and
        # 3g.20gb (4 slices) on A100-40GB, so it records the size and charges the larger count.
        ("slurm-gpu:gpu:20gb:1", 4, "1g.20gb"),
        ("slurm-gpu:gpu:20gb:1", 2, "1g.20gb"),
        # whole GPUs: the node's full profile
        ("slurm-gpu:gpu:1", 8, "7g.80gb"),
    ],
)
def test_mixed_cluster_requests_resolve_on_the_node(node, comment, slices, profile):
    node.slurm.add(50, slices=slices, comment=comment)
    out = node.prepare(ctx(50))
    assert out.action == "created", out
    [inst] = node.driver.instances()
    assert node.catalog.model("H100-80GB").profile_by_id(inst.profile_id).name == profile
    assert node.journal.get("50").request == f"slurm-gpu:gpu:{profile}:1"


def test_mixed_cluster_request_with_too_many_slices_is_refused(node):
    node.slurm.add(51, slices=9, comment="slurm-gpu:gpu:20gb:1")
    out = node.prepare(ctx(51))
    assert out.action == "refused" and "allocated mig:9" in out.message
    assert node.driver.instances() == []


def test_driver_profile_table_wins_over_the_catalog(tmp_path):
    # A driver that offers 3g.40gb only at slice 4 and no 1g.10gb+me (a table other than the catalog's).
    state = str(tmp_path / "sim.json")
    simstate.init_state(state, [("H100-80GB", 1)])
    with simstate.locked_state(state) as body:
        body["gpus"][0]["profile_overrides"] = {"9": {"placements": [[4, 4]], "max_instances": 1}, "20": None}
    agent = NodeAgent("n1", open_driver("sim", sim_state=state), Journal(str(tmp_path / "j"), boot_id="b"),
                      FakeSlurm("n1"), AgentPolicy(admission="features", cgroup_root=None))
    model = agent.snapshot().state().gpus[0].model
    assert model.profile("3g.40gb").placements == ((4, 4),) and not model.has_profile("1g.10gb+me")
    agent.slurm.add(40, "3g.40gb", 1, slices=4)
    assert agent.prepare(ctx(40)).action == "created"
    assert [(i.profile_id, i.start) for i in agent.driver.instances()] == [(9, 4)]
    # By the catalog a second 3g.40gb would fit at slice 0; by the driver's table it does not.
    assert not any(f.startswith("mig.3g.40gb.") for f in fit(agent))
    assert not any(f.startswith("mig.1g.10gb_me.") for f in fit(agent))
    agent.slurm.add(41, "3g.40gb", 1, slices=4)
    assert agent.prepare(ctx(41)).action == "requeued"


def test_release_destroys_and_is_idempotent(node):
    node.slurm.add(30, "3g.40gb", 2, slices=8)
    out = node.prepare(ctx(30))
    assert out.action == "created" and len(out.mig_uuids) == 2
    assert len(node.driver.instances()) == 2
    rel = node.release(ctx(30))
    assert rel.action == "released", rel
    assert node.driver.instances() == [] and node.journal.get("30") is None
    assert read_task_env(node.journal.state_dir, os.getuid(), "30") is None
    assert node.release(ctx(30)).action == "none"
    assert "mig.7g.80gb.2" in fit(node)


def test_release_after_prolog_died_half_way(node):
    # Intent journalled, first instance created, then the prolog died.
    from slurm_gpu.core.planner import plan

    planned = plan(node.snapshot().state(), "2g.20gb", 2)
    uuids = {g.index: g.uuid for g in node.driver.gpus()}
    from slurm_gpu.state.records import Planned

    node.journal.begin_prepare("40", 1000, 1000, "slurm-gpu:gpu:2g.20gb:2",
                               [Planned.from_any(p, uuids[p.gpu_index]) for p in planned])
    node.driver.create(planned[0].gpu_index, planned[0].profile_id, planned[0].start)
    assert len(node.driver.instances()) == 1
    assert node.release(ctx(40)).action == "released"
    assert node.driver.instances() == [] and node.journal.get("40") is None


def test_release_waits_for_processes_then_leaves_record_for_reconcile(node):
    node.slurm.add(50, "1g.10gb", 1, slices=1)
    out = node.prepare(ctx(50))
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        attach_process(node.state_path, out.mig_uuids[0], proc.pid)
        rel = node.release(ctx(50))
        assert rel.action == "partial" and "not destroyed" in rel.problems[0]
        assert str(proc.pid) in rel.problems[0]
        assert node.journal.get("50").phase == "ReleaseStarted"
        assert len(node.driver.instances()) == 1
    finally:
        proc.kill()
        proc.wait()
    # The process is gone: reconcile finishes the job's release (Slurm no longer runs it).
    node.slurm.jobs[50] = JobInfo(50, "COMPLETED")
    report = node.reconcile()
    kinds = [(a.kind, a.job_id, a.done) for a in report.actions]
    assert ("destroy", "50", True) in kinds and ("finish_release", "50", True) in kinds
    assert node.driver.instances() == [] and node.journal.get("50") is None


def test_release_retries_while_in_use_and_succeeds_when_process_leaves(node):
    node.slurm.add(51, "1g.10gb", 1, slices=1)
    node.policy = AgentPolicy(admission="features",
                              release_wait_s=5, release_poll_s=0.05, caps_dir=node.policy.caps_dir,
                              cgroup_root=None)
    out = node.prepare(ctx(51))
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    attach_process(node.state_path, out.mig_uuids[0], proc.pid)
    rel = node.release(ctx(51))
    proc.wait()
    assert rel.action == "released", rel
    assert node.driver.instances() == []


def test_prepare_twice_reuses_the_instances(node):
    node.slurm.add(60, "2g.20gb", 1, slices=2)
    first = node.prepare(ctx(60))
    second = node.prepare(ctx(60))
    assert second.action == "created" and second.mig_uuids == first.mig_uuids
    assert len(node.driver.instances()) == 1


def test_planned_but_uncreated_placements_are_not_reused(node):
    # Job 70's prolog died after journalling intent: its placements stay reserved until released.
    from slurm_gpu.core.planner import plan
    from slurm_gpu.state.records import Planned

    planned = plan(node.snapshot().state(), "7g.80gb", 2)
    uuids = {g.index: g.uuid for g in node.driver.gpus()}
    node.journal.begin_prepare("70", 1000, 1000, "x",
                               [Planned.from_any(p, uuids[p.gpu_index]) for p in planned])
    node.slurm.add(71, "1g.10gb", 1, slices=1)
    assert node.prepare(ctx(71)).action == "requeued"


def test_reconcile_reaps_orphans_and_spares_active_jobs(node):
    node.slurm.add(80, "3g.40gb", 1, slices=4)
    kept = node.prepare(ctx(80))
    orphan = node.driver.create(1, 9, 4)  # created outside any journal record (3g.40gb@4 on GPU 1)
    node.slurm.add(81, "1g.10gb", 1, slices=1)
    gone = node.prepare(ctx(81))
    node.slurm.jobs[81] = JobInfo(81, "COMPLETED")  # its epilog never ran

    dry = node.reconcile(dry_run=True)
    assert {a.kind for a in dry.actions} == {"destroy_orphan", "destroy", "finish_release"}
    assert not any(a.done for a in dry.actions)
    assert len(node.driver.instances()) == 3

    report = node.reconcile()
    assert all(a.done for a in report.actions if a.kind != "report"), report
    uuids = [i.mig_uuid for i in node.driver.instances()]
    assert uuids == list(kept.mig_uuids)
    assert orphan.mig_uuid not in uuids and gone.mig_uuids[0] not in uuids
    assert node.reconcile().actions == []


def test_reconcile_without_slurm_touches_only_unclaimed(node):
    node.slurm.add(90, "1g.10gb", 1, slices=1)
    node.prepare(ctx(90))
    node.driver.create(1, 19, 0)

    def broken(_node):
        from slurm_gpu.core.errors import SlurmError

        raise SlurmError("controller down")

    node.slurm.active_jobs_on = broken
    report = node.reconcile()
    assert report.slurm_error == "controller down"
    assert [a.kind for a in report.actions] == ["destroy_orphan"]
    assert node.journal.get("90") is not None and len(node.driver.instances()) == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_access_is_granted_to_the_job_user_only_and_revoked(node):
    node.slurm.add(95, "1g.10gb", 1, slices=1)
    out = node.prepare(ctx(95, uid=4242, gid=4343))
    inst = node.driver.instances()[0]
    for minor in (inst.gi_cap_minor, inst.ci_cap_minor):
        st = os.stat(os.path.join(node.policy.caps_dir, f"nvidia-cap{minor}"))
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (4242, 4343, 0o400)
    assert out.action == "created"
    st = os.stat(node.journal.task_env_path(4242, "95"))
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (4242, 0o400)


def test_reconcile_adopts_an_unrecorded_instance_of_a_running_job(node):
    # The prolog created the instance, then died before journalling it; the job still runs.
    from slurm_gpu.core.planner import plan
    from slurm_gpu.state.records import Planned

    planned = plan(node.snapshot().state(), "1g.10gb", 1)
    uuids = {g.index: g.uuid for g in node.driver.gpus()}
    node.journal.begin_prepare("100", 1000, 1000, "slurm-gpu:gpu:1g.10gb:1",
                               [Planned.from_any(p, uuids[p.gpu_index]) for p in planned])
    inst = node.driver.create(planned[0].gpu_index, planned[0].profile_id, planned[0].start)
    node.slurm.add(100, "1g.10gb", 1, slices=1)
    report = node.reconcile()
    assert [(a.kind, a.done) for a in report.actions] == [("adopt", True)]
    rec = node.journal.get("100")
    assert rec.instances[0].state == "created" and rec.instances[0].actual.mig_uuid == inst.mig_uuid
    assert [i.mig_uuid for i in node.driver.instances()] == [inst.mig_uuid]


def test_race_of_a_job_that_cannot_be_requeued_cancels_it(node):
    node.slurm.add(110, "7g.80gb", 2, slices=16)
    assert node.prepare(ctx(110)).action == "created"
    node.slurm.add(111, "1g.10gb", 1, slices=1)

    def refuse(*_a, **_k):
        from slurm_gpu.core.errors import SlurmError

        raise SlurmError("Only batch jobs are accepted or processed")

    node.slurm.requeue = refuse
    out = node.prepare(ctx(111))
    assert out.action == "cancelled" and "requeue failed" in out.problems[0]
    assert [c[:2] for c in node.slurm.calls if c[0] == "cancel"] == [("cancel", 111)]
    assert [h["job_id"] for h in node.journal.history() if h.get("event") == "cancelled"] == ["111"]


def mixed_node(tmp_path, models):
    state = str(tmp_path / "mixed.json")
    simstate.init_state(state, models, mig_enabled=False, sandbox=str(tmp_path / "sbm"))
    agent = NodeAgent("n2", open_driver("sim", sim_state=state), Journal(str(tmp_path / "st2"), boot_id="b"),
                      FakeSlurm("n2"), AgentPolicy(admission="features",
                                                   caps_dir=str(tmp_path / "sbm/dev/nvidia-caps"),
                                                   cgroup_root=None))
    return agent


def test_hopper_gpu_without_mig_mode_is_switched_on_when_chosen(tmp_path):
    agent = mixed_node(tmp_path, [("H100-80GB", 1)])
    assert "mig.1g.10gb.7" in agent.publish_features()  # counted as MIG-capable while still off
    agent.slurm.add(120, "1g.10gb", 1, slices=1)
    out = agent.prepare(ctx(120))
    assert out.action == "created"
    gpu = agent.driver.gpus()[0]
    assert gpu.mig_current and len(agent.driver.instances()) == 1


def test_ampere_gpu_without_mig_mode_is_never_switched_by_a_hook(tmp_path):
    agent = mixed_node(tmp_path, [("A100-40GB", 1)])
    assert agent.publish_features() == ()
    agent.slurm.add(121, "1g.5gb", 1, slices=1)
    out = agent.prepare(ctx(121))
    assert out.action == "requeued" and "needs a GPU reset" in out.message
    gpu = agent.driver.gpus()[0]
    assert not gpu.mig_current and not gpu.mig_pending


def _fake_cgroup(tmp_path):
    """A stand-in for /sys/fs/cgroup/devices with Slurm's per-node top: rules are read back as lines."""
    top = tmp_path / "cg" / "slurm_n1"
    top.mkdir(parents=True)
    (top / "devices.deny").write_text("")
    return tmp_path / "cg"


def _denied(path):
    return set(path.read_text().splitlines())


@pytest.mark.skipif(os.geteuid() != 0, reason="device nodes need root")
def test_every_job_is_sealed_from_other_instances_and_gpus_before_they_exist(node, tmp_path):
    root = _fake_cgroup(tmp_path)
    node.policy = AgentPolicy(admission="features", caps_dir=node.policy.caps_dir, cgroup_root=str(root))
    node.slurm.add(130, "1g.10gb", 1, slices=1)
    first = node.prepare(ctx(130, uid=4242, gid=4242))
    node.slurm.add(131, None, 0, slices=0)  # a job of the same user that asked for no GPU
    node.prepare(ctx(131, uid=4242, gid=4242))
    node.slurm.add(132, "1g.10gb", 1, slices=1)
    out = node.prepare(ctx(132, uid=4242, gid=4242))
    assert "sealed" in out.message
    mine = [i for i in node.driver.instances() if i.mig_uuid in out.mig_uuids][0]
    other = [i for i in node.driver.instances() if i.mig_uuid in first.mig_uuids][0]
    major = os.major(os.stat(os.path.join(node.policy.caps_dir, "nvidia-cap1")).st_rdev)
    gpus = {g.index: g.minor for g in node.driver.gpus()}
    plain = _denied(root / "slurm_n1" / "uid_4242" / "job_131" / "devices.deny")
    sealed = _denied(root / "slurm_n1" / "uid_4242" / "job_132" / "devices.deny")
    # The GPU-less job: every GPU and every capability minor, including those of job 132's instance,
    # which did not exist when it was sealed.
    assert {f"c 195:{m} rwm" for m in gpus.values()} <= plain
    assert {f"c {major}:{mine.gi_cap_minor} rwm", f"c {major}:{mine.ci_cap_minor} rwm"} <= plain
    # Job 132: the other job's instance is denied, its own and its own GPU are not.
    assert {f"c {major}:{other.gi_cap_minor} rwm", f"c {major}:{other.ci_cap_minor} rwm"} <= sealed
    assert f"c {major}:{mine.ci_cap_minor} rwm" not in sealed
    assert f"c 195:{gpus[mine.gpu_index]} rwm" not in sealed
    assert {f"c 195:{m} rwm" for i, m in gpus.items() if i != mine.gpu_index} <= sealed
