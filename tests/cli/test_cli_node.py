"""`slurm-gpu sim`, `inventory` and `status` against the real simulated driver and a real journal."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from cli_runner import cli_runner

from slurm_gpu.cli.main import main
from slurm_gpu.core.errors import EXIT_BAD_INPUT, EXIT_CONFIG, EXIT_STATE, EXIT_USAGE
from slurm_gpu.devices.open import open_driver
from slurm_gpu.state.journal import Journal
from slurm_gpu.state.records import Planned


def invoke(*args, env=None):
    return cli_runner().invoke(main, list(args), env=env)


def doc_of(result, schema):
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["schema"] == schema
    return doc


@pytest.fixture
def node(tmp_path):
    """A simulated node: two H100 and one A30, changeable without root."""
    state = str(tmp_path / "node.json")
    result = invoke("sim", "init", "--gpus", "H100-80GB:2,A30-24GB", "--sim-state", state,
                    "--allow-unprivileged")
    assert result.exit_code == 0, result.stderr
    return state


def create(state, gpu_index, profile_id, start):
    driver = open_driver("sim", sim_state=state)
    try:
        return driver.create(gpu_index, profile_id, start)
    finally:
        driver.close()


def test_sim_init_and_show(node):
    doc = doc_of(invoke("sim", "show", "--sim-state", node, "--json"), "slurm-gpu.sim/v1")
    assert [(g["index"], g["model"]) for g in doc["gpus"]] == [
        (0, "H100-80GB"),
        (1, "H100-80GB"),
        (2, "A30-24GB"),
    ]
    assert all(g["mig_current"] and not g["instances"] for g in doc["gpus"])
    table = invoke("sim", "show", "--sim-state", node)
    assert table.exit_code == 0 and "A30-24GB" in table.stdout


def test_sim_mig_disabled(tmp_path):
    state = str(tmp_path / "off.json")
    doc = doc_of(
        invoke("sim", "init", "--gpus", "A100-40GB", "--sim-state", state, "--mig-disabled", "--json"),
        "slurm-gpu.sim/v1",
    )
    assert [(g["mig_current"], g["mig_pending"]) for g in doc["gpus"]] == [(False, False)]


def test_sim_state_from_env(node):
    doc = doc_of(invoke("sim", "show", "--json", env={"SLURM_GPU_SIM_STATE": node}), "slurm-gpu.sim/v1")
    assert len(doc["gpus"]) == 3


def test_sim_show_names_profiles_and_feeds_plan(node, tmp_path):
    inst = create(node, 0, 5, 0)  # 4g.40gb on GPU 0
    doc = doc_of(invoke("sim", "show", "--sim-state", node, "--json"), "slurm-gpu.sim/v1")
    (listed,) = doc["gpus"][0]["instances"]
    assert (listed["profile"], listed["mig_uuid"]) == ("4g.40gb", inst.mig_uuid)
    saved = tmp_path / "show.json"
    saved.write_text(json.dumps(doc))
    # The only place left for a 3g.40gb on GPU 0 is slice 4; GPU 1 is empty so it goes there.
    planned = doc_of(invoke("plan", "--node-json", str(saved), "3g.40gb:3", "--json"), "slurm-gpu.plan/v1")
    assert sorted((p["gpu_index"], p["start"]) for p in planned["placements"]) == [(0, 4), (1, 0), (1, 4)]


def test_sim_reset_removes_instances(node):
    create(node, 1, 19, 2)
    doc = doc_of(invoke("sim", "reset", "--sim-state", node, "--json"), "slurm-gpu.sim/v1")
    assert all(not g["instances"] for g in doc["gpus"])


def test_sim_attach_shows_the_process(node):
    inst = create(node, 0, 19, 1)
    proc = subprocess.Popen(["sleep", "30"])
    try:
        result = invoke(
            "sim", "attach", "--sim-state", node, "--uuid", inst.mig_uuid, "--pid", str(proc.pid), "--json"
        )
        assert doc_of(result, "slurm-gpu.sim.attach/v1")["pid"] == proc.pid
        shown = doc_of(invoke("sim", "show", "--sim-state", node, "--json"), "slurm-gpu.sim/v1")
        assert shown["gpus"][0]["instances"][0]["pids"] == [proc.pid]
    finally:
        proc.kill()
        proc.wait()


def test_sim_attach_unknown_uuid_is_bad_input(node):
    result = invoke("sim", "attach", "--sim-state", node, "--uuid", "MIG-nope", "--pid", str(os.getpid()))
    assert result.exit_code == EXIT_BAD_INPUT
    assert "MIG-nope" in result.stderr


def test_sim_errors(tmp_path, node):
    bad_model = invoke("sim", "init", "--gpus", "Q1-1GB", "--sim-state", str(tmp_path / "x.json"))
    assert bad_model.exit_code == EXIT_BAD_INPUT and "Q1-1GB" in bad_model.stderr
    garbled = tmp_path / "garbled.json"
    garbled.write_text("{}")
    broken = invoke("sim", "show", "--sim-state", str(garbled))
    assert broken.exit_code == EXIT_STATE and str(garbled) in broken.stderr
    nvml_config = tmp_path / "nvml.yaml"
    nvml_config.write_text("version: 1\n")
    nvml_config.chmod(0o600)
    # No --sim-state, no env, and a configuration without driver.sim_state: a usage error naming the ways.
    no_state = invoke("sim", "show", env={"SLURM_GPU_SIM_STATE": None, "SLURM_GPU_CONFIG": str(nvml_config)})
    assert no_state.exit_code == EXIT_USAGE
    assert "--sim-state" in no_state.stderr and "SLURM_GPU_SIM_STATE" in no_state.stderr


def test_inventory_lists_gpus_and_instances(node):
    a = create(node, 0, 9, 4)  # 3g.40gb at 4
    b = create(node, 1, 19, 6)  # 1g.10gb at 6
    doc = doc_of(invoke("inventory", "--sim-state", node, "--json"), "slurm-gpu.inventory/v1")
    assert [g["model"] for g in doc["gpus"]] == ["H100-80GB", "H100-80GB", "A30-24GB"]
    listed = {
        i["mig_uuid"]: (g["index"], i["profile"], i["start"], i["size"])
        for g in doc["gpus"]
        for i in g["instances"]
    }
    assert listed == {a.mig_uuid: (0, "3g.40gb", 4, 4), b.mig_uuid: (1, "1g.10gb", 6, 1)}
    table = invoke("inventory", "--sim-state", node)
    assert table.exit_code == 0
    assert a.mig_uuid in table.stdout and "3g.40gb" in table.stdout and "4/4" in table.stdout


def test_inventory_uses_the_configured_driver(node, tmp_path):
    create(node, 2, _a30_profile_id("2g.12gb"), 2)
    config = tmp_path / "config.yaml"
    config.write_text(f"version: 1\ndriver:\n  kind: sim\n  sim_state: {node}\nstate_dir: {tmp_path / 'j'}\n")
    config.chmod(0o600)
    via_option = doc_of(invoke("--config", str(config), "inventory", "--json"), "slurm-gpu.inventory/v1")
    via_env = doc_of(
        invoke("inventory", "--json", env={"SLURM_GPU_CONFIG": str(config)}), "slurm-gpu.inventory/v1"
    )
    assert via_option["gpus"] == via_env["gpus"]
    assert [i["profile"] for i in via_option["gpus"][2]["instances"]] == ["2g.12gb"]


def _a30_profile_id(name):
    from slurm_gpu.core.catalog import load_catalog

    return load_catalog().model("A30-24GB").profile(name).profile_id


def test_missing_config_file_exits_7(tmp_path):
    result = invoke("--config", str(tmp_path / "none.yaml"), "inventory")
    assert result.exit_code == EXIT_CONFIG
    assert "none.yaml" in result.stderr


def test_status_matches_instances_to_jobs(node, tmp_path):
    journal = Journal(str(tmp_path / "journal"))
    gpus = {g.index: g.uuid for g in open_driver("sim", sim_state=node).gpus()}
    owned = create(node, 0, 19, 0)
    orphan = create(node, 1, 9, 0)
    journal.begin_prepare(
        "1001",
        1000,
        1000,
        "gpu:1g.10gb",
        [Planned(0, gpus[0], 19, "1g.10gb", 0, 1), Planned(0, gpus[0], 19, "1g.10gb", 1, 1)],
    )
    journal.record_created("1001", 0, owned)
    journal.record_created(
        "1001",
        1,
        {"gi_id": 9, "ci_id": 0, "mig_uuid": "MIG-gone", "gi_cap_minor": None, "ci_cap_minor": None},
    )
    with open(os.path.join(journal.jobs_dir, "1002.json"), "w") as f:
        f.write("{broken")

    doc = doc_of(
        invoke("status", "--sim-state", node, "--state-dir", journal.state_dir, "--json"),
        "slurm-gpu.status/v1",
    )
    owners = {i["mig_uuid"]: i["job_id"] for i in doc["instances"]}
    assert owners == {owned.mig_uuid: "1001", orphan.mig_uuid: None}
    assert [o["mig_uuid"] for o in doc["orphans"]] == [orphan.mig_uuid]
    assert [(m["job_id"], m["actual"]["mig_uuid"]) for m in doc["missing"]] == [("1001", "MIG-gone")]
    assert [(p["job_id"], p["kind"]) for p in doc["problems"]] == [("1002", "corrupt")]

    table = invoke("status", "--sim-state", node, "--state-dir", journal.state_dir)
    assert table.exit_code == 0
    assert "ORPHAN" in table.stdout and "MISSING: job 1001" in table.stdout and "PROBLEM:" in table.stdout


def test_status_planned_only_instance_is_owned(node, tmp_path):
    # A prolog that crashed between the create call and recording it: the instance is still the job's.
    journal = Journal(str(tmp_path / "journal"))
    gpu_uuid = open_driver("sim", sim_state=node).gpus()[1].uuid
    inst = create(node, 1, 14, 2)
    journal.begin_prepare("7", 0, 0, "2g.20gb", [Planned(1, gpu_uuid, 14, "2g.20gb", 2, 2)])
    doc = doc_of(
        invoke("status", "--sim-state", node, "--state-dir", journal.state_dir, "--json"),
        "slurm-gpu.status/v1",
    )
    assert [(i["mig_uuid"], i["job_id"], i["journal_state"]) for i in doc["instances"]] == [
        (inst.mig_uuid, "7", "planned")
    ]
    assert doc["orphans"] == [] and doc["missing"] == []


def test_former_state_option_names_still_work_with_a_warning(node, tmp_path):
    # sim --state is now --sim-state (as in inventory/status/config), plan --state is --node-json.
    old = invoke("sim", "show", "--state", node, "--json")
    assert doc_of(old, "slurm-gpu.sim/v1") == doc_of(invoke("sim", "show", "--sim-state", node, "--json"),
                                                     "slurm-gpu.sim/v1")
    assert "--state is deprecated; use --sim-state" in old.stderr
    # An explicit old spelling beats the environment, as the new one does.
    other = invoke("sim", "show", "--state", node, "--json", env={"SLURM_GPU_SIM_STATE": "/nonexistent"})
    assert doc_of(other, "slurm-gpu.sim/v1")["state"] == node
    assert invoke("sim", "show", "--state", node, "--sim-state", node).exit_code == EXIT_USAGE
    saved = tmp_path / "plan.json"
    saved.write_text(invoke("plan", "--gpus", "H100-80GB", "1g.10gb", "--json").stdout)
    planned = invoke("plan", "--state", str(saved), "3g.40gb", "--json")
    assert doc_of(planned, "slurm-gpu.plan/v1")["placements"]
    assert "--state is deprecated; use --node-json" in planned.stderr
    for argv in (["sim", "show"], ["plan"]):
        assert "--state" not in invoke(*argv, "--help").stdout
