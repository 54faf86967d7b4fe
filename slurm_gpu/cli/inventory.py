"""``slurm-gpu inventory``: this node's GPUs and MIG instances, as the GPU driver reports them."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import click

from slurm_gpu.cli.main import driver_options, get_context
from slurm_gpu.cli.output import emit_json, emit_table, json_option


def profile_name(model_key: Optional[str], profile_id: int) -> Optional[str]:
    """The catalog's name of ``profile_id`` on ``model_key``, or None where the catalog lacks either."""
    from slurm_gpu.core.catalog import load_catalog
    from slurm_gpu.core.errors import CatalogError

    if not model_key:
        return None
    try:
        return load_catalog().model(model_key).profile_by_id(profile_id).name
    except CatalogError:
        return None


def collect(driver: Any, check_catalog: bool = False) -> Dict[str, Any]:
    """GPUs with their instances nested (the ``slurm-gpu.inventory/v1`` payload)."""
    gpus: List[Dict[str, Any]] = []
    instances = driver.instances()
    for gpu in driver.gpus():
        entry = gpu.to_dict()
        entry["instances"] = [
            dict(inst.to_dict(), profile=profile_name(gpu.model, inst.profile_id))
            for inst in sorted(instances, key=lambda i: (i.start, i.gi_id))
            if inst.gpu_index == gpu.index
        ]
        if check_catalog:
            # NVML answers the profile table with MIG off too (tests/fixtures/real-gpu/), so check either way.
            differs = driver.check_catalog(gpu.index) if gpu.model else []
            entry["catalog_differences"] = [d.to_dict() for d in differs]
        gpus.append(entry)
    return {"gpus": gpus}


@click.command("inventory")
@driver_options
@click.option("--check-catalog", is_flag=True, help="Also compare NVML's MIG profiles with the catalog.")
@click.option("--probe", "probe_driver", is_flag=True,
              help="Record every read-only NVML answer MIG depends on (error codes too); changes nothing.")
@json_option
def cmd(driver_kind: Optional[str], sim_state: Optional[str], check_catalog: bool, probe_driver: bool,
        as_json: bool) -> None:
    """List this node's GPUs (index, UUID, model, MIG mode) and MIG instances.

    Instances are listed with their GPU instance and compute instance ids (gi_id, ci_id), profile,
    placement (start/size in memory slices), MIG UUID and the capability device minors
    (/dev/nvidia-caps/nvidia-cap<minor>). The driver is the configured one unless --driver or
    --sim-state is given. MIG_PENDING differs from MIG when a mode change waits for a GPU reset.

    \b
    Example:
      slurm-gpu inventory
      slurm-gpu inventory --json | jq -r '.gpus[].instances[].mig_uuid'
      slurm-gpu inventory --sim-state /tmp/node.json --check-catalog
      slurm-gpu inventory --driver nvml --probe --json > probe-$(hostname).json
    """
    if probe_driver:
        with get_context().driver(driver_kind, sim_state) as driver:
            _show_probe(driver.probe(), as_json)
        return
    with get_context().driver(driver_kind, sim_state) as driver:
        data = collect(driver, check_catalog)
    if as_json:
        emit_json("inventory", data)
        return
    emit_table(
        ["GPU", "UUID", "NAME", "MODEL", "MIG", "MIG_PENDING", "MEMORY_MIB"],
        [
            (
                g["index"],
                g["uuid"],
                g["name"],
                g["model"],
                g["mig_current"],
                g["mig_pending"],
                g["memory_total_mib"],
            )
            for g in data["gpus"]
        ],
    )
    rows = [
        (
            g["index"],
            i["gi_id"],
            i["ci_id"],
            i["profile"] or f"id {i['profile_id']}",
            f"{i['start']}/{i['size']}",
            i["mig_uuid"],
            f"{_cell(i['gi_cap_minor'])},{_cell(i['ci_cap_minor'])}",
        )
        for g in data["gpus"]
        for i in g["instances"]
    ]
    click.echo()
    if rows:
        emit_table(["GPU", "GI", "CI", "PROFILE", "PLACEMENT", "MIG_UUID", "CAP_MINORS"], rows)
    else:
        click.echo("no MIG instances")
    for g in data["gpus"]:
        for d in g.get("catalog_differences", ()):
            click.echo(
                f"catalog differs: GPU {d['gpu_index']} ({d['model']}) profile id {d['profile_id']}: "
                f"{d['field']} catalog={d['catalog']!r} nvml={d['nvml']!r}"
            )


def _show_probe(record: Dict[str, Any], as_json: bool) -> None:
    from slurm_gpu.core.catalog import load_catalog
    from slurm_gpu.core.errors import UnknownModelError
    from slurm_gpu.devices.catalogcheck import catalog_differences
    from slurm_gpu.devices.probe import profiles_of

    catalog = load_catalog()

    differences: List[Dict[str, Any]] = []
    rows = []
    for gpu in record.get("gpus", ()):
        name = gpu.get("name", {}).get("value", "")
        pci = gpu.get("pci", {}).get("value", {}).get("pci_device_id", "")
        try:
            model = catalog.recognise(name, pci)
        except UnknownModelError:
            model = None
        key = gpu["model"] = model.key if model else None
        profiles = profiles_of(gpu)
        if model is not None and profiles:
            differences += [d.to_dict() for d in catalog_differences(gpu["index"], model, profiles)]
        rows.append((gpu["index"], name, key or "-", _answer(gpu.get("mig_mode")), len(profiles),
                     _answer(gpu.get("max_mig_device_count"))))
    record["catalog_differences"] = differences
    if as_json:
        emit_json("inventory.probe", record)
        return
    click.echo(f"driver {_answer(record.get('driver_version'))}")
    emit_table(["GPU", "NAME", "MODEL", "MIG_MODE", "PROFILES_ANSWERED", "MAX_MIG_DEVICES"], rows)
    for d in differences:
        click.echo(f"catalog differs: GPU {d['gpu_index']} ({d['model']}) profile id {d['profile_id']}: "
                   f"{d['field']} catalog={d['catalog']!r} nvml={d['nvml']!r}")


def _answer(answer: Any) -> str:
    if not isinstance(answer, dict):
        return "-"
    return str(answer["value"]) if "value" in answer else str(answer.get("error"))


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)
