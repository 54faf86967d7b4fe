"""The node's use cases: prepare and release a job's instances, reconcile, report (``agent``), over the
driver, journal and Slurm seams; ``config`` reads the node's configuration file. Imports no CLI and no
concrete driver: the hooks and the CLI wire those in.

The configuration file's two names live here, where ``slurm-gpu --help`` can read them without loading
``config``.
"""

DEFAULT_CONFIG_PATH = "/etc/slurm-gpu/config.yaml"
CONFIG_ENV = "SLURM_GPU_CONFIG"  # names another configuration file
