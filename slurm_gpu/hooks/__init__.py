"""Entry points that Slurm runs for every job (Prolog, Epilog, TaskProlog).

``task_prolog`` imports nothing of the package but the task file's format and runs as a plain script;
``prolog``/``epilog`` build the node agent from the configuration and never let a packing problem become a
non-zero exit. ``entry`` (the ``slurm-gpu-hook`` command) starts them without the CLI's imports.
"""
