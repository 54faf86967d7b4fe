"""A mixed-model cluster on the real slurmctld: one node of H100-80GB, one of A100-40GB (one GPU each).

job_submit.lua knows both models: a memory-sized request becomes a constraint naming each model's profile
(or only those that fit the count), a profile of one model only reaches that model's node, and the
conservative slice count is taken where a profile name exists on both with different sizes. The hooks
are off: this checks admission and scheduling alone (the hooks have their own tests)."""

from __future__ import annotations

import pytest
from conftest import running_cluster

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(scope="module")
def mixed():
    with running_cluster(nodes=2, gpus="H100-80GB:1;A100-40GB:1", prefix="sg-test-mixed-",
                         hooks=False) as cluster:
        yield cluster


def _features(cluster, node):
    out = cluster.run(["scontrol", "-o", "show", "node", node], check=True).stdout
    return set(out.split("ActiveFeatures=")[1].split()[0].split(","))


def test_nodes_declare_their_own_model(mixed):
    h100, a100 = mixed.nodes
    out = {n: mixed.run(["scontrol", "-o", "show", "node", n], check=True).stdout for n in mixed.nodes}
    assert "Gres=mig:8" in out[h100] and "Gres=mig:8" in out[a100]  # 8 memory slices each
    fh, fa = _features(mixed, h100), _features(mixed, a100)
    assert "mig.7g.80gb.1" in fh and not any(f.startswith("mig.7g.80gb") for f in fa)
    assert "mig.3g.20gb.2" in fa and "mig.3g.20gb.3" not in fa
    assert not any(f.startswith("mig.3g.20gb") for f in fh)


# request, node index (None: either), constraint alternatives, mig gres count, recorded request
CASES = [
    ("gpu:3g.20gb", 1, {"mig.3g.20gb.1"}, 4, "gpu:3g.20gb:1"),  # A100-40GB only
    ("gpu:1g.5gb:2", 1, {"mig.1g.5gb.2"}, 2, "gpu:1g.5gb:2"),  # A100-40GB only
    ("gpu:7g.80gb", 0, {"mig.7g.80gb.1"}, 8, "gpu:7g.80gb:1"),  # H100-80GB only
    ("gpu:20gb:3", 0, {"mig.1g.20gb.3"}, 6, "gpu:20gb:3"),  # 3 x 1g.20gb fit an H100, 3 x 3g.20gb no A100
    ("gpu:80gb", 0, {"mig.7g.80gb.1"}, 8, "gpu:7g.80gb:1"),  # only the H100 holds 80 GB
    ("gpu:20gb", None, {"mig.1g.20gb.1", "mig.3g.20gb.1"}, 4, "gpu:20gb:1"),  # either; the larger count
    ("gpu:1g.10gb", None, {"mig.1g.10gb.1"}, 2, "gpu:1g.10gb:1"),  # 1 slice on H100, 2 on A100-40GB
    ("gpu:1", None, {"mig.7g.80gb.1", "mig.7g.40gb.1"}, 8, "gpu:1"),  # a whole GPU of either model
]


@pytest.mark.parametrize("request_,node,alternatives,slices,recorded", CASES)
def test_request_lands_on_the_right_node(mixed, request_, node, alternatives, slices, recorded):
    proc = mixed.sbatch(f"--gres={request_}", wrap="echo $SLURMD_NODENAME")
    assert proc.returncode == 0, proc.stderr
    info = mixed.wait_job(proc.stdout.strip())
    assert info["JobState"] == "COMPLETED"
    constraint = info["Features"]
    if len(alternatives) > 1:
        assert constraint.startswith("(") and constraint.endswith(")")
        constraint = constraint[1:-1]
    assert set(constraint.split("|")) == alternatives
    assert info["TresPerNode"] == f"gres:mig:{slices}"
    assert info["AdminComment"] == f"slurm-gpu:{recorded}"
    if node is not None:
        assert info["NodeList"] == mixed.nodes[node]
    else:
        assert info["NodeList"] in mixed.nodes
    assert _features(mixed, info["NodeList"]) & alternatives  # the node it ran on satisfied the constraint


@pytest.mark.parametrize("node", [0, 1])
def test_either_model_serves_a_memory_request(mixed, node):
    proc = mixed.sbatch("--gres=gpu:20gb", "-w", mixed.nodes[node])
    assert proc.returncode == 0, proc.stderr
    info = mixed.wait_job(proc.stdout.strip())
    assert info["JobState"] == "COMPLETED" and info["NodeList"] == mixed.nodes[node]


@pytest.mark.parametrize("request_,message", [
    ("gpu:3g.20gb:3", "at most 2 instance(s) of 3g.20gb"),
    ("gpu:20gb:5", "no node of this cluster holds 5 such instances"),
    ("gpu:2g.24gb", "unknown MIG profile '2g.24gb' on this cluster"),  # A30's, not here
])
def test_requests_no_model_can_hold_are_rejected(mixed, request_, message):
    proc = mixed.sbatch(f"--gres={request_}")
    assert proc.returncode != 0
    assert message in proc.stderr
