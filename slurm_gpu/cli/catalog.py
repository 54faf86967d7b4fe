"""``slurm-gpu catalog [MODEL]``: the packaged MIG catalog, as a list of models or one model's profiles."""

from __future__ import annotations

from typing import Any, Optional

import click

from slurm_gpu.cli.output import emit_json, emit_pairs, emit_table, json_option


@click.command("catalog")
@click.argument("model", required=False)
@click.option("--all", "show_all", is_flag=True, help="With MODEL: also list media-engine/graphics variants.")
@click.option("--identify", "identify_name", metavar="NAME", default=None,
              help="Resolve an NVML device name (with --pci: PCI id first) to its catalog model.")
@click.option("--pci", "pci_id", metavar="0xDEVICE", default=None,
              help="With --identify: NVML's pciDeviceId (0x233010DE) or the bare device id (0x2330).")
@click.option("--subsystem", "subsystem_id", metavar="0xSUBSYS", default=None,
              help="With --identify: NVML's pciSubSystemId (0x16EB10DE), which names the product.")
@json_option
def cmd(model: Optional[str], show_all: bool, identify_name: Optional[str], pci_id: Optional[str],
        subsystem_id: Optional[str], as_json: bool) -> None:
    """List GPU models, or one MODEL's MIG profiles.

    MODEL is a catalog key such as H100-80GB (case-insensitive). Profiles are listed with NVML's
    profile id (what create and placement calls take), the NVML_GPU_INSTANCE_PROFILE_* constant,
    compute and memory slices, memory in MiB, the most instances per GPU and the placements as
    start/size in memory slices. Values no source confirms are listed as unconfirmed.
    With --json: {"schema": "slurm-gpu.catalog/v1", "models": [...]}, each model complete with every
    profile (variants included); with MODEL, only that model.
    --identify NAME [--pci 0xDEVICE] prints the model a GPU resolves to (PCI device id first, then the
    name; exit 3 when none): {"schema": "slurm-gpu.catalog.identify/v1", "model", "matched_by", ...}.

    \b
    Example:
      slurm-gpu catalog
      slurm-gpu catalog H100-80GB
      slurm-gpu catalog h100-80gb --json | jq '.models[0].profiles[] | {name, profile_id}'
      slurm-gpu catalog --identify "NVIDIA A800-SXM4-80GB" --pci 0x20F3 --json
    """
    from slurm_gpu.core.catalog import load_catalog

    catalog = load_catalog()
    if identify_name is not None or pci_id is not None:
        _identify(catalog, identify_name or "", pci_id, subsystem_id, as_json)
    elif model is None:
        _list_models(catalog, as_json)
    else:
        _show_model(catalog.model(model), show_all, as_json)


def _identify(catalog: Any, name: str, pci_id: Optional[str], subsystem_id: Optional[str],
              as_json: bool) -> None:
    found = catalog.identify(name, pci_id, subsystem_id)  # UnknownModelError: exit 3 with the reason
    payload = {"name": name, "pci_device_id": pci_id, "pci_subsystem_id": subsystem_id, **found.to_dict()}
    if as_json:
        emit_json("catalog.identify", payload)
        return
    emit_pairs([
        ("model", found.model.key),
        ("matched by", found.matched_by),
        ("product", found.product),
        ("architecture", found.model.architecture),
        ("unconfirmed", list(found.model.unconfirmed_fields)),
    ])


def _list_models(catalog: Any, as_json: bool) -> None:
    if as_json:
        emit_json("catalog", {"models": [m.to_dict() for m in catalog.models]})
        return
    emit_table(
        ["MODEL", "ARCH", "SLICES", "MAX_GI", "MEMORY_MIB", "PROFILES"],
        [
            (
                m.key,
                m.architecture,
                f"{m.compute_slices_total}c/{m.memory_slices_total}m",
                m.max_gpu_instances,
                m.total_memory_mib,
                " ".join(p.name for p in m.base_profiles()),
            )
            for m in catalog.models
        ],
    )


def _show_model(m: Any, show_all: bool, as_json: bool) -> None:
    if as_json:
        # The same shape as the list, so a reader handles one document type.
        emit_json("catalog", {"models": [m.to_dict()]})
        return
    emit_pairs(
        [
            ("model", m.key),
            ("architecture", m.architecture),
            ("nvml names", ", ".join(m.nvml_names)),
            ("slices", f"{m.compute_slices_total} compute, {m.memory_slices_total} memory"),
            ("max GPU instances", m.max_gpu_instances),
            ("memory MiB", m.total_memory_mib),
            ("mode change needs reset", m.mode_change_requires_reset),
        ]
    )
    click.echo()
    profiles = m.profiles if show_all else m.base_profiles()
    emit_table(
        ["PROFILE", "ID", "NVML_CONSTANT", "C", "M", "MEMORY_MIB", "MAX", "PLACEMENTS", "UNCONFIRMED"],
        [
            (
                p.name,
                p.profile_id,
                p.nvml_profile_constant,
                p.compute_slices,
                p.memory_slices,
                p.memory_mib,
                p.max_instances,
                " ".join(f"{s}/{z}" for s, z in p.placements),
                list(p.unconfirmed),
            )
            for p in profiles
        ],
    )
    hidden = len(m.profiles) - len(profiles)
    if hidden:
        click.echo(f"({hidden} variant profile(s) not shown; use --all)")
