"""Trace replay of MIG admission and placement policies (``slurm-gpu simulate``).

Import the submodules directly (``slurm_gpu.simulate.engine``); nothing is loaded here.
"""
