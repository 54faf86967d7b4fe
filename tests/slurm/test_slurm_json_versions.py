"""The v0.0.42 JSON that Slurm 24.11.5 and 26.05.5 print (recorded from the rooted clusters of
tests/versions/, which check the same parsing against the live daemons), read by the adapter's parser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slurm_gpu.core.errors import SlurmError
from slurm_gpu.slurm.parse import MigRequest, job_by_id, jobs_from_json, node_features_from_json

FIX = Path(__file__).parents[1] / "fixtures" / "slurm"
VERSIONS = ("24.11", "26.05")


def _doc(kind: str, version: str, case: str = "") -> dict:
    name = f"scontrol_show_{kind}_json_v0.0.42_{version}{'_' + case if case else ''}.json"
    return json.loads((FIX / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize("version", VERSIONS)
def test_running_multinode_job(version):
    doc = _doc("job", version, "multinode")
    assert doc["meta"]["plugin"]["data_parser"] == "data_parser/v0.0.42"
    (job,) = jobs_from_json(doc)
    assert job.state == "RUNNING" and job.flags == () and job.active
    assert len(job.nodes) == 2 and job.nodes[0].endswith("n1")
    assert job.tres_per_node == "gres/mig:2"  # 'gres/' from 24.11 on ('gres:' in 22.05)
    assert job.request() == MigRequest("1g.10gb", 2)
    assert [job.mig_slices_per_node(n) for n in job.nodes] == [2, 2]
    assert job.features == "mig.1g.10gb.2" and job.user_id == 1001 and job.restart_count == 0
    assert job_by_id(doc, job.job_id) == job


@pytest.mark.parametrize("version", VERSIONS)
def test_empty_gres_detail_falls_back_to_the_per_node_request(version):
    """26.05 was seen printing an empty gres_detail for a running job: the per-node request stands in."""
    doc = _doc("job", version, "multinode")
    doc["jobs"][0]["gres_detail"] = []
    (job,) = jobs_from_json(doc)
    assert job.gres_by_node == {}
    assert [job.mig_slices_per_node(n) for n in job.nodes] == [2, 2]


@pytest.mark.parametrize("version", VERSIONS)
def test_pending_held_job(version):
    (job,) = jobs_from_json(_doc("job", version, "pending"))
    assert job.state == "PENDING" and not job.active and job.nodes == ()
    assert job.request() == MigRequest("3g.40gb", 1)
    assert job.mig_slices_per_node() == 4 and job.reason == "JobHeldUser"


@pytest.mark.parametrize("version", VERSIONS)
def test_node_features_are_lists(version):
    doc = _doc("node", version)
    node = doc["nodes"][0]["name"]
    available, active = node_features_from_json(doc, node)
    assert "mig.1g.10gb.1" in available and set(active) <= set(available) and active
    with pytest.raises(SlurmError):
        node_features_from_json(doc, "no-such-node")


def test_node_features_of_a_comma_string_and_none():
    doc = {"nodes": [{"name": "n1", "features": "a,b", "active_features": ""}]}
    assert node_features_from_json(doc, "n1") == (("a", "b"), ())
    with pytest.raises(SlurmError):
        node_features_from_json({}, "n1")
