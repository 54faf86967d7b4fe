"""The hooks on a mixed-model cluster: one node of H100-80GB, one of A100-40GB, on the real slurmctld.

job_submit.lua records a memory size (`gpu:20gb`) or whole GPUs (`gpu:1`) when the models resolve them to
different profiles; the Prolog of the node the job lands on must resolve them for its own GPUs and
create that instance (1g.20gb on the H100, 3g.20gb on the A100-40GB for 20 GB)."""

from __future__ import annotations

import json
import os

import pytest
from conftest import running_cluster

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(scope="module")
def mixed():
    with running_cluster(nodes=2, gpus="H100-80GB:1;A100-40GB:1", prefix="sg-test-mixhooks-",
                         hooks=True) as cluster:
        yield cluster


def _created(cluster, node, job_id):
    """The profiles the node's journal history says the job had."""
    path = os.path.join(cluster.spec.dir, node, "state", "history.log")
    with open(path, encoding="utf-8") as fh:
        events = [json.loads(line) for line in fh if line.strip()]
    return sorted(i["profile_name"] for e in events if e.get("job_id") == job_id
                  and e.get("event") == "released" for i in e["instances"])


@pytest.mark.parametrize(
    "request_,node,profile",
    [
        ("gpu:20gb", 0, "1g.20gb"),
        ("gpu:20gb", 1, "3g.20gb"),
        ("gpu:1", 0, "7g.80gb"),
        ("gpu:1", 1, "7g.40gb"),
    ],
)
def test_prolog_resolves_the_recorded_request_for_its_gpus(mixed, request_, node, profile):
    name = mixed.nodes[node]
    proc = mixed.run(["sbatch", "--parsable", "-o", "/dev/null", f"--gres={request_}", "-w", name,
                      "--wrap", 'case "$CUDA_VISIBLE_DEVICES" in MIG-*) exit 0;; *) exit 3;; esac'],
                     user="sgtest1")
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip()
    info = mixed.wait_job(job_id, timeout=90)
    assert info["JobState"] == "COMPLETED", info
    assert info["NodeList"] == name
    assert _created(mixed, name, job_id) == [profile]
    out = mixed.run(["scontrol", "-o", "show", "node", name], check=True).stdout
    assert "State=IDLE" in out and "DRAIN" not in out
