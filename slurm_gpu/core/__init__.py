"""The pure core: the GPU catalog, request grammar, MIG geometry, the planner, fit features and the
reconcile diff. Standard library and ``core.errors`` only: no I/O beyond reading the packaged catalog, no
subprocess, click, jinja2, yaml or pynvml (a lint contract enforces it), so every rule here is testable
by value and the same code decides on a node, in the generator and in the simulator.
"""
