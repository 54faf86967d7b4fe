"""The ``slurm-gpu`` command line (click). Subcommands are imported only when run; see ``main``."""
