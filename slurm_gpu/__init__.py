"""slurm-gpu: dynamic NVIDIA MIG for Slurm.

Layers, innermost first (a lint contract in the test command enforces the direction):

- ``core``: pure rules: catalog, requests, geometry, planner, features, reconcile diff. No I/O.
- adapters: ``devices`` (NVML real and simulated, device cgroups), ``slurm`` (the CLI's JSON),
  ``state`` (journal, task files, file primitives).
- ``node``: the use cases on a node (prepare, release, reconcile) over those adapters.
- entry points and tools: ``hooks`` (Prolog/Epilog/TaskProlog), ``cli``, ``confgen``, ``simulate``,
  ``testbed`` (the local cluster).

Nothing is imported at package import time: hooks run for every job.
"""

__version__ = "0.1.0"
