"""``slurm-gpu status``: MIG instances with the jobs that own them, by the driver and the journal.

Read-only: it reports orphans (instances no journal record names), instances the journal says exist but
the driver lacks, and journal files that cannot be trusted; ``slurm-gpu reconcile`` repairs.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import click

from slurm_gpu.cli.inventory import profile_name
from slurm_gpu.cli.main import driver_options, get_context
from slurm_gpu.cli.output import emit_json, emit_table, json_option


def match(
    instances: Sequence[Any], records: Sequence[Any]
) -> Tuple[List[Tuple[Any, Optional[Any], Any]], List[Tuple[Any, Any]]]:
    """Pairs each driver instance with its owning ``(record, journal instance)`` or ``(None, None)``
    (``core.ownership``: the matcher release and reconcile use); also the journal's created instances
    that no driver instance matches (``missing``). A released record instance owns nothing."""
    from slurm_gpu.core.ownership import match as ownership
    from slurm_gpu.core.vocab import InstanceState

    owners = ownership(records, instances)
    items = {(r.job_id, n): (r, item) for r in records for n, item in enumerate(r.instances)}
    owned: List[Tuple[Any, Optional[Any], Any]] = []
    for n, inst in enumerate(instances):
        live = [items[c] for c in owners.claims[n] if items[c][1].state != InstanceState.RELEASED]
        owned.append((inst, *live[0]) if live else (inst, None, None))
    missing = [
        (r, item) for (job_id, n), (r, item) in items.items()
        if item.actual is not None and item.state != InstanceState.RELEASED
        and owners.instance_of(job_id, n) is None
    ]
    return owned, missing


def collect(driver: Any, journal: Any) -> Dict[str, Any]:
    """The ``slurm-gpu.status/v1`` payload."""
    models = {g.index: g.model for g in driver.gpus()}
    instances = sorted(driver.instances(), key=lambda i: (i.gpu_index, i.start))
    records = journal.jobs()
    owned, missing = match(instances, records)
    rows = []
    for inst, record, item in owned:
        entry = dict(inst.to_dict(), profile=profile_name(models.get(inst.gpu_index), inst.profile_id))
        entry.update(
            job_id=record.job_id if record else None,
            phase=record.phase if record else None,
            journal_state=item.state if item else None,
            stale=record.stale if record else None,
        )
        rows.append(entry)
    return {
        "state_dir": journal.state_dir,
        "instances": rows,
        "jobs": [
            {
                "job_id": r.job_id,
                "uid": r.uid,
                "request": r.request,
                "phase": r.phase,
                "stale": r.stale,
                "instances": [
                    {"state": i.state, "planned": _asdict(i.planned), "actual": _asdict(i.actual)}
                    for i in r.instances
                ],
            }
            for r in records
        ],
        "orphans": [row for row in rows if row["job_id"] is None],
        "missing": [
            {"job_id": r.job_id, "state": i.state, "planned": _asdict(i.planned), "actual": _asdict(i.actual)}
            for r, i in missing
        ],
        "problems": [
            {"path": p.path, "kind": p.kind, "reason": p.reason, "job_id": p.job_id}
            for p in journal.problems()
        ],
    }


def _asdict(value: Any) -> Optional[Dict[str, Any]]:
    from dataclasses import asdict

    return None if value is None else asdict(value)


@click.command("status")
@driver_options
@click.option(
    "--state-dir", type=click.Path(file_okay=False), help="Journal directory (default: from config)."
)
@json_option
def cmd(
    driver_kind: Optional[str], sim_state: Optional[str], state_dir: Optional[str], as_json: bool
) -> None:
    """Show MIG instances with their owning jobs, orphans, and journal problems.

    Compares what the GPU driver has with what the node journal records. ORPHAN instances are named
    by no journal record; MISSING ones are recorded as created but absent from the driver; PROBLEMS
    are journal files that are corrupt, foreign or from another boot (never deleted here).
    Read-only; `slurm-gpu reconcile` repairs. Exit code 0 whatever it finds.

    \b
    Example:
      slurm-gpu status
      slurm-gpu status --json | jq '.orphans | length'
      slurm-gpu status --sim-state /tmp/node.json --state-dir /tmp/journal
    """
    from slurm_gpu.state.journal import Journal

    context = get_context()
    journal = Journal(context.state_dir(state_dir))
    with context.driver(driver_kind, sim_state) as driver:
        data = collect(driver, journal)
    if as_json:
        emit_json("status", data)
        return
    if data["instances"]:
        emit_table(
            ["GPU", "GI", "CI", "PROFILE", "PLACEMENT", "MIG_UUID", "JOB", "PHASE"],
            [
                (
                    r["gpu_index"],
                    r["gi_id"],
                    r["ci_id"],
                    r["profile"] or f"id {r['profile_id']}",
                    f"{r['start']}/{r['size']}",
                    r["mig_uuid"],
                    r["job_id"] or "ORPHAN",
                    (r["phase"] or "-") + (" (stale)" if r["stale"] else ""),
                )
                for r in data["instances"]
            ],
        )
    else:
        click.echo("no MIG instances")
    for m in data["missing"]:
        p, a = m["planned"], m["actual"]
        click.echo(
            f"MISSING: job {m['job_id']} {p['profile_name']} on GPU {p['gpu_index']} at {p['start']} "
            f"(gi {a['gi_id']}, {a['mig_uuid']}) is not in the driver"
        )
    for p in data["problems"]:
        click.echo(f"PROBLEM: {p['path']}: {p['kind']}: {p['reason']}")
    click.echo(
        f"{len(data['instances'])} instance(s), {len(data['jobs'])} job record(s), "
        f"{len(data['orphans'])} orphan(s), "
        f"{len(data['missing'])} missing, {len(data['problems'])} problem(s)"
    )
