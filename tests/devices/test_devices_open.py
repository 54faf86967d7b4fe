"""open_driver: kinds, configuration objects, and no heavy imports for the hooks."""

from __future__ import annotations

import subprocess
import sys

import pytest

from slurm_gpu.core.errors import BadInputError
from slurm_gpu.devices.open import open_driver
from slurm_gpu.devices.simnvml import SimNvml
from slurm_gpu.devices.simstate import init_state
from slurm_gpu.node.config import DriverConfig


def test_open_driver_from_kind_and_config(tmp_path):
    path = str(tmp_path / "s.json")
    init_state(path, [("A30-24GB", 1)], sandbox=str(tmp_path / "sb"))

    class Config:
        driver = DriverConfig(kind="sim", sim_state=path)

    for arg in ("sim", Config(), Config.driver):
        drv = open_driver(arg, sim_state=path if arg == "sim" else None)
        assert isinstance(drv._nv, SimNvml)
        assert drv.gpus()[0].model == "A30-24GB"
        inst = drv.create(0, 0, 0)  # 4g.24gb spans the A30
        assert inst.gi_cap_minor == 3 + 9 * inst.gi_id  # read from <sandbox>/mig-minors
        drv.destroy(0, inst.gi_id)
        drv.close()


def test_open_driver_rejects_bad_kinds():
    with pytest.raises(BadInputError):
        open_driver("cuda")
    with pytest.raises(BadInputError):
        open_driver("sim")


def test_importing_devices_loads_neither_pynvml_nor_the_simulator():
    code = "import sys, slurm_gpu.devices; print(sorted(m for m in sys.modules if 'nvml' in m or 'sim' in m))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
