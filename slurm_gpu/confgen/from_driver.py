"""The inventory of this node from its GPU driver (real NVML or the simulator): ``config --from-driver``.

Dynamic mode takes only the GPU models. Static mode binds one typed ``gpu`` gres to every MIG device that
exists now, like Slurm's ``AutoDetect=nvml``: the parent ``/dev/nvidia<minor>`` plus the GI and CI
capability files whose minors the driver publishes (``/proc/driver/nvidia-caps/mig-minors``). A GPU with
MIG off is one whole GPU; a GPU with MIG on and no instance offers nothing (AutoDetect does the same).
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from slurm_gpu.confgen.inventory import MODES, Inventory, NodeGroup, StaticDevice
from slurm_gpu.core.errors import BadInputError, UnknownModelError
from slurm_gpu.devices.migminors import ci_cap_minor, gi_cap_minor

__all__ = ["node_group_from_driver", "inventory_from_driver", "static_devices_from_driver"]


def _models(driver: Any, catalog: Any) -> Tuple[Any, list]:
    gpus = driver.gpus()
    if not gpus:
        raise BadInputError("the GPU driver reports no GPUs on this node", part="gpus")
    models = []
    for gpu in gpus:
        if not gpu.model:
            raise UnknownModelError(
                f"GPU {gpu.index} ({gpu.name}, {gpu.pci_device_id}) is not in the catalog", part=gpu.name)
        models.append(catalog.model(gpu.model))
    return tuple(models), gpus


def static_devices_from_driver(driver: Any, catalog: Any = None) -> Tuple[StaticDevice, ...]:
    """One device per existing MIG device (GI with its CI), or per whole GPU where MIG is off."""
    from slurm_gpu.core.catalog import load_catalog

    models, gpus = _models(driver, catalog or load_catalog())
    devices: List[StaticDevice] = []
    for gpu, model in zip(gpus, models):
        if not gpu.mig_current:
            devices.append(StaticDevice(gpu.index, gpu.minor, ""))
            continue
        for inst in driver.instances(gpu.index):
            if inst.ci_id is None:
                continue  # a GPU instance without compute instance is no usable device (a crash leftover)
            profile = model.profile_by_id(inst.profile_id)
            # The driver's minors where mig-minors is readable; the driver's fixed pattern otherwise.
            gi_minor = inst.gi_cap_minor
            if gi_minor is None:
                gi_minor = gi_cap_minor(gpu.minor, inst.gi_id)
            ci_minor = inst.ci_cap_minor
            if ci_minor is None:
                ci_minor = ci_cap_minor(gpu.minor, inst.gi_id, inst.ci_id)
            devices.append(StaticDevice(gpu.index, gpu.minor, profile.name, inst.gi_id, inst.ci_id,
                                        gi_minor, ci_minor))
    return tuple(devices)


def node_group_from_driver(driver: Any, names: str, mode: str = "dynamic", catalog: Any = None,
                           dev_dir: Optional[str] = None, **extra: Any) -> NodeGroup:
    """The node group of this node's GPUs; ``extra`` are further :class:`NodeGroup` fields (cpus, slurm)."""
    from slurm_gpu.core.catalog import load_catalog

    if mode not in MODES:
        raise BadInputError(f"mode must be one of {', '.join(MODES)}", part=mode)
    catalog = catalog or load_catalog()
    models, _ = _models(driver, catalog)
    devices: Tuple[StaticDevice, ...] = ()
    if mode == "static":
        devices = static_devices_from_driver(driver, catalog)
        if not devices:
            raise BadInputError(
                "static mode: MIG is on and no MIG instance exists on any GPU of this node; create the "
                "layout first (nvidia-smi mig -cgi ... -C) or use dynamic mode", part="static")
    return NodeGroup(names=names, gpus=models, mode=mode, static_devices=devices, dev_dir=dev_dir, **extra)


def inventory_from_driver(driver: Any, names: str, mode: str = "dynamic", max_count_per_node: int = 8,
                          catalog: Any = None) -> Inventory:
    return Inventory(groups=(node_group_from_driver(driver, names, mode, catalog),),
                     max_count_per_node=max_count_per_node)
