"""The local test cluster (``slurm-gpu cluster``): a real slurmctld and several ``slurmd -N`` on one
machine over simulated GPUs, used by the demo and the integration tests. ``spec`` (what a cluster is),
``files`` (its configuration and GPU states), ``layouts`` (static MIG layouts), ``local`` (the daemons).
"""
