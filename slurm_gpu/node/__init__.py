"""The node's use cases: prepare and release a job's instances, reconcile, report (``agent``), over the
driver, journal and Slurm seams; ``config`` reads the node's configuration file. Imports no CLI and no
concrete driver: the hooks and the CLI wire those in.
"""
