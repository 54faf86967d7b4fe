"""``config --from-driver``: the inventory of this node from the simulated driver, layouts made through it."""

from __future__ import annotations

import os
import stat

import pytest

from slurm_gpu.cli.main import run
from slurm_gpu.confgen import render as confgen
from slurm_gpu.confgen.from_driver import inventory_from_driver
from slurm_gpu.core.catalog import load_catalog
from slurm_gpu.core.errors import BadInputError
from slurm_gpu.devices.open import open_driver
from slurm_gpu.devices.simstate import init_state

H100 = load_catalog().model("H100-80GB")


@pytest.fixture()
def node(tmp_path):
    """Two simulated H100s with a sandbox; GPU 0 carries 3g.40gb@4 + 1g.10gb@0, GPU 1 2g.20gb@2."""
    state = str(tmp_path / "gpus.json")
    init_state(state, [("H100-80GB", 2)], mig_enabled=True, sandbox=str(tmp_path / "sb"),
               allow_unprivileged=True)
    driver = open_driver("sim", sim_state=state)
    made = [
        driver.create(0, H100.profile("3g.40gb").profile_id, 4),
        driver.create(0, H100.profile("1g.10gb").profile_id, 0),
        driver.create(1, H100.profile("2g.20gb").profile_id, 2),
    ]
    yield state, driver, made, str(tmp_path / "sb")
    driver.close()


def _mig_minors(sandbox):
    table = {}
    with open(os.path.join(sandbox, "mig-minors"), encoding="ascii") as fh:
        for line in fh:
            key, value = line.split()
            table[key] = int(value)
    return table


def test_static_gres_per_existing_mig_device_with_driver_cap_minors(node):
    state, driver, made, sandbox = node
    inv = inventory_from_driver(driver, "n1", mode="static")
    dev = f"{sandbox}/dev"
    gres = confgen.render("gres", inv, confgen.Options(dev_dir=dev)).splitlines()
    lines = [x for x in gres if x.startswith("NodeName=n1 ")]
    minors = _mig_minors(sandbox)
    expected = []
    for inst in sorted(made, key=lambda i: (i.gpu_index, i.start)):
        gi_key = f"gpu{inst.gpu_index}/gi{inst.gi_id}/access"
        ci_key = f"gpu{inst.gpu_index}/gi{inst.gi_id}/ci0/access"
        profile = H100.profile_by_id(inst.profile_id).name
        expected.append(
            f"NodeName=n1 Name=gpu Type={profile} MultipleFiles={dev}/nvidia{inst.gpu_index},"
            f"{dev}/nvidia-caps/nvidia-cap{minors[gi_key]},{dev}/nvidia-caps/nvidia-cap{minors[ci_key]}")
    assert lines == expected
    # The GI ids came from the driver: the second instance on GPU 0 got the next id, not 1.
    assert sorted(i.gi_id for i in made if i.gpu_index == 0) == [1, 2]
    slurm = confgen.render("slurm", inv)
    assert "NodeName=n1 Gres=gpu:1g.10gb:1,gpu:2g.20gb:1,gpu:3g.40gb:1\n" in slurm
    assert "GresTypes=gpu\n" in slurm and "JobSubmitPlugins" not in slurm
    if os.geteuid() == 0:  # the simulator mknods the files as root: each named file is a char device
        for line in lines:
            for path in line.split("MultipleFiles=")[1].split(","):
                assert stat.S_ISCHR(os.stat(path).st_mode), path


def test_static_follows_the_current_layout(node):
    state, driver, made, _ = node
    driver.destroy(0, made[0].gi_id)  # the 3g.40gb goes; a 4g.40gb cannot fit next to 1g.10gb@0 at 0
    driver.create(0, H100.profile("2g.20gb").profile_id, 4)
    group = inventory_from_driver(driver, "n1", mode="static").groups[0]
    types = sorted(d.profile for d in group.static_devices)
    assert types == ["1g.10gb", "2g.20gb", "2g.20gb"]


def test_static_gpu_without_mig_is_a_whole_gpu_and_half_made_instance_skipped(tmp_path):
    state = str(tmp_path / "gpus.json")
    init_state(state, [("A100-40GB", 1)], mig_enabled=False, allow_unprivileged=True)
    driver = open_driver("sim", sim_state=state)
    try:
        gres = confgen.render("gres", inventory_from_driver(driver, "a1", mode="static"))
    finally:
        driver.close()
    assert "NodeName=a1 Name=gpu Type=a100-40gb File=/dev/nvidia0\n" in gres


def test_static_with_mig_on_and_no_instance_is_refused_dynamic_is_not(tmp_path):
    state = str(tmp_path / "gpus.json")
    init_state(state, [("H100-80GB", 4)], mig_enabled=True, allow_unprivileged=True)
    driver = open_driver("sim", sim_state=state)
    try:
        with pytest.raises(BadInputError, match="no MIG instance"):
            inventory_from_driver(driver, "n1", mode="static")
        inv = inventory_from_driver(driver, "n1", max_count_per_node=3)
    finally:
        driver.close()
    features_mode = confgen.Options(admission="features")
    assert "NodeName=n1 Name=mig Count=32\n" in confgen.render("gres", inv, features_mode)
    slurm = confgen.render("slurm", inv, features_mode)
    line = next(x for x in slurm.splitlines() if x.startswith("NodeName=n1 "))
    assert "Gres=mig:32 " in line and "mig.1g.10gb.3" in line and "mig.1g.10gb.4" not in line


def test_cli_from_sim_state_and_from_configured_driver(node, tmp_path, capsys, monkeypatch):
    state, _, _, sandbox = node
    args = ["config", "gres", "--from-driver", "--mode", "static", "--nodes", "n1"]
    assert run([*args, "--sim-state", state]) == 0
    by_option = capsys.readouterr().out
    assert f"MultipleFiles={sandbox}/dev/nvidia1,{sandbox}/dev/nvidia-caps/nvidia-cap147," in by_option
    config = tmp_path / "config.yaml"
    config.write_text(f"version: 1\ndriver:\n  kind: sim\n  sim_state: {state}\n  sim_sandbox: {sandbox}\n")
    monkeypatch.setenv("SLURM_GPU_CONFIG", str(config))
    assert run(args) == 0
    assert capsys.readouterr().out == by_option
    assert run(["config", "slurm", "--from-driver", "--nodes", "n1", "--json"]) == 0
    assert "NodeName=n1 Gres=migp:1g.10gb:0," in capsys.readouterr().out  # count admission ships
    assert run(["config", "slurm", "--from-driver", "--nodes", "n1", "--admission", "features",
                "--json"]) == 0
    assert "NodeName=n1 Gres=mig:16 " in capsys.readouterr().out
    assert run(["config", "gres", "--gpus", "H100-80GB", "--mode", "static"]) == 3
    assert "--mode static needs --from-driver" in capsys.readouterr().err
