"""Slurm adapter: read a job's request, state and allocation from the controller, publish node
features, requeue a job. ``parse`` is pure (every form of 22.05 to 26.05); ``client`` runs the Slurm CLI.

Submodules are imported by name (``from slurm_gpu.slurm.client import SlurmCli``): nothing here runs or
imports anything heavy, since hooks import this package for every job.
"""
