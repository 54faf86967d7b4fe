"""A local Slurm cluster for tests and demos: ``slurm-gpu cluster up|down|status`` (see docs/cluster.md)."""

from __future__ import annotations

__all__ = ["ClusterSpec", "up", "down", "status", "load_spec", "node_names"]


def __getattr__(name: str):
    # Lazy: importing the package must not pull subprocess machinery into hooks.
    if name in __all__:
        from . import local

        return getattr(local, name)
    raise AttributeError(name)
