"""Count admission on one node (``node.publish.CountPublisher`` in the agent): the target follows the queue,
a lowered count is published before the raised ones, a race keeps the allocated slot, a job's start and end
change no count, and what Slurm undercounts is published that much lower."""

from __future__ import annotations

import os

import pytest

from slurm_gpu.core import target
from slurm_gpu.devices import simstate
from slurm_gpu.devices.open import open_driver
from slurm_gpu.node.agent import NodeAgent
from slurm_gpu.node.context import AgentPolicy, JobContext
from slurm_gpu.state.journal import Journal
from tests.fakes import FakeGresSlurm


def _agent(tmp_path, model, slurm):
    """A count-admission agent on node n1 of two simulated ``model`` GPUs, Slurm faked by ``slurm``."""
    state = str(tmp_path / "sim.json")
    simstate.init_state(state, [(model, 2)], sandbox=str(tmp_path / "sb"))
    policy = AgentPolicy(release_wait_s=0.3, release_poll_s=0.05, cgroup_root=None, admission="counts",
                         caps_dir=str(tmp_path / "sb/dev/nvidia-caps"))
    journal = Journal(str(tmp_path / "state"), boot_id="b")
    return NodeAgent("n1", open_driver("sim", sim_state=state), journal, slurm, policy)


@pytest.fixture
def node(tmp_path):
    agent = _agent(tmp_path, "H100-80GB", FakeGresSlurm("n1"))
    yield agent
    agent.driver.close()


def ctx(job_id):
    return JobContext(str(job_id), os.getuid(), os.getgid())


def publish(agent):
    with agent.journal.lock():
        return agent.publish_features(agent.snapshot())


def _ended(agent, job_id):
    """Slurm has the job COMPLETED (it no longer counts against the node)."""
    agent.slurm.jobs[job_id] = type(agent.slurm.jobs[job_id])(job_id, "COMPLETED", (), 1000, ("n1",))


def test_idle_node_offers_whole_gpus_then_follows_the_queue(node):
    publish(node)
    assert node.slurm.counts() == {"7g.80gb": 2}
    assert [g for g in node.slurm.gres if g.type == "unused"][0].count == 12  # constant total 14
    node.slurm.pending = ["gres:migp:1g.10gb:2", "gres:migp:3g.40gb:1"]
    publish(node)
    counts = node.slurm.counts()
    assert counts["1g.10gb"] >= 2 and counts["3g.40gb"] >= 1
    assert sum(g.count for g in node.slurm.gres if g.name == "migp") == 14
    # Lowered first: the whole GPU it gives up is gone before any new slot appears.
    assert node.slurm.updates[-2] == "migp:7g.80gb:1,migp:unused:13"


def test_a_jobs_start_and_end_change_no_count(node):
    node.slurm.pending = ["gres:migp:1g.10gb:1", "gres:migp:1g.10gb:1"]
    publish(node)
    node.slurm.pending = []
    before = list(node.slurm.updates)
    node.slurm.add_typed(5, "1g.10gb")
    out = node.prepare(ctx(5))
    assert out.action == "created", out
    assert node.slurm.updates == before
    assert node.release(ctx(5)).action == "released"
    # While its epilog runs Slurm still counts the job: its slot stays promised until the next re-plan.
    assert node.slurm.counts().get("1g.10gb", 0) >= 1
    _ended(node, 5)
    publish(node)
    assert node.slurm.counts() == {"7g.80gb": 2}


def test_allocated_slots_survive_a_replan_and_a_race(node):
    node.slurm.pending = ["gres:migp:3g.40gb:1"] * 4
    publish(node)
    assert node.slurm.counts().get("3g.40gb") == 4
    # Two are allocated (prolog not yet run); the queue is gone. The re-plan must keep both.
    node.slurm.add_typed(1, "3g.40gb")
    node.slurm.add_typed(2, "3g.40gb")
    node.slurm.pending = []

    def allocate_while_lowering(fake):  # a third lands between the lowering and the raise
        fake.on_update = None
        fake.add_typed(3, "3g.40gb")

    node.slurm.on_update = allocate_while_lowering
    publish(node)
    assert node.publisher.replans == 1
    assert node.slurm.counts().get("3g.40gb", 0) >= 3
    for job in (1, 2, 3):
        assert node.prepare(ctx(job)).action == "created"
    assert target.held(node.snapshot().state()) == {"3g.40gb": 3}


def test_undercounted_allocations_are_published_lower(node):
    node.slurm.pending = ["gres:migp:1g.10gb:1"] * 2
    publish(node)
    node.slurm.add_typed(1, "1g.10gb")
    node.slurm.add_typed(2, "1g.10gb")
    assert node.prepare(ctx(1)).action == "created" and node.prepare(ctx(2)).action == "created"
    node.slurm.pending = []
    publish(node)
    before = node.slurm.counts()
    node.slurm.undercount = {"1g.10gb": 1}  # GresUsed after `scontrol reconfigure`: 1 of 2
    publish(node)
    after = node.slurm.counts()
    assert after["1g.10gb"] == before["1g.10gb"] - 1  # what Slurm sees free stays the promise
    after.pop("1g.10gb")
    before.pop("1g.10gb")
    assert after == before


def test_prolog_refuses_an_allocation_of_another_profile(node):
    publish(node)
    node.slurm.add_typed(9, "7g.80gb")
    job = node.slurm.jobs[9]
    node.slurm.jobs[9] = type(job)(**{**job.__dict__, "admin_comment": "slurm-gpu:gpu:1g.10gb:1"})
    out = node.prepare(ctx(9))
    assert out.action == "refused" and "migp:7g.80gb:1" in out.message
    assert node.driver.instances() == []


def _held(job_id, profile, count, nodes, reason="JobHeldUser", mark=True):
    from slurm_gpu.core.target import gres_type
    from slurm_gpu.slurm.parse import AWAIT_MARK, PendingJob

    comment = f"slurm-gpu:gpu:{profile}:{count}" + (f" {AWAIT_MARK}" if mark else "")
    return PendingJob(str(job_id), True, reason, tuple(nodes), f"gres:migp:{gres_type(profile)}:{count}",
                      comment)


def test_held_jobs_naming_the_node_are_released_once_it_publishes_their_slots(node):
    node.slurm.pending = [
        _held(11, "1g.10gb", 2, ["n1"]),  # held by job_submit.lua for its --nodelist: released
        _held(12, "3g.40gb", 1, ["n1", "n2"], reason="BadConstraints", mark=False),  # held by Slurm
        _held(13, "1g.10gb", 1, ["n2"]),  # names another node
        _held(14, "1g.10gb", 1, ["n1"], mark=False),  # its user's own hold: never released
    ]
    publish(node)
    counts = node.slurm.counts()
    assert counts.get("1g.10gb", 0) >= 2 and counts.get("3g.40gb", 0) >= 1, counts  # planned for, held or not
    assert node.slurm.released == ["11", "12"]


def test_a_held_job_waits_while_the_node_cannot_publish_its_slots(node):
    node.slurm.add_typed(21, "7g.80gb", 2)  # allocated by Slurm, not created yet: the node is full
    node.slurm.pending = [_held(22, "1g.10gb", 1, ["n1"])]
    publish(node)
    assert node.slurm.released == []


@pytest.fixture
def a100_node(tmp_path):
    """An A100-40GB node of a cluster that also has H100s: slurm.conf gives it the cluster's aliases."""
    from slurm_gpu.slurm.parse import GresCount

    slurm = FakeGresSlurm("n1")
    slurm.gres = [GresCount("migp", t, 0) for t in ("5gb", "20gb", "40gb", "whole")]
    agent = _agent(tmp_path, "A100-40GB", slurm)
    yield agent
    agent.driver.close()


def _profiles(agent):
    from slurm_gpu.core.catalog import load_catalog

    model = load_catalog().model("A100-40GB")
    return sorted(model.profile_by_id(i.profile_id).name for i in agent.driver.instances())


def test_an_alias_follows_the_queue_and_means_this_models_profile(a100_node):
    node = a100_node
    node.slurm.pending = ["gres:migp:20gb:2"]  # gpu:20gb:2 on a cluster of H100s and A100-40GBs
    publish(node)
    counts = node.slurm.counts()
    assert counts.get("20gb") == 2 and "3g.20gb" not in counts
    assert sum(g.count for g in node.slurm.gres if g.name == "migp") == 14  # the constant total
    node.slurm.pending = []
    before = list(node.slurm.updates)
    node.slurm.add_typed(7, "20gb", 2, request="gpu:17gb:2")
    out = node.prepare(ctx(7))
    assert out.action == "created", out
    assert _profiles(node) == ["3g.20gb", "3g.20gb"]  # what gpu:17gb means on an A100-40GB
    assert node.slurm.updates == before  # a start costs no update, under an alias too
    assert node.release(ctx(7)).action == "released"
    assert node.driver.instances() == []


def test_whole_gpus_by_alias_and_profiles_share_the_node_exactly(a100_node):
    node = a100_node
    node.slurm.pending = ["gres:migp:whole:1", "gres:migp:1g.5gb:3"]
    publish(node)
    counts = node.slurm.counts()
    assert counts.get("whole") == 1 and counts.get("1g.5gb", 0) >= 3
    assert target.consistent({"7g.40gb": 1, "1g.5gb": counts["1g.5gb"]}, node.snapshot().state())
    node.slurm.add_typed(1, "whole", 1, request="gpu:1")
    node.slurm.add_typed(2, "1g.5gb", 3)
    assert node.prepare(ctx(1)).action == "created"
    assert node.prepare(ctx(2)).action == "created"
    assert _profiles(node) == ["1g.5gb", "1g.5gb", "1g.5gb", "7g.40gb"]


def test_an_alias_allocation_that_means_another_profile_is_refused(a100_node):
    node = a100_node
    node.slurm.pending = ["gres:migp:20gb:1"]
    publish(node)
    node.slurm.add_typed(3, "20gb", 1, request="gpu:1g.5gb:1")  # 20gb is 3g.20gb here, not 1g.5gb
    out = node.prepare(ctx(3))
    assert out.action != "created" and "migp:20gb:1" in out.message and "1x1g.5gb" in out.message, out
    assert node.driver.instances() == []


def test_the_queue_is_read_before_the_node_lock_is_taken(node):
    # A squeue of thousands of jobs on a busy controller takes seconds: no Prolog may wait on the lock
    # behind it. The Epilog's and the watch loop's re-plans read the queue first, then lock.
    locked_reads = []
    read = node.slurm.pending_jobs

    def pending_jobs():
        locked_reads.append(node.journal.locked)
        return read()

    node.slurm.pending_jobs = pending_jobs
    node.slurm.pending = ["gres:migp:1g.10gb:1"]
    node.publisher.prefetch()
    publish(node)
    node.slurm.add_typed(5, "1g.10gb")
    assert node.prepare(ctx(5)).action == "created"
    assert node.release(ctx(5)).action == "released"
    assert locked_reads == [False, False]  # the watch loop's and the Epilog's, each outside the lock
    node.release(ctx(6))  # not a job of ours: no queue read at all
    assert len(locked_reads) == 2


def _searches(node, monkeypatch):
    """Record, per search for a target layout, whether the node lock was held."""
    from slurm_gpu.node import publish as publish_module

    locked = []
    search = publish_module.choose_typed_target

    def recorded(*args, **kwargs):
        locked.append(node.journal.locked)
        return search(*args, **kwargs)

    monkeypatch.setattr(publish_module, "choose_typed_target", recorded)
    return locked


def test_the_epilogs_replan_searches_outside_the_lock(node, monkeypatch):
    # The hook server's Epilog re-plans after answering slurmd, while Slurm starts the next job on the
    # freed slot: that job's Prolog must not wait on the lock behind the search for the target.
    node.slurm.pending = ["gres:migp:1g.10gb:1"]
    publish(node)
    node.slurm.add_typed(5, "1g.10gb")
    assert node.prepare(ctx(5)).action == "created"
    node.slurm.pending = ["gres:migp:3g.40gb:2"]
    locked = _searches(node, monkeypatch)
    assert node.release(ctx(5), publish=False).action == "released"
    _ended(node, 5)
    assert node.publish_after_release() == []
    assert locked == [False]  # searched once, ahead; the publish under the lock found the same node
    assert node.slurm.counts()["3g.40gb"] >= 2
    published = node.slurm.counts()
    publish(node)  # a fresh re-plan of the same node and queue says the same
    assert node.slurm.counts() == published


def test_a_plan_ahead_of_another_node_state_is_not_used(node, monkeypatch):
    node.slurm.pending = ["gres:migp:2g.20gb:1"]
    publish(node)
    node.slurm.add_typed(7, "2g.20gb")
    assert node.prepare(ctx(7)).action == "created"
    _ended(node, 7)
    node.slurm.pending = ["gres:migp:7g.80gb:2"]
    locked = _searches(node, monkeypatch)
    node.publisher.prefetch()
    node.publisher.plan_ahead("n1", node.snapshot().state())  # with job 7's instance, soon gone
    assert node.release(ctx(7)).action == "released"  # publishes under the lock, the GPU empty
    assert locked == [False, True]  # the guess was of another node: searched again under the lock
    assert node.slurm.counts() == {"7g.80gb": 2}
