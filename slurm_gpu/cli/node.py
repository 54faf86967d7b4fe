"""``slurm-gpu node install``: put the hooks, configuration, state directory and systemd units on a node."""

from __future__ import annotations

from typing import Any, Dict, Optional

import click

from slurm_gpu.cli.output import emit_json, json_option


@click.group("node")
def cmd() -> None:
    """Install slurm-gpu on this node (root).

    \b
    Example:
      slurm-gpu node install --config ./config.yaml
      slurm-gpu node install --uninstall
    """


@cmd.command("install")
@click.option("--prefix", default="/usr/local", show_default=True, type=click.Path(file_okay=False),
              help="<prefix>/lib/slurm-gpu gets the TaskProlog's readable copy of the package, <prefix>/bin "
              "links to slurm-gpu and slurm-gpu-hook.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True),
              help="Configuration to install as /etc/slurm-gpu/config.yaml (checked first) [default: keep "
              "the installed one, else a default for the real GPUs].")
@click.option("--config-path", default="/etc/slurm-gpu/config.yaml", show_default=True,
              type=click.Path(dir_okay=False), help="Where the configuration goes (the hooks are told).")
@click.option("--state-dir", type=click.Path(file_okay=False),
              help="State directory (journal, task files) [default: the configuration's state_dir, "
              "/var/lib/slurm-gpu].")
@click.option("--slurm-etc", default="/etc/slurm", show_default=True, type=click.Path(file_okay=False),
              help="Slurm's configuration directory: gets prolog.d/, epilog.d/, task-prolog.d/.")
@click.option("--systemd-dir", default="/etc/systemd/system", show_default=True,
              type=click.Path(file_okay=False), help="Where the reconcile units and the slurmd drop-in go.")
@click.option("--uninstall", is_flag=True, help="Remove what an install with the same options put there "
              "(the configuration and a non-empty state directory stay).")
@click.option("--dry-run", is_flag=True, help="Say what would change; change nothing.")
@json_option
def install_cmd(prefix: str, config_file: Optional[str], config_path: str, state_dir: Optional[str],
                slurm_etc: str, systemd_dir: str, uninstall: bool, dry_run: bool, as_json: bool) -> None:
    """Install the hook scripts, configuration, state directory and systemd units; idempotent.

    A second run changes nothing and says so. Prints the slurm.conf lines that run the hooks; `slurm-gpu
    config all --prolog ... --epilog ... --task-prolog ...` writes them with the rest of the configuration.

    \b
    Example:
      python3 -m venv /opt/slurm-gpu && /opt/slurm-gpu/bin/pip install ./slurm-gpu
      /opt/slurm-gpu/bin/slurm-gpu node install --config config.yaml
      slurm-gpu node install --dry-run --json
      slurm-gpu node install --uninstall
    """
    import os

    from slurm_gpu.install import apply
    from slurm_gpu.install.layout import InstallOptions

    config_text = None
    if config_file:
        from slurm_gpu.node.config import load_config

        load_config(path=config_file, node="node")  # the loader's own checks (duplicate keys, modes)
        with open(config_file, encoding="utf-8") as fh:
            config_text = fh.read()
    opts = InstallOptions(prefix=os.path.abspath(prefix), slurm_etc=os.path.abspath(slurm_etc),
                          config_path=os.path.abspath(config_path), config_text=config_text,
                          state_dir=state_dir and os.path.abspath(state_dir),
                          systemd_dir=os.path.abspath(systemd_dir))
    result = apply.uninstall(opts, dry_run) if uninstall else apply.install(opts, dry_run)
    if as_json:
        emit_json("node.install", result)
        return
    _print(result, uninstall)


def _print(result: Dict[str, Any], uninstall: bool) -> None:
    verb = ("would remove" if result["dry_run"] else "removed") if uninstall else (
        "would install" if result["dry_run"] else "installed")
    if not result["changed"]:
        click.echo("nothing to change: " + ("nothing of slurm-gpu is installed here" if uninstall
                                            else "everything is installed as it should be"))
    for path in result["changed"]:
        click.echo(f"{verb}: {path}")
    for path in result["unchanged"]:
        click.echo(f"unchanged: {path}")
    for path in result.get("kept", []):
        click.echo(f"kept: {path} (remove it by hand when no longer wanted)")
    if uninstall:
        return
    click.echo("\nslurm.conf: these lines run the hooks (with the ones `slurm-gpu config slurm` writes):")
    for line in result["slurm_conf"]:
        click.echo(f"  {line}")
    if result["next"]:
        click.echo("\nthen:")
        for step in result["next"]:
            click.echo(f"  {step}")
