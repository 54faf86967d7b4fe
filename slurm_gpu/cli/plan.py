"""``slurm-gpu plan``: where a request would be placed on a described node (pure: touches no GPU).

The node is described on the command line (``--gpus H100-80GB:8 --used "0:3g.40gb@4"``) or by a
JSON file (``--state``). The file format is the ``node`` object that ``plan --json`` prints, so plans
can be chained; ``sim show --json`` and ``inventory --json`` documents are accepted too.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple

import click

from slurm_gpu.cli.output import emit_json, emit_table, json_option

if TYPE_CHECKING:  # pragma: no cover
    from slurm_gpu.core.geometry import NodeState

_GPU_SPEC = re.compile(r"^(?P<model>[A-Za-z0-9][A-Za-z0-9._-]*?)(?::(?P<count>\d+))?$")
_USED_SPEC = re.compile(r"^(?P<gpu>\d+):(?P<profile>[^@\s]+)@(?P<start>\d+)$")


def parse_gpus(text: str) -> List[Tuple[str, int]]:
    """``"H100-80GB:4,A100-40GB:2"`` -> ``[("H100-80GB", 4), ("A100-40GB", 2)]`` (count defaults to 1);
    model keys are checked against the catalog and returned in its spelling."""
    from slurm_gpu.core.catalog import load_catalog
    from slurm_gpu.core.errors import BadInputError

    catalog = load_catalog()
    result = []
    for part in (p.strip() for p in text.split(",")):
        m = _GPU_SPEC.match(part)
        if not m:
            raise BadInputError(
                f"bad GPU list entry {part!r} (expected MODEL[:COUNT], e.g. H100-80GB:8)", part=part
            )
        count = int(m.group("count") or 1)
        if count < 1:
            raise BadInputError(f"GPU count must be at least 1 in {part!r}", part=part)
        result.append((catalog.model(m.group("model")).key, count))
    return result


def node_from_gpus(gpus: Sequence[Tuple[str, int]], used: Optional[str] = None) -> NodeState:
    """An empty node with ``gpus`` (indices 0.. in order), then the ``used`` instances placed."""
    from slurm_gpu.core.catalog import load_catalog
    from slurm_gpu.core.geometry import GpuState, NodeState

    catalog = load_catalog()
    states = []
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
    from slurm_gpu.core.errors import BadInputError, NoFitError

    m = _USED_SPEC.match(part)
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
    the same GPU instance listed once per compute instance.
    """
    from slurm_gpu.core.catalog import load_catalog
    from slurm_gpu.core.errors import BadInputError
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


def load_state_file(path: str) -> NodeState:
    from slurm_gpu.core.errors import BadInputError

    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except OSError as exc:
        raise BadInputError(f"cannot read node state {path}: {exc.strerror}", part=path) from None
    except ValueError as exc:
        raise BadInputError(f"node state {path} is not JSON: {exc}", part=path) from None
    # A `plan --json` document carries the node under "node".
    if isinstance(doc, Mapping) and isinstance(doc.get("node"), Mapping):
        doc = doc["node"]
    return node_from_document(doc, source=path)


def node_to_document(node: NodeState) -> Dict[str, Any]:
    """The ``--state`` format of ``node``."""
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


@click.command("plan")
@click.argument("request", nargs=-1, required=True)
@click.option("--gpus", metavar="MODEL:N[,MODEL:N]", help="The node's GPUs, e.g. H100-80GB:8.")
@click.option(
    "--used", metavar="GPU:PROFILE@START[,...]", help='Instances already there, e.g. "0:3g.40gb@4".'
)
@click.option(
    "--state",
    "state_path",
    type=click.Path(dir_okay=False),
    help="The node as JSON (the 'node' of plan --json, or sim show --json) instead of --gpus/--used.",
)
@json_option
def cmd(
    request: Tuple[str, ...],
    gpus: Optional[str],
    used: Optional[str],
    state_path: Optional[str],
    as_json: bool,
) -> None:
    """Show where REQUEST would be placed on a described node, and what still fits after.

    REQUEST is a Slurm gres request as users write it: 1g.10gb, 1g.10gb:2, gpu:3g.40gb:1,
    gres:gpu:1g.10gb:2, a whole GPU (gpu:1) or a memory size (20gb); several may be given.
    Nothing on this machine is touched. Exit code 4 when the request does not fit.

    \b
    Example:
      slurm-gpu plan --gpus H100-80GB:8 1g.10gb:2
      slurm-gpu plan --gpus H100-80GB:2 --used "0:3g.40gb@4,1:1g.10gb@0" gres:gpu:3g.40gb:1
      slurm-gpu plan --gpus H100-80GB:1 1g.10gb --json > after.json
      slurm-gpu plan --state after.json 3g.40gb
    """
    from slurm_gpu.core.planner import capacity, plan_request
    from slurm_gpu.core.requests import parse_gres

    if state_path and (gpus or used):
        raise click.UsageError("give either --state or --gpus/--used, not both")
    if state_path:
        node = load_state_file(state_path)
    elif gpus:
        node = node_from_gpus(parse_gpus(gpus), used)
    else:
        raise click.UsageError("describe the node with --gpus MODEL:N (or --state FILE)")
    requests = tuple(r for text in request for r in parse_gres(text))
    before = capacity(node)
    placed = plan_request(node, requests)
    after_node = node
    for p in placed:
        after_node = after_node.place(p.gpu_index, p.profile_name, p.start)
    after = capacity(after_node)

    if as_json:
        emit_json(
            "plan",
            {
                "request": [
                    {"raw": r.raw, "type": r.type, "count": r.count, "min_memory_mib": r.min_memory_mib}
                    for r in requests
                ],
                "placements": [
                    {
                        "gpu_index": p.gpu_index,
                        "profile": p.profile_name,
                        "profile_id": p.profile_id,
                        "start": p.start,
                        "size": p.size,
                    }
                    for p in placed
                ],
                "capacity_before": dict(before),
                "capacity_after": dict(after),
                "node": node_to_document(after_node),
            },
        )
        return
    emit_table(
        ["GPU", "MODEL", "PROFILE", "ID", "START", "SIZE"],
        [
            (p.gpu_index, node.gpu(p.gpu_index).model.key, p.profile_name, p.profile_id, p.start, p.size)
            for p in placed
        ],
    )
    click.echo()
    emit_table(
        ["PROFILE", "FITS_BEFORE", "FITS_AFTER"],
        [(name, before.get(name, 0), after[name]) for name in after],
        title="Instances of each profile alone that still fit on the node:",
    )
