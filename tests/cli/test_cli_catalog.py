"""`slurm-gpu catalog`: tables and the slurm-gpu.catalog/v1 document, checked against the catalog."""

from __future__ import annotations

import json

import pytest
from cli_runner import cli_runner

from slurm_gpu.cli.main import main
from slurm_gpu.core.catalog import load_catalog
from slurm_gpu.core.errors import EXIT_BAD_INPUT


def invoke(*args):
    return cli_runner().invoke(main, list(args))


def test_model_list_names_every_model():
    result = invoke("catalog")
    assert result.exit_code == 0
    first_column = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert first_column == list(load_catalog().keys())


def test_h100_json_gives_profile_ids_and_placements():
    result = invoke("catalog", "H100-80GB", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["schema"] == "slurm-gpu.catalog/v1"
    (model,) = doc["models"]
    assert model["model"] == "H100-80GB"
    assert [p["profile_id"] for p in model["profiles"]] == [19, 20, 15, 14, 9, 5, 0]
    by_name = {p["name"]: p for p in model["profiles"]}
    assert by_name["3g.40gb"]["placements"] == [{"start": 0, "size": 4}, {"start": 4, "size": 4}]
    assert [p["start"] for p in by_name["1g.10gb"]["placements"]] == [0, 1, 2, 3, 4, 5, 6]
    assert by_name["7g.80gb"]["nvml_profile_constant"] == "NVML_GPU_INSTANCE_PROFILE_7_SLICE"


def test_model_lookup_is_case_insensitive():
    a = invoke("catalog", "h100-80gb", "--json")
    b = invoke("catalog", "H100-80GB", "--json")
    assert a.exit_code == 0 and a.stdout == b.stdout


@pytest.mark.parametrize("key", load_catalog().keys())
def test_every_model_table_matches_its_base_profiles(key):
    model = load_catalog().model(key)
    result = invoke("catalog", key)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("PROFILE "))
    rows = [line.split() for line in lines[header + 1 :] if line and not line.startswith("(")]
    assert [(r[0], int(r[1])) for r in rows] == [(p.name, p.profile_id) for p in model.base_profiles()]


def test_all_shows_variants():
    plain = invoke("catalog", "H100-80GB")
    full = invoke("catalog", "H100-80GB", "--all")
    assert "1g.10gb+me" not in plain.stdout and "use --all" in plain.stdout
    assert "1g.10gb+me" in full.stdout and "use --all" not in full.stdout


def test_unknown_model_exit_code_names_it():
    result = invoke("catalog", "X9000")
    assert result.exit_code == EXIT_BAD_INPUT
    assert "X9000" in result.stderr and "H100-80GB" in result.stderr
    assert result.stdout == ""


def test_json_list_has_every_model_in_full():
    doc = json.loads(invoke("catalog", "--json").stdout)
    assert doc["schema"] == "slurm-gpu.catalog/v1"
    assert [m["model"] for m in doc["models"]] == list(load_catalog().keys())
    assert all(m["profiles"] and "placements" in m["profiles"][0] for m in doc["models"])


def test_identify_by_pci_prints_the_model_as_json():
    result = invoke("catalog", "--identify", "NVIDIA A800-SXM4-80GB", "--pci", "0x20F3", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["schema"] == "slurm-gpu.catalog.identify/v1"
    assert (doc["model"], doc["matched_by"], doc["product"]) == ("A100-80GB", "pci", "NVIDIA A800-SXM4-80GB")


def test_identify_by_name_table_and_unknown_gpu():
    result = invoke("catalog", "--identify", "NVIDIA GH200 120GB")
    assert result.exit_code == 0
    assert "GH200-96GB" in result.stdout and "name" in result.stdout
    unknown = invoke("catalog", "--identify", "Tesla T4", "--pci", "0x1EB8")
    assert unknown.exit_code == EXIT_BAD_INPUT
    assert "not a MIG-capable model" in unknown.stderr
