"""``python -m slurm_gpu``: the same as the ``slurm-gpu`` command."""

from slurm_gpu.cli.main import main

main()
