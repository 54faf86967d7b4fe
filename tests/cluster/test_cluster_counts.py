"""Count admission on a real Slurm 22.05 cluster with Slurm's default scheduler settings (no start limit):
more mixed-profile demand than fits, released at once, runs exactly; slurmd restarts and `scontrol
reconfigure` with jobs running leave the nodes in service."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import tempfile
import time
from typing import Dict, List

import pytest

from slurm_gpu.core.catalog import load_catalog
from slurm_gpu.core.features import node_max_counts
from slurm_gpu.devices.open import open_driver
from tests.conftest import running_cluster

pytestmark = pytest.mark.slurm

GPUS = "H100-80GB:2"
DONE = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")


@pytest.fixture(scope="module")
def counts_cluster():
    with running_cluster(nodes=3, gpus=GPUS, prefix="sg-test-counts-", admission="counts",
                         scheduler_parameters="", publish_interval_s=1.0, features="ib;;") as cluster:
        yield cluster


@pytest.fixture
def outdir():
    path = tempfile.mkdtemp(prefix="sg-counts-out-", dir="/var/tmp")
    os.chmod(path, 0o777)  # noqa: S103 - the test users write their job's devices here
    yield path
    subprocess.run(["rm", "-rf", path], check=False)


def _hooks(cluster, node: str) -> List[Dict[str, object]]:
    path = os.path.join(cluster.spec.dir, node, "state", "hooks.log")
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _states(cluster, ids: List[str]) -> Dict[str, str]:
    out = cluster.run(["squeue", "-h", "-t", "all", "-j", ",".join(ids), "-o", "%i %T"], check=True).stdout
    return dict(line.split() for line in out.splitlines() if line.strip())


def _wait_done(cluster, ids: List[str], timeout: float) -> Dict[str, str]:
    deadline = time.monotonic() + timeout
    states: Dict[str, str] = {}
    while time.monotonic() < deadline:
        states = _states(cluster, ids)
        if len(states) == len(ids) and all(s in DONE for s in states.values()):
            return states
        time.sleep(0.5)
    raise AssertionError(f"jobs not done after {timeout:.0f} s: {states}")


def _instances(cluster, node: str) -> int:
    driver = open_driver("sim", sim_state=os.path.join(cluster.spec.dir, node, "gpus.json"))
    try:
        return len(driver.instances())
    finally:
        driver.close()


def _node_field(cluster, node: str, key: str) -> str:
    out = cluster.run(["scontrol", "show", "node", "-d", node], check=True).stdout
    for token in out.split():
        if token.startswith(key + "="):
            return token.split("=", 1)[1]
    return ""


def test_contention_burst_runs_exactly_with_no_start_limit(counts_cluster, outdir):
    cluster = counts_cluster
    most = node_max_counts([load_catalog().model("H100-80GB")] * 2)
    profiles = ["1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"]
    rng = random.Random(11)
    jobs = []
    for i in range(24):
        profile = profiles[i % len(profiles)]
        count = min(rng.randint(1, 4), most[profile])
        wrap = f"sleep {rng.randint(2, 4)}; echo $SLURM_GPU_MIG_DEVICES > {outdir}/{i}"
        jid = cluster.sbatch("-H", f"--gres=gpu:{profile}:{count}", wrap=wrap).stdout.strip()
        assert jid.isdigit(), jid
        jobs.append((jid, profile, count, i))
    ids = [j for j, *_ in jobs]
    time.sleep(2)  # the nodes see the held queue as demand
    cluster.run(["scontrol", "release", *ids], check=True)
    states = _wait_done(cluster, ids, timeout=240)
    assert set(states.values()) == {"COMPLETED"}, states
    for _jid, _profile, count, i in jobs:
        with open(os.path.join(outdir, str(i)), encoding="utf-8") as fh:
            uuids = fh.read().strip().split(",")
        assert len(uuids) == count and all(u.startswith("MIG-") for u in uuids), (i, uuids)
    prologs = [e for n in cluster.nodes for e in _hooks(cluster, n) if e.get("hook") == "prolog"]
    assert [e for e in prologs if e.get("action") != "created"] == []
    assert cluster.run(["sinfo", "-h", "-R"], check=True).stdout.strip() == ""  # no drain
    assert [_instances(cluster, n) for n in cluster.nodes] == [0, 0, 0]  # no leak


def test_slurmd_restart_and_reconfigure_with_jobs_running(counts_cluster):
    cluster = counts_cluster
    # Any node will do: no --nodelist (jobs naming their nodes have their own test below).
    first = [cluster.sbatch(f"--gres=gpu:{p}", wrap="sleep 15").stdout.strip()
             for p in ("1g.10gb", "1g.10gb", "3g.40gb")]
    assert all(j.isdigit() for j in first), first
    deadline = time.monotonic() + 60
    while set(_states(cluster, first).values()) != {"RUNNING"}:
        assert time.monotonic() < deadline, _states(cluster, first)
        time.sleep(0.5)
    time.sleep(1)  # their prologs are done
    for node in cluster.nodes:  # every slurmd, the ones with MIG jobs running among them
        with open(os.path.join(cluster.spec.dir, node, "slurmd.pid"), encoding="ascii") as fh:
            os.kill(int(fh.read()), signal.SIGTERM)
    time.sleep(1.5)
    for node in cluster.nodes:
        cluster.run(["slurmd", "-N", node, "-f", cluster.conf], check=True)
    cluster.run(["scontrol", "reconfigure"], check=True)
    time.sleep(4)
    for node in cluster.nodes:
        state = _node_field(cluster, node, "State")
        assert "INVAL" not in state and "DRAIN" not in state and "DOWN" not in state, (node, state)
    # Slurm forgets some allocations on reconfigure; the node publishes that much less, so jobs that fit
    # what is really free still run and nothing is requeued.
    nxt = [cluster.sbatch(f"--gres=gpu:{p}", wrap="true").stdout.strip() for p in ("7g.80gb", "1g.10gb")]
    states = _wait_done(cluster, first + nxt, timeout=120)
    assert set(states.values()) == {"COMPLETED"}, states
    prologs = [e for n in cluster.nodes for e in _hooks(cluster, n) if e.get("hook") == "prolog"]
    assert [e for e in prologs if e.get("action") == "requeued"] == []
    assert cluster.run(["sinfo", "-h", "-R"], check=True).stdout.strip() == ""


def test_jobs_naming_their_nodes_wait_held_and_run_there(counts_cluster):
    """``--nodelist``: slurmctld would refuse such a job while none of its nodes publishes the profile
    (an idle node publishes 7g.80gb only); job_submit.lua holds it instead, the node re-plans for it and
    releases it. A job admitted with ``--nodelist`` whose node stops publishing its profile (Slurm holds it
    as BadConstraints) is released the same way once its node publishes it again."""
    cluster = counts_cluster
    node = cluster.nodes[0]
    small = cluster.sbatch(f"--nodelist={node}", "--gres=gpu:1g.10gb", wrap="sleep 2").stdout.strip()
    assert small.isdigit(), small
    # a whole node named while its counts are being given to a 3g.40gb: Slurm may hold it (BadConstraints)
    whole = cluster.sbatch(f"--nodelist={node}", "--gres=gpu:7g.80gb:2", wrap="sleep 2").stdout.strip()
    third = cluster.sbatch(f"--nodelist={node}", "--gres=gpu:3g.40gb", wrap="sleep 2").stdout.strip()
    ids = [small, whole, third]
    assert all(j.isdigit() for j in ids), ids
    states = _wait_done(cluster, ids, timeout=120)
    assert set(states.values()) == {"COMPLETED"}, states
    out = cluster.run(["sacct", "-X", "-n", "-P", "-j", ",".join(ids), "-o", "JobID,NodeList"]).stdout
    ran = dict(line.split("|") for line in out.splitlines() if line.strip()) if out.strip() else {}
    for job in ids:
        info = cluster.run(["scontrol", "show", "job", job], check=True).stdout
        assert f"NodeList={node}" in info or ran.get(job) == node, info
        assert "slurm-gpu-awaits-nodes" not in info, info  # the mark is gone once released
    prologs = [e for e in _hooks(cluster, node) if e.get("hook") == "prolog" and e.get("job_id") in ids]
    assert sorted(e["job_id"] for e in prologs if e.get("action") == "created") == sorted(ids), prologs
    assert cluster.run(["sinfo", "-h", "-R"], check=True).stdout.strip() == ""


def test_a_site_feature_only_busy_nodes_have_pends_instead_of_being_refused(counts_cluster):
    # Node 1 alone has `ib`. slurmctld refuses at submit a job no node could run now; the placeholder
    # of node 1's group carries `ib` with every migp type at its most, so the job pends and runs.
    cluster = counts_cluster
    ib = cluster.nodes[0]
    small = cluster.sbatch("--constraint=ib", "--gres=gpu:1g.10gb", wrap="sleep 4")
    assert small.returncode == 0, small.stderr  # an idle ib node publishes only whole GPUs
    assert cluster.wait_job(small.stdout.strip(), states=("RUNNING",) + DONE)["NodeList"] == ib
    whole = cluster.sbatch("--constraint=ib", "--gres=gpu:7g.80gb:2", wrap="true")
    assert whole.returncode == 0, whole.stderr  # its only node is busy: it waits
    info = cluster.wait_job(whole.stdout.strip(), timeout=90)
    assert (info["JobState"], info["NodeList"]) == ("COMPLETED", ib)
    impossible = cluster.sbatch("--constraint=ib", "--gres=gpu:7g.80gb:3", wrap="true")
    assert impossible.returncode != 0  # more than any node could hold: still refused at submit
