"""`slurm-gpu health`: every check's exit code, the one-line reason, and draining only on purpose."""

from __future__ import annotations

import json
import os

import pytest
from cli_runner import cli_runner

from slurm_gpu.cli.main import main
from slurm_gpu.devices import simstate
from slurm_gpu.devices.open import open_driver
from slurm_gpu.state.journal import Journal


@pytest.fixture
def node(tmp_path, monkeypatch):
    state = str(tmp_path / "sim.json")
    simstate.init_state(state, [("H100-80GB", 1), ("A100-40GB", 1)], mig_enabled=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "scontrol.log"
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    scontrol.chmod(0o755)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"version: 1\nstate_dir: {tmp_path / 'st'}\nslurm: {{bin_dir: {bin_dir}}}\n")
    monkeypatch.setenv("SLURM_GPU_CONFIG", str(cfg))
    monkeypatch.delenv("SLURM_GPU_SIM_FAULTS", raising=False)
    Journal(str(tmp_path / "st"))  # the directory a node has
    return {"state": state, "log": log, "st": str(tmp_path / "st")}


def health(node, *args, env=None):
    result = cli_runner().invoke(main, ["health", "--sim-state", node["state"], "--json", *args], env=env)
    return result.exit_code, json.loads(result.stdout)


def drains(node):
    return node["log"].read_text().splitlines() if node["log"].exists() else []


def test_healthy_node_exits_0(node):
    code, doc = health(node, "--drain", "--node", "n1")
    assert (code, doc["schema"], doc["healthy"], doc["reason"]) == (0, "slurm-gpu.health/v1", True, "")
    assert [c["name"] for c in doc["checks"]] == ["driver", "mig_mode", "orphans", "journal"]
    assert drains(node) == []


def test_driver_failure_exits_5_and_drains_only_when_asked(node):
    env = {"SLURM_GPU_SIM_FAULTS": "nvmlDeviceGetCount=GPU_IS_LOST"}
    code, doc = health(node, env=env)
    assert code == 5 and doc["reason"].startswith("slurm-gpu health: driver: ") and drains(node) == []
    code, doc = health(node, "--drain", "--node", "n1", env=env)
    assert code == 5 and doc["drained"] is True
    (line,) = drains(node)
    assert line.startswith("update nodename=n1 state=drain reason=slurm-gpu health: driver:")


def test_ampere_out_of_mig_mode_exits_7(node):
    drv = open_driver("sim", sim_state=node["state"])
    drv.set_mig_mode(1, False)  # pending off until a reset
    code, doc = health(node)
    assert code == 7 and "GPU 1 MIG mode change pending" in doc["reason"]


def test_old_orphan_exits_6_a_young_one_does_not(node):
    open_driver("sim", sim_state=node["state"]).create(0, 19, 0)
    code, doc = health(node)
    assert code == 0 and "1 orphan(s)" in doc["checks"][2]["detail"]
    code, doc = health(node, "--orphan-minutes", "0")
    assert code == 6 and "orphan instance(s) older than 0 min" in doc["reason"]


def test_journal_problem_exits_6(node):
    os.makedirs(os.path.join(node["st"], "jobs"), exist_ok=True)
    with open(os.path.join(node["st"], "jobs", "77.json"), "w") as fh:
        fh.write("not json")
    code, doc = health(node)
    assert code == 6 and doc["reason"].startswith("slurm-gpu health: journal: 1 problem(s)")


def test_text_output_names_each_check(node):
    result = cli_runner().invoke(main, ["health", "--sim-state", node["state"]])
    assert result.exit_code == 0
    assert [line.split()[1] for line in result.stdout.splitlines()] == ["driver:", "mig_mode:", "orphans:",
                                                                        "journal:"]
