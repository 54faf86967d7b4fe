"""``slurm-gpu container apptainer|podman|docker ...``: a task's container on its MIG instance.

Logic in ``node.containers`` and ``core.containers``; usage in docs/containers.md.
"""

from __future__ import annotations

from typing import Tuple

import click

from slurm_gpu.cli.main import get_context
from slurm_gpu.cli.output import json_option


@click.command("container",
               context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--dry-run", is_flag=True, default=False,
              help="Print the runtime command line (and the task's instance) instead of running it.")
@json_option
@click.argument("runtime", type=click.Choice(["apptainer", "podman", "docker"]))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def cmd(dry_run: bool, as_json: bool, runtime: str, args: Tuple[str, ...]) -> None:
    """Run a container on this task's MIG instance, inside a job step.

    RUNTIME's own command follows: `apptainer exec|run|shell [OPTIONS] IMAGE [-- CMD]`, or
    `podman|docker [GLOBAL OPTIONS] run [OPTIONS] IMAGE [-- CMD]`. The container gets exactly the task's
    instance (task SLURM_LOCALID gets instance SLURM_LOCALID mod n, as the TaskProlog assigns them): the
    parent GPU's /dev/nvidiaN, the instance's two capability files, /dev/nvidiactl and /dev/nvidia-uvm*,
    CUDA_VISIBLE_DEVICES and NVIDIA_VISIBLE_DEVICES set to its MIG UUID, the driver libraries, the job's
    user and working directory. Options that would widen that (--privileged, --device, --gpus, --nv ...)
    are refused. Signals reach the container (scancel stops it and nothing is left behind); the exit
    status is the container's. Outside a MIG job it refuses with exit 3; `containers.docker: false` in
    the node configuration forbids docker (exit 3).

    With --dry-run (and --json: {"schema": "slurm-gpu.container/v1", "runtime", "argv", "job_id",
    "local_id", "mig_uuid", "cdi_name", "devices"}) it prints what it would run.

    \b
    Example:
      # in a job submitted with --gres=gpu:1g.10gb
      srun slurm-gpu container apptainer exec pytorch.sif -- python train.py
      srun slurm-gpu container podman run --network none nvcr.io/nvidia/pytorch:24.08-py3 -- python train.py
      srun -n2 slurm-gpu container docker run ubuntu:24.04 -- nvidia-smi -L
      slurm-gpu container --dry-run --json podman run debian -- true
      # without click (a node's system python): python3 -m slurm_gpu.hooks.container podman run ...
    """
    from slurm_gpu.hooks.container import execute

    code = execute(runtime, args, dry_run, as_json, get_context().config_path)
    click.get_current_context().exit(code)
