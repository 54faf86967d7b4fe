"""Recognition of every MIG GPU the catalog lists: by PCI device id (subsystem variants too), then by name.

PCI ids and names are those of NVIDIA's open kernel modules' product table (595.45.04) and of mig-parted's
default config groups; each case names the product it stands for.
"""

import pytest

from slurm_gpu.core.catalog import load_catalog
from slurm_gpu.core.errors import UnknownModelError

CAT = load_catalog()

BY_PCI = [
    # (pciDeviceId as NVML gives it or the bare device id, subsystem or None, model, product)
    ("0x20B010DE", None, "A100-40GB", "NVIDIA A100-SXM4-40GB"),
    ("0x20B0", "0x145010DE", "A100-40GB", "NVIDIA A100-PG509-200"),
    ("0x20B110DE", None, "A100-40GB", None),  # mig-parted's A100-40GB group
    ("0x20F1", None, "A100-40GB", "NVIDIA A100-PCIE-40GB"),
    ("0x20BD", "0x17F410DE", "A100-40GB", "NVIDIA A800-SXM4-40GB"),
    ("20F6", None, "A100-40GB", "NVIDIA A800 40GB Active"),
    ("0x20F6", "0x180A17AA", "A100-40GB", "NVIDIA A800 40GB Active"),
    ("0x20B2", "0x162510DE", "A100-80GB", "NVIDIA PG509-210"),
    ("0x20B5", None, "A100-80GB", "NVIDIA A100 80GB PCIe"),
    ("0x20F310DE", None, "A100-80GB", "NVIDIA A800-SXM4-80GB"),
    ("0x20F3", "0x17A210DE", "A100-80GB", "NVIDIA A800-SXM4-80GB"),
    ("0x20F5", None, "A100-80GB", "NVIDIA A800 80GB PCIe"),
    ("0x20F5", "0x179A10DE", "A100-80GB", "NVIDIA A800 80GB PCIe LC"),
    ("0x20B7", None, "A30-24GB", None),
    ("0x2330", None, "H100-80GB", "NVIDIA H100 80GB HBM3"),
    ("0x2331", None, "H100-80GB", "NVIDIA H100 PCIe"),
    ("0x2322", None, "H100-80GB", "NVIDIA H800 PCIe"),
    ("0x232410DE", None, "H100-80GB", "NVIDIA H800"),
    ("0x2321", None, "H100-NVL-94GB", "NVIDIA H100 NVL"),
    ("0x233A", None, "H100-NVL-94GB", "NVIDIA H800 NVL"),
    ("0x2342", "0x16EB10DE", "GH200-96GB", "NVIDIA GH200 120GB"),
    ("0x2342", "0x180910DE", "GH200-96GB", "NVIDIA GH200 480GB"),
    ("0x2348", None, "GH200-144GB", "NVIDIA GH200 144G HBM3e"),
    ("0x2335", None, "H200-141GB", "NVIDIA H200"),
    ("0x233B", None, "H200-141GB", "NVIDIA H200 NVL"),
    ("0x2329", None, "H20-96GB", "NVIDIA H20"),
    ("0x232C", None, "H20-3e-141GB", "NVIDIA H20-3e"),
    ("0x20B6", None, "PG506-96GB", "NVIDIA PG506-232"),
    ("0x2901", None, "B200-180GB", "NVIDIA B200"),
    ("0x2941", None, "GB200-186GB", "NVIDIA GB200"),
    ("0x2941", "0x21CA10DE", "GB200-186GB", "NVIDIA GB200"),
    ("0x31C2", None, "GB300-278GB", "NVIDIA GB300"),
    ("0x3182", None, "B300-269GB", "NVIDIA B300 SXM6 AC"),
    ("0x2BB5", None, "RTX-PRO-6000-Blackwell-96GB", "NVIDIA RTX PRO 6000 Blackwell Server Edition"),
    ("0x2BB1", None, "RTX-PRO-6000-Blackwell-96GB", "NVIDIA RTX PRO 6000 Blackwell Workstation Edition"),
    ("0x2BB4", "0x204C1028", "RTX-PRO-6000-Blackwell-96GB",
     "NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition"),
]


@pytest.mark.parametrize("pci, subsystem, key, product", BY_PCI, ids=[f"{c[0]}-{c[2]}" for c in BY_PCI])
def test_every_pci_id_resolves(pci, subsystem, key, product):
    # the name is deliberately useless: the PCI id alone must decide
    found = CAT.identify("unknown name", pci, subsystem)
    assert found.model.key == key
    if product is not None:
        assert found.product == product
    assert found.matched_by == ("pci+subsystem" if subsystem else "pci")
    assert CAT.recognise("unknown name", pci, subsystem).key == key


BY_NAME = [
    ("NVIDIA A800-SXM4-40GB", "A100-40GB"),
    ("NVIDIA A800 40GB Active", "A100-40GB"),
    ("NVIDIA A800-SXM4-80GB", "A100-80GB"),
    ("NVIDIA A800 80GB PCIe", "A100-80GB"),
    ("NVIDIA H800 PCIe", "H100-80GB"),
    ("NVIDIA H800", "H100-80GB"),
    ("NVIDIA H800 NVL", "H100-NVL-94GB"),
    ("NVIDIA GH200 120GB", "GH200-96GB"),
    ("NVIDIA GH200 480GB", "GH200-96GB"),
    ("NVIDIA H20", "H20-96GB"),
    ("NVIDIA H20-3e", "H20-3e-141GB"),
    ("NVIDIA PG506-232", "PG506-96GB"),
    ("NVIDIA GB200", "GB200-186GB"),
    ("NVIDIA GB300", "GB300-278GB"),
    ("NVIDIA B300 SXM6 AC", "B300-269GB"),
    ("NVIDIA RTX PRO 6000 Blackwell Workstation Edition", "RTX-PRO-6000-Blackwell-96GB"),
    ("nvidia rtx pro 6000 blackwell max-q workstation edition", "RTX-PRO-6000-Blackwell-96GB"),
]


@pytest.mark.parametrize("name, key", BY_NAME)
def test_every_name_resolves_without_pci(name, key):
    found = CAT.identify(name)
    assert (found.model.key, found.matched_by) == (key, "name")


def test_pci_id_wins_over_the_name():
    assert CAT.recognise("NVIDIA H100 80GB HBM3", "0x2941").key == "GB200-186GB"


def test_an_unknown_subsystem_still_resolves_by_device():
    assert CAT.identify("x", "0x2342", "0xFFFF10DE").matched_by == "pci"


def test_every_catalog_pci_row_resolves_to_its_own_model():
    for model in CAT.models:
        for row in model.pci_ids:
            assert row.device in model.pci_device_ids, (model.key, row)
            assert CAT.identify("", row.device, row.subsystem).model is model


def test_unknown_gpu_and_bad_pci_id():
    with pytest.raises(UnknownModelError):
        CAT.recognise("Tesla T4", "0x1EB8")
    with pytest.raises(UnknownModelError):
        CAT.recognise("x", "0xZZ")


def test_unconfirmed_values_are_marked():
    # models whose profiles no capture confirms say so at model and profile level
    for key in ("GB300-278GB", "B300-269GB", "H20-3e-141GB"):
        model = CAT.model(key)
        assert model.unconfirmed_fields
        assert all("memory_mib" in p.unconfirmed and p.memory_mib is None for p in model.profiles)
    gb200 = CAT.model("GB200-186GB")
    assert gb200.profile("1g.23gb").memory_mib == 22528
    assert "memory_mib" not in gb200.profile("1g.23gb").unconfirmed
    assert gb200.profile("7g.186gb").memory_mib is None


def test_memory_values_from_recent_captures():
    assert CAT.model("H200-141GB").profile("7g.141gb").memory_mib == 143104  # 139.75 GiB
    a100 = CAT.model("A100-80GB")
    assert [a100.profile(n).memory_mib for n in ("3g.40gb", "4g.40gb", "7g.80gb")] == [40448, 40448, 81152]
    keys = ("GH200-96GB", "H200-141GB", "B200-180GB", "H20-96GB")
    totals = {k: CAT.model(k).total_memory_mib for k in keys}
    assert totals == {"GH200-96GB": 97871, "H200-141GB": 143771, "B200-180GB": 183359, "H20-96GB": 97871}
