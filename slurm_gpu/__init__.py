"""slurm-gpu: dynamic NVIDIA MIG for Slurm.

The package is layered: a pure core (``catalog``, ``requests``, ``geometry``, ``planner``) with no I/O,
adapters at the edges (``devices`` for NVML real and simulated, ``journal``, ``slurm``) and thin entry
points (``cli``, the hook scripts). Nothing is imported at package import time: hooks run for every job.
"""

__version__ = "0.1.0"
