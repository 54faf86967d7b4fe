"""``slurm-gpu plan``: where a request would be placed on a described node (pure: touches no GPU).

The node is described on the command line (``--gpus H100-80GB:8 --used "0:3g.40gb@4"``) or by a
JSON file (``--node-json``). The file format is the ``node`` object that ``plan --json`` prints, so plans
can be chained; ``sim show --json`` and ``inventory --json`` documents are accepted too. Parsing both
forms is ``slurm_gpu.core.nodespec``'s.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Mapping, Optional, Tuple

import click

from slurm_gpu.cli.main import renamed_option
from slurm_gpu.cli.output import emit_json, emit_table, json_option

if TYPE_CHECKING:  # pragma: no cover
    from slurm_gpu.core.geometry import NodeState


def load_state_file(path: str) -> NodeState:
    """The node described by the JSON file ``path`` (a ``node`` object, or a document holding one)."""
    from slurm_gpu.core.errors import BadInputError
    from slurm_gpu.core.nodespec import node_from_document

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


@click.command("plan")
@click.argument("request", nargs=-1, required=True)
@click.option("--gpus", metavar="MODEL:N[,MODEL:N]", help="The node's GPUs, e.g. H100-80GB:8.")
@click.option(
    "--used", metavar="GPU:PROFILE@START[,...]", help='Instances already there, e.g. "0:3g.40gb@4".'
)
@click.option(
    "--node-json",
    "node_path",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="The node as JSON (the 'node' of plan --json, or sim show --json) instead of --gpus/--used.",
)
@json_option
@renamed_option("--state", "--node-json", "node_path", type=click.Path(dir_okay=False))
def cmd(
    request: Tuple[str, ...],
    gpus: Optional[str],
    used: Optional[str],
    node_path: Optional[str],
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
      slurm-gpu plan --node-json after.json 3g.40gb
    """
    from slurm_gpu.core.nodespec import node_from_gpus, node_to_document, parse_gpus
    from slurm_gpu.core.planner import capacity, plan_request
    from slurm_gpu.core.requests import parse_gres

    if node_path and (gpus or used):
        raise click.UsageError("give either --node-json or --gpus/--used, not both")
    if node_path:
        node = load_state_file(node_path)
    elif gpus:
        node = node_from_gpus(parse_gpus(gpus), used)
    else:
        raise click.UsageError("describe the node with --gpus MODEL:N (or --node-json FILE)")
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
