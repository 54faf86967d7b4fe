"""A node described by hand: its GPU list (``--gpus``), instances already there (``--used``) and the
JSON form of a node (``plan --json``'s ``node``, read back by ``plan --node-json``). Pure: no I/O.

>>> parse_gpus("h100-80gb:2, A30-24GB")
[('H100-80GB', 2), ('A30-24GB', 1)]
>>> node = node_from_gpus(parse_gpus("H100-80GB"), used="0:3g.40gb@4")
>>> [(s.start, s.size) for s in node.gpu(0).slots]
[(4, 4)]
>>> node_from_document(node_to_document(node)) == node
True
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple

from slurm_gpu.core.errors import BadInputError, NoFitError

if TYPE_CHECKING:  # pragma: no cover
    from slurm_gpu.core.catalog import Catalog
    from slurm_gpu.core.geometry import NodeState

__all__ = ["parse_gpus", "node_from_gpus", "node_from_document", "node_to_document", "MAX_GPUS_PER_ENTRY"]

MAX_GPUS_PER_ENTRY = 64
_GPU_ENTRY = re.compile(r"^(?P<model>[A-Za-z0-9][A-Za-z0-9._-]*?)(?::(?P<count>\d+))?$")
_USED_ENTRY = re.compile(r"^(?P<gpu>\d+):(?P<profile>[^@\s]+)@(?P<start>\d+)$")


def parse_gpus(spec: Any, catalog: Optional[Catalog] = None) -> List[Tuple[str, int]]:
    """A GPU list -> ``[(model key, count), ...]`` in the order given, keys in the catalog's spelling.

    ``spec`` is ``"H100-80GB:4,A100-40GB:2"`` or a list of such entries; COUNT defaults to 1 and is
    1..64. Raises ``BadInputError`` naming the bad entry, ``UnknownModelError`` for a model the catalog
    lacks.
    """
    from slurm_gpu.core.catalog import load_catalog

    catalog = catalog or load_catalog()
    items = spec if isinstance(spec, (list, tuple)) else str(spec).split(",")
    result = []
    for part in (str(item).strip() for item in items):
        m = _GPU_ENTRY.match(part)
        if not m:
            raise BadInputError(
                f"bad GPU list entry {part!r} (expected MODEL[:COUNT], e.g. H100-80GB:8)", part=part
            )
        count = int(m.group("count") or 1)
        if not 1 <= count <= MAX_GPUS_PER_ENTRY:
            raise BadInputError(f"GPU count in {part!r} must be 1..{MAX_GPUS_PER_ENTRY}", part=part)
        result.append((catalog.model(m.group("model")).key, count))
    if not result:
        raise BadInputError("no GPUs given", part=str(spec))
    return result


def node_from_gpus(gpus: Sequence[Tuple[str, int]], used: Optional[str] = None) -> NodeState:
    """An empty node with ``gpus`` (indices 0.. in order), then the ``used`` instances placed
    (``"GPU:PROFILE@START[,...]"``, e.g. ``"0:3g.40gb@4"``)."""
    from slurm_gpu.core.catalog import load_catalog
    from slurm_gpu.core.geometry import GpuState, NodeState

    catalog = load_catalog()
    states: List[GpuState] = []
    for key, count in gpus:
        model = catalog.model(key)
        first = len(states)
        states.extend(GpuState(first + i, model) for i in range(count))
    node = NodeState(tuple(states))
    for part in (p.strip() for p in (used or "").split(",")):
        if part:
            node = _place_used(node, part)
    return node


def _place_used(node: NodeState, part: str) -> NodeState:
    m = _USED_ENTRY.match(part)
    if not m:
        raise BadInputError(
            f"bad --used entry {part!r} (expected GPU:PROFILE@START, e.g. 0:3g.40gb@4)", part=part
        )
    gpu = node.gpu(int(m.group("gpu")))
    try:
        return node.with_gpu(gpu.place(m.group("profile"), int(m.group("start"))))
    except NoFitError as exc:
        # An impossible description is bad input, not a request that does not fit.
        raise BadInputError(f"--used {part!r}: {exc}", part=part) from None


def node_from_document(doc: Mapping[str, Any], source: str = "state") -> NodeState:
    """A node from ``{"gpus": [{"index", "model", "mig_enabled", "instances": [{"profile", "start"}]}]}``.

    Also read: ``profile_id`` for ``profile``, ``mig_current`` for ``mig_enabled`` (``sim show``), and
    the same GPU instance listed once per compute instance. ``source`` names the document in errors.
    """
    from slurm_gpu.core.catalog import load_catalog
    from slurm_gpu.core.geometry import GpuState, NodeState, Slot

    catalog = load_catalog()
    gpus = doc.get("gpus") if isinstance(doc, Mapping) else None
    if not isinstance(gpus, list) or not gpus:
        raise BadInputError(f"{source}: expected an object with a non-empty 'gpus' list", part=source)
    states = []
    for n, entry in enumerate(gpus):
        where = f"{source}: gpus[{n}]"
        if not isinstance(entry, Mapping) or "model" not in entry:
            raise BadInputError(f"{where}: expected an object with 'model'", part=where)
        model = catalog.model(str(entry["model"]))
        index = entry.get("index", n)
        enabled = entry.get("mig_enabled", entry.get("mig_current", True))
        slots: Dict[int, Slot] = {}
        for k, inst in enumerate(entry.get("instances") or []):
            try:
                profile = (
                    model.profile(str(inst["profile"]))
                    if inst.get("profile") is not None
                    else model.profile_by_id(int(inst["profile_id"]))
                )
                start = int(inst["start"])
            except (KeyError, TypeError, ValueError, AttributeError):
                part = f"{where}.instances[{k}]"
                raise BadInputError(
                    f"{part}: needs 'profile' (or 'profile_id') and 'start'", part=part
                ) from None
            slot = Slot(start, profile.memory_slices, profile.profile_id)
            if slots.get(start, slot) != slot:
                raise BadInputError(f"{where}: two different instances start at slice {start}", part=where)
            slots[start] = slot
        if not isinstance(index, int) or isinstance(index, bool):
            raise BadInputError(f"{where}: 'index' must be an integer", part=where)
        states.append(GpuState(index, model, tuple(slots.values()), mig_enabled=bool(enabled)))
    return NodeState(tuple(states))


def node_to_document(node: NodeState) -> Dict[str, Any]:
    """The JSON form of ``node`` that :func:`node_from_document` reads."""
    return {
        "gpus": [
            {
                "index": g.index,
                "model": g.model.key,
                "mig_enabled": g.mig_enabled,
                "instances": [
                    {
                        "profile": g.model.profile_by_id(s.profile_id).name,
                        "profile_id": s.profile_id,
                        "start": s.start,
                        "size": s.size,
                    }
                    for s in g.slots
                ],
            }
            for g in node.gpus
        ]
    }
