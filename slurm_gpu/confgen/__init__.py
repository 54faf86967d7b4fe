"""Slurm configuration from an inventory: ``inventory`` (nodes.yaml), ``from_driver`` (an inventory read
from a node's driver) and ``render`` (gres.conf, slurm.conf lines, cgroup.conf, job_submit.lua from the
jinja2 templates).
"""
