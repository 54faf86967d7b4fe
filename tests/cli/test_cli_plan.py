"""`slurm-gpu plan`: node descriptions, placements checked against the geometry rules, exit codes."""

from __future__ import annotations

import json

import pytest
from cli_runner import cli_runner

from slurm_gpu.cli.main import main
from slurm_gpu.core.catalog import load_catalog
from slurm_gpu.core.errors import EXIT_BAD_INPUT, EXIT_NO_FIT, EXIT_USAGE
from slurm_gpu.core.geometry import GpuState, NodeState
from slurm_gpu.core.nodespec import node_from_document, node_to_document, parse_gpus
from slurm_gpu.core.planner import capacity


def invoke(*args):
    return cli_runner().invoke(main, list(args))


def plan_json(*args):
    result = invoke("plan", *args, "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["schema"] == "slurm-gpu.plan/v1"
    return doc


def replay(node, placements):
    """Apply the printed placements with the geometry rules; fails if any is invalid."""
    for p in placements:
        gpu = node.gpu(p["gpu_index"])
        profile = gpu.model.profile(p["profile"])
        assert profile.profile_id == p["profile_id"] and profile.memory_slices == p["size"]
        assert gpu.can_place(profile, p["start"]), p
        node = node.with_gpu(gpu.place(profile, p["start"]))
    return node


def test_placements_are_valid_and_capacity_is_the_planners():
    h100 = load_catalog().model("H100-80GB")
    doc = plan_json("--gpus", "H100-80GB:2", "1g.10gb:3", "2g.20gb")
    assert sorted(p["profile"] for p in doc["placements"]) == ["1g.10gb"] * 3 + ["2g.20gb"]
    empty = NodeState.empty(h100, 2)
    after = replay(empty, doc["placements"])
    assert doc["capacity_before"] == capacity(empty)
    assert doc["capacity_after"] == capacity(after)
    assert node_from_document(doc["node"]) == after


def test_used_instances_are_respected():
    # 4g.40gb occupies slices 0-3 of GPU 0 and GPU 1 is full: the 3g.40gb can only go to GPU 0 at 4.
    doc = plan_json("--gpus", "H100-80GB:2", "--used", "0:4g.40gb@0,1:7g.80gb@0", "gres:gpu:3g.40gb:1")
    (p,) = doc["placements"]
    assert (p["gpu_index"], p["start"]) == (0, 4)
    before = {g["index"]: g["instances"] for g in doc["node"]["gpus"]}
    assert [(i["profile"], i["start"]) for i in before[1]] == [("7g.80gb", 0)]


def test_state_file_chains_plans(tmp_path):
    first = plan_json("--gpus", "H100-80GB:1", "3g.40gb")
    path = tmp_path / "after.json"
    path.write_text(json.dumps(first))
    second = plan_json("--node-json", str(path), "3g.40gb")
    starts = {first["placements"][0]["start"], second["placements"][0]["start"]}
    assert starts == {0, 4}
    third = invoke("plan", "--node-json", str(path), "3g.40gb:2")
    assert third.exit_code == EXIT_NO_FIT
    assert "3g.40gb" in third.stderr


def test_state_file_in_sim_show_shape(tmp_path):
    doc = {
        "gpus": [
            {
                "index": 0,
                "model": "A30-24GB",
                "mig_current": True,
                "instances": [
                    {
                        "gi_id": 1,
                        "ci_id": 0,
                        "profile_id": load_catalog().model("A30-24GB").profile("2g.12gb").profile_id,
                        "start": 0,
                        "size": 2,
                    },
                ],
            },
        ]
    }
    path = tmp_path / "sim.json"
    path.write_text(json.dumps(doc))
    out = plan_json("--node-json", str(path), "2g.12gb")
    assert [(p["gpu_index"], p["start"]) for p in out["placements"]] == [(0, 2)]


def test_mixed_models_get_consecutive_indices():
    assert parse_gpus("h100-80gb:2, A30-24GB") == [("H100-80GB", 2), ("A30-24GB", 1)]
    doc = plan_json("--gpus", "H100-80GB:2,A30-24GB:1", "1g.6gb")
    assert [g["index"] for g in doc["node"]["gpus"]] == [0, 1, 2]
    assert [p["gpu_index"] for p in doc["placements"]] == [2]


def test_table_lists_each_placement():
    result = invoke("plan", "--gpus", "H100-80GB:8", "1g.10gb:2")
    assert result.exit_code == 0
    rows = [line.split() for line in result.stdout.split("\n\n")[0].splitlines()[1:]]
    assert len(rows) == 2 and all(r[2] == "1g.10gb" and r[3] == "19" for r in rows)
    assert "FITS_AFTER" in result.stdout


def test_node_document_round_trip():
    a100 = load_catalog().model("A100-40GB")
    node = NodeState((GpuState(0, a100).place("3g.20gb", 4), GpuState(3, a100, mig_enabled=False)))
    assert node_from_document(node_to_document(node)) == node


@pytest.mark.parametrize(
    "args, part",
    [
        (["--gpus", "H100-80GB:2", "--used", "0:3g.40gb@3", "1g.10gb"], "3"),
        (["--gpus", "H100-80GB:1", "--used", "0:4g.40gb@0,0:3g.40gb@0", "1g.10gb"], "0:3g.40gb@0"),
        (["--gpus", "H100-80GB:1", "--used", "5:1g.10gb@0", "1g.10gb"], "5"),
        (["--gpus", "H100-80GB:1", "--used", "zero:1g.10gb", "1g.10gb"], "zero:1g.10gb"),
        (["--gpus", "Z100:1", "1g.10gb"], "Z100"),
        (["--gpus", "H100-80GB:1", "1x.10gb"], "1x.10gb"),
        (["--gpus", "H100-80GB:1", "3g.20gb"], "3g.20gb"),
    ],
)
def test_bad_input_exits_3_and_names_the_part(args, part):
    result = invoke("plan", *args)
    assert result.exit_code == EXIT_BAD_INPUT, result.stderr
    assert result.stderr.startswith("slurm-gpu: error: ")
    assert part in result.stderr
    assert result.stdout == ""


def test_no_fit_exits_4():
    result = invoke("plan", "--gpus", "A30-24GB:1", "--used", "0:2g.12gb@0", "4g.24gb")
    assert result.exit_code == EXIT_NO_FIT
    assert "4g.24gb" in result.stderr


def test_bad_state_files(tmp_path):
    missing = invoke("plan", "--node-json", str(tmp_path / "nope.json"), "1g.10gb")
    assert missing.exit_code == EXIT_BAD_INPUT and "nope.json" in missing.stderr
    garbled = tmp_path / "garbled.json"
    garbled.write_text("{not json")
    assert invoke("plan", "--node-json", str(garbled), "1g.10gb").exit_code == EXIT_BAD_INPUT
    empty = tmp_path / "empty.json"
    empty.write_text('{"gpus": []}')
    assert invoke("plan", "--node-json", str(empty), "1g.10gb").exit_code == EXIT_BAD_INPUT


def test_node_must_be_described_once(tmp_path):
    assert invoke("plan", "1g.10gb").exit_code == EXIT_USAGE
    both = invoke("plan", "--gpus", "H100-80GB:1", "--node-json", str(tmp_path / "x.json"), "1g.10gb")
    assert both.exit_code == EXIT_USAGE
