"""One contract suite for the Driver, run on NvmlDriver(SimNvml) always and on NvmlDriver(pynvml) where a
GPU exists. Only read-only checks here: inventory, MIG mode, profiles, placements, instance listing."""

from __future__ import annotations

import re

import pytest

from slurm_gpu.core.catalog import load_catalog
from slurm_gpu.core.errors import DriverError
from slurm_gpu.devices.api import GpuInfo, MigInstance, NvmlProfile
from slurm_gpu.devices.nvml import NvmlDriver
from slurm_gpu.devices.open import open_driver
from slurm_gpu.devices.simnvml import SimNvml
from slurm_gpu.devices.simstate import init_state


def _real_gpu_present() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return False
    try:
        return pynvml.nvmlDeviceGetCount() > 0
    finally:
        pynvml.nvmlShutdown()


@pytest.fixture(params=["sim", pytest.param("nvml", marks=pytest.mark.gpu)])
def driver(request, tmp_path):
    if request.param == "nvml":
        if not _real_gpu_present():
            pytest.skip("no NVIDIA GPU / NVML on this host")
        drv = open_driver("nvml")
    else:
        state = tmp_path / "sim.json"
        init_state(str(state), [("H100-80GB", 2), ("A100-40GB", 1), ("A30-24GB", 1)])
        drv = open_driver("sim", str(state))
        # one instance so the listing has something to show
        drv.create(0, load_catalog().model("H100-80GB").profile("3g.40gb").profile_id, 4)
    yield drv
    drv.close()


def test_inventory(driver):
    gpus = driver.gpus()
    assert gpus, "a driver that opened must see at least one GPU"
    assert [g.index for g in gpus] == list(range(len(gpus)))
    assert len({g.uuid for g in gpus}) == len(gpus)
    for g in gpus:
        assert isinstance(g, GpuInfo)
        assert g.uuid.startswith("GPU-")
        assert re.fullmatch(r"0x[0-9A-F]{8}", g.pci_device_id)
        assert g.memory_total_mib > 1024
        assert isinstance(g.mig_current, bool) and isinstance(g.mig_pending, bool)
        assert g.to_dict()["uuid"] == g.uuid
        if g.model is not None:
            model = load_catalog().model(g.model)
            assert g.pci_device_id in model.pci_device_ids or g.name in model.nvml_names


def test_profiles_and_placements(driver):
    checked = 0
    for g in driver.gpus():
        profiles = driver.read_profiles(g.index)
        if not g.mig_current and not profiles:
            continue  # drivers answer the table with MIG off (580 on H200 does), not every one must
        assert profiles, f"MIG is on for GPU {g.index} but NVML offers no profile"
        assert len({p.profile_id for p in profiles}) == len(profiles)
        indices = [p.nvml_profile_index for p in profiles]
        assert indices == sorted(indices)
        for p in profiles:
            assert isinstance(p, NvmlProfile)
            assert p.instance_count >= 1 and p.slice_count >= 1 and p.memory_mib > 0
            assert p.placements, f"profile {p.profile_id} has no placement"
            assert len({size for _, size in p.placements}) == 1
            assert len(p.placements) >= p.instance_count
        if g.model is not None:
            model = load_catalog().model(g.model)
            widest = max(s + z for p in profiles for s, z in p.placements)
            assert widest == model.memory_slices_total
            # NVML wins over the catalog: report, do not fail, on real hardware
            differences = driver.check_catalog(g.index)
            if isinstance(getattr(driver, "_nv", None), SimNvml):
                assert differences == []
            else:
                print(f"GPU {g.index} catalog differences: {[str(d) for d in differences]}")
        checked += 1
    if checked == 0:
        pytest.skip("no GPU whose driver offers a MIG profile table")


def test_instances_listing(driver):
    gpus = {g.index: g for g in driver.gpus()}
    instances = driver.instances()
    for inst in instances:
        assert isinstance(inst, MigInstance)
        assert inst.gpu_uuid == gpus[inst.gpu_index].uuid
        profile = next(p for p in driver.read_profiles(inst.gpu_index) if p.profile_id == inst.profile_id)
        assert (inst.start, inst.size) in profile.placements
        if inst.mig_uuid is not None:
            assert re.fullmatch(
                r"MIG-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", inst.mig_uuid
            )
    for index in gpus:
        assert driver.instances(index) == [i for i in instances if i.gpu_index == index]
    if isinstance(getattr(driver, "_nv", None), SimNvml):
        assert [(i.gpu_index, i.start, i.size) for i in instances] == [(0, 4, 4)]


def test_bad_gpu_index_is_driver_error(driver):
    count = len(driver.gpus())
    with pytest.raises(DriverError) as err:
        driver.read_profiles(count + 3)
    assert err.value.nvml_code is not None
    assert f"GPU {count + 3}" in str(err.value)


def test_close_twice_is_harmless(driver):
    driver.gpus()
    driver.close()
    driver.close()
    assert driver.gpus()  # reopens NVML on demand


def test_nvml_driver_defaults_to_pynvml():
    import pynvml

    assert NvmlDriver()._nv is pynvml
