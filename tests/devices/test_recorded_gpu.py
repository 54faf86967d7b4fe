"""A real GPU's recorded NVML answers against the catalog and the simulated driver.

The records (tests/fixtures/real-gpu/*.json) are what scripts/check-real-gpu.sh saw on real hardware;
their ``probe`` is `slurm-gpu inventory --driver nvml --probe --json`. The simulated driver is probed the
same way on a node of the same model and MIG mode, and must answer every question the product's code
asks as the hardware did.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slurm_gpu.core.catalog import MEMORY_DRIFT, load_catalog
from slurm_gpu.devices.catalogcheck import catalog_differences
from slurm_gpu.devices.probe import probe, profiles_of
from slurm_gpu.devices.simnvml import SimNvml
from slurm_gpu.devices.simstate import init_state

RECORDS = sorted((Path(__file__).parents[1] / "fixtures" / "real-gpu").glob("*.json"))
# What a driver says about itself or one board, which no model of the GPU predicts.
IDENTITY = ("uuid", "pci", "compute_capability", "architecture")
# Profile fields the simulated driver models (the media engine counts it leaves at 0: nothing reads them).
MODELLED = ("id", "sliceCount", "instanceCount", "multiprocessorCount", "name")


def _record(path):
    doc = json.loads(path.read_text())
    assert doc["schema"] == "slurm-gpu.real-gpu-check/v1" and doc["read_only"] and doc["agreed"]
    assert doc["probe"]["schema"] == "slurm-gpu.inventory.probe/v1"
    return doc["probe"]


def _simulated_like(record, tmp_path):
    catalog = load_catalog()
    gpus = record["gpus"]
    keys = [catalog.recognise(g["name"]["value"], g["pci"]["value"]["pci_device_id"]).key for g in gpus]
    mig_on = {bool(g["mig_mode"]["value"][0]) for g in gpus}
    assert len(mig_on) == 1, "one MIG mode per record"
    state = tmp_path / "sim.json"
    init_state(str(state), [(k, 1) for k in keys], mig_enabled=mig_on.pop(), sandbox=str(tmp_path / "box"))
    return probe(SimNvml(str(state)), mig_minors_path=str(tmp_path / "box" / "mig-minors")), keys


@pytest.fixture(params=RECORDS, ids=[p.stem for p in RECORDS])
def record(request):
    return _record(request.param)


def test_there_is_a_record_of_real_hardware():
    assert RECORDS, "tests/fixtures/real-gpu/ holds no record"


def test_the_catalog_matches_the_recorded_gpu(record):
    catalog = load_catalog()
    for gpu in record["gpus"]:
        model = catalog.recognise(gpu["name"]["value"], gpu["pci"]["value"]["pci_device_id"])
        offered = profiles_of(gpu)
        assert offered, "the record holds the GPU's profile table"
        assert catalog_differences(gpu["index"], model, offered) == []
        # every base and variant profile the catalog names, with the exact placements
        recorded = {p.profile_id: p.placements for p in offered}
        assert recorded == {p.profile_id: p.placements for p in model.profiles}
        assert gpu["memory_total_mib"]["value"] == model.total_memory_mib


def test_the_simulated_driver_answers_as_the_recorded_gpu(record, tmp_path):
    sim, _ = _simulated_like(record, tmp_path)
    for real, seen in zip(record["gpus"], sim["gpus"]):
        for key in set(real) - set(IDENTITY) - {"gpu_instance_profiles", "placements_by_profile_id", "model"}:
            assert seen[key] == real[key], key
        rows = {r["index"]: r for r in seen["gpu_instance_profiles"]}
        last = real["gpu_instance_profiles"][-1]
        assert last["info"] == {"error": "NVML_ERROR_INVALID_ARGUMENT"}  # how enumeration stops
        for row in real["gpu_instance_profiles"][:-1]:
            mine = rows[row["index"]]
            if "error" in row["info"]:
                assert "error" in mine["info"], row["index"]
                continue
            want, got = row["info"]["value"], mine["info"]["value"]
            assert {f: got[f] for f in MODELLED} == {f: want[f] for f in MODELLED}
            assert abs(got["memorySizeMB"] - want["memorySizeMB"]) <= MEMORY_DRIFT * want["memorySizeMB"]
            for answer in ("placements", "remaining_capacity", "gpu_instances"):
                assert mine[answer] == row[answer], (row["index"], answer)
        for pid, answer in real["placements_by_profile_id"].items():
            # ids the GPU does not offer fail in both; which code (INVALID_ARGUMENT or NOT_SUPPORTED for
            # ids another GPU family offers) is the driver's own table, not modelled
            mine = seen["placements_by_profile_id"][pid]
            assert mine == answer if "value" in answer else "error" in mine, pid
    assert sim["files"]["mig_minors"] == record["files"]["mig_minors"]  # the capability minor formula
