"""``slurm-gpu config gres|slurm|cgroup|job-submit|all``: render Slurm configuration for MIG nodes."""

from __future__ import annotations

import json
from typing import Optional

import click

KIND_CHOICES = ("gres", "slurm", "cgroup", "job-submit", "all")


@click.command("config")
@click.argument("kind", type=click.Choice(KIND_CHOICES))
@click.option("--inventory", "inventory_path", type=click.Path(dir_okay=False),
              help="YAML inventory of node groups (schema in docs/confgen.md).")
@click.option("--gpus", help="Inventory of one node group from a GPU list, e.g. H100-80GB:8.")
@click.option("--nodes", "node_names", default="localhost", show_default=True,
              help="Node names (Slurm hostlist) for --gpus.")
@click.option("--max-count", type=click.IntRange(1, 64), help="Largest k of mig.<profile>.<k> features.")
@click.option("--prolog", help="Prolog path to write into slurm.conf.")
@click.option("--epilog", help="Epilog path to write into slurm.conf.")
@click.option("--task-prolog", help="TaskProlog path to write into slurm.conf.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Write files into this folder.")
@click.option("--json", "as_json", is_flag=True, help="Print {file name: text} as JSON.")
def cmd(kind: str, inventory_path: Optional[str], gpus: Optional[str], node_names: str,
        max_count: Optional[int], prolog: Optional[str], epilog: Optional[str], task_prolog: Optional[str],
        out_dir: Optional[str], as_json: bool) -> None:
    """Render gres.conf, slurm.conf lines, cgroup.conf or job_submit.lua.

    \b
    Example:
      slurm-gpu config all --inventory cluster.yaml --out /etc/slurm/generated
      slurm-gpu config slurm --gpus H100-80GB:8 --nodes 'gpu[01-16]'
    """
    import dataclasses

    from slurm_gpu import confgen
    from slurm_gpu.errors import BadInputError
    from slurm_gpu.inventory_yaml import inventory_from_dict, load_inventory

    if bool(inventory_path) == bool(gpus):
        raise BadInputError("give exactly one of --inventory FILE or --gpus MODEL[:COUNT]")
    if inventory_path:
        inventory = load_inventory(inventory_path)
    else:
        inventory = inventory_from_dict({"version": 1, "nodes": [{"names": node_names, "gpus": gpus}]})
    if max_count:
        inventory = dataclasses.replace(inventory, max_count_per_node=max_count)
    options = confgen.Options(prolog=prolog, epilog=epilog, task_prolog=task_prolog)
    kinds = confgen.KINDS if kind == "all" else (kind,)
    files = {confgen.FILENAMES[k]: confgen.render(k, inventory, options) for k in kinds}
    if out_dir:
        paths = confgen.write_files(files, out_dir)
        if as_json:
            click.echo(json.dumps({"written": paths}, indent=2))
        else:
            for path in paths:
                click.echo(f"wrote {path}")
        return
    if as_json:
        click.echo(json.dumps(files, indent=2))
        return
    for name, text in files.items():
        if len(files) > 1:
            click.echo(f"# ===== {name}")
        click.echo(text, nl=False)
