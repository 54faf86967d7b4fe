"""One read of the node per hook: the NVML budget of a prepare and a release, and what they publish
(computed from the snapshot with the change applied) against a fresh read of the node."""

from __future__ import annotations

import inspect
import os

from fakes import FakeSlurm, counted_agent

from slurm_gpu.core.features import is_fit_feature
from slurm_gpu.node.context import JobContext
from slurm_gpu.slurm.api import SlurmAdapter
from slurm_gpu.slurm.client import SlurmCli

# The agent before NodeSnapshot made 986 calls for this prepare (1,133 in another measurement): one
# read of the GPUs, one of the instances and one profile table per GPU model now, at most a fifth of
# 1,133. Nine of them (the GPU count and MIG modes) are read once more while Slurm answers the job read,
# off the hook's critical path, so that the node read under the lock asks only what can change.
PREPARE_BUDGET = 226
RELEASE_BUDGET = 215


def _ctx(job_id: int) -> JobContext:
    return JobContext(str(job_id), os.getuid(), os.getgid())


def _busy_node(tmp_path):
    agent, _ = counted_agent(str(tmp_path), 8)
    agent.slurm.add(1, "3g.40gb", 1, slices=4)
    assert agent.prepare(_ctx(1)).action == "created"
    agent.slurm.add(2, "1g.10gb", 2, slices=2)
    return agent.slurm


def test_prepare_reads_the_node_once(tmp_path):
    slurm = _busy_node(tmp_path)
    agent, nv = counted_agent(str(tmp_path), 8, slurm=slurm, reuse=True)
    assert agent.prepare(_ctx(2)).action == "created"
    # the GPUs' fixed facts while Slurm answers the job read; under the lock one walk of the GPUs (their
    # MIG modes) and one of the instances
    assert nv.counts["nvmlDeviceGetCount"] == 3
    assert nv.counts["nvmlDeviceGetName"] == 8  # what cannot change is read once per GPU
    assert nv.calls_of("nvmlDeviceGetGpuInstanceProfileInfo") <= 19  # one profile table per model
    assert nv.total <= PREPARE_BUDGET, dict(nv.counts)


def test_release_reads_the_node_once(tmp_path):
    slurm = _busy_node(tmp_path)
    counted_agent(str(tmp_path), 8, slurm=slurm, reuse=True)[0].prepare(_ctx(2))
    agent, nv = counted_agent(str(tmp_path), 8, slurm=slurm, reuse=True)
    assert agent.release(_ctx(2)).action == "released"
    assert nv.counts["nvmlDeviceGetCount"] == 2
    assert nv.total <= RELEASE_BUDGET, dict(nv.counts)


def _fit(slurm: FakeSlurm):
    return sorted(f for f in slurm.active if is_fit_feature(f))


def test_what_is_published_is_what_a_fresh_read_gives(tmp_path):
    slurm = _busy_node(tmp_path)
    for hook, job in (("prepare", 2), ("release", 2), ("release", 1)):
        agent, _ = counted_agent(str(tmp_path), 8, slurm=slurm, reuse=True)
        getattr(agent, hook)(_ctx(job))
        published = _fit(slurm)
        fresh, _ = counted_agent(str(tmp_path), 8, slurm=slurm, reuse=True)
        assert published == sorted(fresh.publish_features()), hook


def test_fake_slurm_has_the_adapters_methods():
    for name, member in inspect.getmembers(SlurmAdapter, inspect.isfunction):
        if name.startswith("_"):
            continue
        want = list(inspect.signature(member).parameters)
        assert list(inspect.signature(getattr(FakeSlurm, name)).parameters) == want, name
        assert list(inspect.signature(getattr(SlurmCli, name)).parameters) == want, name
