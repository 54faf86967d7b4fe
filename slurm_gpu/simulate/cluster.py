"""Cluster specs for the simulator: ``NODESxGPUSxMODEL`` (``16x8xH100-80GB``) or a YAML file.

YAML form (mixed clusters)::

    nodes:
      - {count: 12, gpus: 8, model: H100-80GB}
      - {count: 4, gpus: 4, model: A100-80GB, name: a100}   # name: prefix of the node names

Unknown keys are errors, as everywhere in slurm-gpu.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Tuple

from slurm_gpu.core.catalog import Catalog, load_catalog
from slurm_gpu.core.errors import BadInputError

__all__ = ["NodeSpec", "ClusterSpec", "parse_cluster"]

_SPEC = re.compile(r"^\s*(\d+)\s*x\s*(\d+)\s*x\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*$")
_GROUP_KEYS = {"count", "gpus", "model", "name"}


@dataclass(frozen=True)
class NodeSpec:
    name: str
    model: str  # catalog key
    gpus: int


@dataclass(frozen=True)
class ClusterSpec:
    nodes: Tuple[NodeSpec, ...]
    text: str  # what the user gave, for reports

    @property
    def models(self) -> Tuple[str, ...]:
        return tuple(dict.fromkeys(n.model for n in self.nodes))

    @property
    def gpu_count(self) -> int:
        return sum(n.gpus for n in self.nodes)

    def memory_slices(self, catalog: Optional[Catalog] = None) -> int:
        cat = catalog or load_catalog()
        return sum(n.gpus * cat.model(n.model).memory_slices_total for n in self.nodes)


def _group(count: Any, gpus: Any, model: Any, prefix: str, catalog: Catalog, where: str) -> List[NodeSpec]:
    try:
        count, gpus = int(count), int(gpus)
    except (TypeError, ValueError):
        raise BadInputError(f"cluster {where}: count and gpus must be integers", part=where) from None
    if count < 1 or gpus < 1:
        raise BadInputError(f"cluster {where}: count and gpus must be at least 1", part=where)
    key = catalog.model(str(model)).key
    return [NodeSpec(f"{prefix}{i:03d}", key, gpus) for i in range(count)]


def parse_cluster(spec: str, catalog: Optional[Catalog] = None) -> ClusterSpec:
    """``16x8xH100-80GB`` or the path of a YAML file; raises ``BadInputError`` naming the bad part."""
    cat = catalog or load_catalog()
    m = _SPEC.match(spec)
    if m:
        return ClusterSpec(tuple(_group(m.group(1), m.group(2), m.group(3), "gpu", cat, spec)), spec)
    path = Path(spec)
    if not path.is_file():
        raise BadInputError(f"cluster {spec!r} is neither NODESxGPUSxMODEL nor a YAML file", part=spec)
    import yaml  # lazy: only YAML specs need it

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise BadInputError(f"cannot read cluster file {spec}: {exc}", part=spec) from exc
    if not isinstance(data, dict) or set(data) != {"nodes"} or not isinstance(data["nodes"], list):
        raise BadInputError(f"cluster file {spec}: expected one key 'nodes' holding a list", part=spec)
    nodes: List[NodeSpec] = []
    for i, group in enumerate(data["nodes"]):
        where = f"{spec}: nodes[{i}]"
        if not isinstance(group, dict):
            raise BadInputError(f"cluster {where} is not a mapping", part=where)
        unknown = set(group) - _GROUP_KEYS
        missing = {"count", "gpus", "model"} - set(group)
        if unknown or missing:
            raise BadInputError(
                f"cluster {where}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}", part=where
            )
        prefix = str(group.get("name", f"g{i}n"))
        nodes.extend(_group(group["count"], group["gpus"], group["model"], prefix, cat, where))
    if not nodes:
        raise BadInputError(f"cluster file {spec} has no nodes", part=spec)
    if len({n.name for n in nodes}) != len(nodes):
        raise BadInputError(
            f"cluster file {spec}: node names repeat (give each group its own name)", part=spec
        )
    return ClusterSpec(tuple(nodes), spec)
