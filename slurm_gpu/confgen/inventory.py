"""The inventory the configuration generator renders from: node groups and their GPUs.

An inventory comes from a YAML file describing many nodes, from ``--gpus`` (the local test cluster), or from
the node's own driver. The YAML schema (``version: 1``) is strict: unknown keys are errors.

    version: 1
    max_count_per_node: 8          # K of the fit features (optional, default 8)
    nodes:
      - names: "gpu[01-16]"        # a Slurm hostlist expression
        gpus: "H100-80GB:8"        # MODEL[:COUNT], or a list of them for mixed nodes
        mode: dynamic              # dynamic (default) | static
        cpus: 64                   # optional slurm.conf CPUs=
        memory_mib: 512000         # optional slurm.conf RealMemory=
        features: [ib]             # optional extra node features
        slurm: {Weight: 10}        # optional extra NodeName parameters
      - names: "old[1-2]"
        gpus: "A100-40GB:2"
        mode: static
        layout: ["3g.20gb@1", "3g.20gb@2"]   # every GPU: PROFILE@GI_ID[/CI_ID]; or a list per GPU
        type_prefix: ""            # typed gres name = prefix + profile
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from slurm_gpu.core.catalog import Catalog, GpuModel, load_catalog
from slurm_gpu.core.errors import BadInputError
from slurm_gpu.core.nodespec import parse_gpus
from slurm_gpu.devices.migminors import ci_cap_minor, gi_cap_minor

__all__ = ["StaticDevice", "NodeGroup", "Inventory", "gpu_models", "parse_layout_entry",
           "inventory_from_dict", "load_inventory", "MODES"]

MODES = ("dynamic", "static")
_HOSTLIST = re.compile(r"^[A-Za-z0-9_.\-]+(\[[0-9,\-]+\][A-Za-z0-9_.\-]*)*$")
_NODE_KEYS = {"names", "gpus", "mode", "cpus", "memory_mib", "features", "slurm", "layout", "type_prefix",
              "sockets", "cores_per_socket", "threads_per_core"}
_TOP_KEYS = {"version", "max_count_per_node", "nodes"}
_LAYOUT_ENTRY = re.compile(r"^(?P<profile>[^@\s]+)@(?P<gi>\d+)(?:/(?P<ci>\d+))?$")


@dataclass(frozen=True)
class StaticDevice:
    """One MIG device of a static layout: a typed ``gpu`` gres bound to its three device files."""

    gpu_index: int
    gpu_minor: int
    profile: str  # profile name, or "" for a whole GPU without MIG
    gi_id: int = -1
    ci_id: int = -1
    gi_cap_minor: int = -1
    ci_cap_minor: int = -1

    def files(self, dev_dir: str = "/dev") -> Tuple[str, ...]:
        parent = f"{dev_dir}/nvidia{self.gpu_minor}"
        if not self.profile:
            return (parent,)
        return (parent, f"{dev_dir}/nvidia-caps/nvidia-cap{self.gi_cap_minor}",
                f"{dev_dir}/nvidia-caps/nvidia-cap{self.ci_cap_minor}")


@dataclass(frozen=True)
class NodeGroup:
    names: str  # Slurm hostlist expression
    gpus: Tuple[GpuModel, ...]  # one entry per GPU, in index order
    mode: str = "dynamic"
    cpus: Optional[int] = None
    memory_mib: Optional[int] = None
    features: Tuple[str, ...] = ()
    slurm: Tuple[Tuple[str, str], ...] = ()  # extra NodeName parameters, in order
    static_devices: Tuple[StaticDevice, ...] = ()
    type_prefix: str = ""
    sockets: Optional[int] = None
    cores_per_socket: Optional[int] = None
    threads_per_core: Optional[int] = None
    dev_dir: Optional[str] = None  # where this group's device files live, if not Options.dev_dir

    @property
    def mig_count(self) -> int:
        """The count-only ``mig`` gres: every memory slice of the node's GPUs."""
        return sum(m.memory_slices_total for m in self.gpus)

    def static_type(self, device: StaticDevice) -> str:
        if device.profile:
            return self.type_prefix + device.profile
        return self.gpus[device.gpu_index].key.lower()  # whole GPU: the model, never a profile name


@dataclass(frozen=True)
class Inventory:
    groups: Tuple[NodeGroup, ...]
    max_count_per_node: int = 8
    extra: Dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def dynamic(self) -> Tuple[NodeGroup, ...]:
        return tuple(g for g in self.groups if g.mode == "dynamic")

    @property
    def static(self) -> Tuple[NodeGroup, ...]:
        return tuple(g for g in self.groups if g.mode == "static")


def gpu_models(spec: Any, catalog: Optional[Catalog] = None) -> Tuple[GpuModel, ...]:
    """One model per GPU: ``"H100-80GB:8"`` or ``["H100-80GB:4", "A30-24GB:2"]``, read by
    ``core.nodespec.parse_gpus``."""
    catalog = catalog or load_catalog()
    return tuple(catalog.model(key) for key, count in parse_gpus(spec, catalog) for _ in range(count))


def parse_layout_entry(entry: str) -> Tuple[str, int, int]:
    """``"3g.40gb@2"`` -> ``("3g.40gb", 2, 0)``; ``"1g.10gb@9/0"`` -> ``("1g.10gb", 9, 0)``."""
    m = _LAYOUT_ENTRY.match(str(entry).strip())
    if not m:
        raise BadInputError(f"bad layout entry {entry!r} (want PROFILE@GI_ID[/CI_ID])", part=str(entry))
    return m.group("profile").lower(), int(m.group("gi")), int(m.group("ci") or 0)


def _static_devices(models: Sequence[GpuModel], layout: Any, where: str) -> Tuple[StaticDevice, ...]:
    if not isinstance(layout, list):
        raise BadInputError(f"{where}: layout must be a list", part=str(layout))
    per_gpu: List[Any]
    if layout and all(isinstance(x, list) for x in layout):
        if len(layout) != len(models):
            raise BadInputError(f"{where}: layout has {len(layout)} GPUs, the node {len(models)}",
                                part=str(layout))
        per_gpu = layout
    elif all(isinstance(x, str) for x in layout):
        per_gpu = [layout] * len(models)
    else:
        raise BadInputError(f"{where}: layout is a list of entries or a list of lists", part=str(layout))
    devices: List[StaticDevice] = []
    for index, (model, entries) in enumerate(zip(models, per_gpu)):
        if not entries:
            devices.append(StaticDevice(index, index, ""))
            continue
        seen = set()
        for entry in entries:
            name, gi_id, ci_id = parse_layout_entry(entry)
            model.profile(name)  # raises UnknownProfileError naming the model
            if gi_id in seen:
                raise BadInputError(f"{where}: GPU {index} uses GI id {gi_id} twice", part=str(entry))
            seen.add(gi_id)
            # written for a node whose mig-minors cannot be read from here: the driver's fixed pattern
            devices.append(StaticDevice(index, index, name, gi_id, ci_id, gi_cap_minor(index, gi_id),
                                        ci_cap_minor(index, gi_id, ci_id)))
    return tuple(devices)


def _positive(value: Any, key: str, where: str) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadInputError(f"{where}: {key} must be a positive integer", part=str(value))
    return value


def node_group_from_dict(data: Mapping[str, Any], where: str, catalog: Optional[Catalog] = None) -> NodeGroup:
    if not isinstance(data, Mapping):
        raise BadInputError(f"{where}: a node entry must be a mapping", part=str(data))
    unknown = sorted(set(data) - _NODE_KEYS)
    if unknown:
        known = ", ".join(sorted(_NODE_KEYS))
        raise BadInputError(f"{where}: unknown keys {', '.join(unknown)} (known: {known})", part=unknown[0])
    for required in ("names", "gpus"):
        if required not in data:
            raise BadInputError(f"{where}: missing key {required!r}", part=required)
    names = str(data["names"]).strip()
    if not _HOSTLIST.match(names):
        raise BadInputError(f"{where}: bad node names {names!r}", part=names)
    mode = str(data.get("mode", "dynamic"))
    if mode not in MODES:
        raise BadInputError(f"{where}: mode must be one of {', '.join(MODES)}", part=mode)
    models = gpu_models(data["gpus"], catalog)
    layout = data.get("layout")
    if mode == "dynamic" and layout is not None:
        raise BadInputError(f"{where}: layout is only for mode: static", part="layout")
    if mode == "static" and layout is None:
        raise BadInputError(f"{where}: mode: static needs a layout", part="layout")
    features = data.get("features") or []
    if not isinstance(features, list) or not all(isinstance(f, str) and f for f in features):
        raise BadInputError(f"{where}: features must be a list of names", part=str(features))
    if any(f.startswith("mig.") for f in features):
        raise BadInputError(f"{where}: features under 'mig.' are reserved for slurm-gpu", part=str(features))
    slurm = data.get("slurm") or {}
    if not isinstance(slurm, Mapping):
        raise BadInputError(f"{where}: slurm must be a mapping of NodeName parameters", part=str(slurm))
    return NodeGroup(
        names=names,
        gpus=models,
        mode=mode,
        cpus=_positive(data.get("cpus"), "cpus", where),
        memory_mib=_positive(data.get("memory_mib"), "memory_mib", where),
        features=tuple(features),
        slurm=tuple((str(k), str(v)) for k, v in slurm.items()),
        static_devices=_static_devices(models, layout, where) if mode == "static" else (),
        type_prefix=str(data.get("type_prefix") or ""),
        sockets=_positive(data.get("sockets"), "sockets", where),
        cores_per_socket=_positive(data.get("cores_per_socket"), "cores_per_socket", where),
        threads_per_core=_positive(data.get("threads_per_core"), "threads_per_core", where),
    )


def inventory_from_dict(data: Any, catalog: Optional[Catalog] = None, source: str = "inventory") -> Inventory:
    if not isinstance(data, Mapping):
        raise BadInputError(f"{source}: the inventory must be a mapping with 'version' and 'nodes'",
                            part=source)
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise BadInputError(f"{source}: unknown keys {', '.join(unknown)}", part=unknown[0])
    if data.get("version") != 1:
        raise BadInputError(f"{source}: 'version: 1' is required", part=str(data.get("version")))
    max_count = data.get("max_count_per_node", 8)
    _positive(max_count, "max_count_per_node", source)
    nodes = data.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        raise BadInputError(f"{source}: 'nodes' must be a non-empty list", part="nodes")
    groups = tuple(node_group_from_dict(n, f"{source}: nodes[{i}]", catalog) for i, n in enumerate(nodes))
    return Inventory(groups=groups, max_count_per_node=max_count)


def load_inventory(path: str, catalog: Optional[Catalog] = None) -> Inventory:
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except OSError as exc:
        raise BadInputError(f"cannot read inventory {path}: {exc}", part=path) from exc
    except yaml.YAMLError as exc:
        raise BadInputError(f"inventory {path} is not valid YAML: {exc}", part=path) from exc
    return inventory_from_dict(data, catalog, source=path)
