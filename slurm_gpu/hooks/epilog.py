"""Slurm Epilog (root): destroy the job's MIG instances. Idempotent. See docs/hooks.md.

First removes the job's Docker containers that outlived it (``containers.docker``; nothing to do without
a Docker daemon). Exit status: 0 when the job's instances are gone or left for reconcile (still in use
after the wait); non-zero only when the journal or driver cannot be used at all (the node then drains
for an admin).
"""

from __future__ import annotations

import sys
from typing import Optional


def main(config_path: Optional[str] = None) -> int:
    from slurm_gpu.hooks.runtime import run_job_hook

    _docker_leftovers(config_path)  # first: a container left running would keep its instance busy
    return run_job_hook("epilog", "release", config_path)


def _docker_leftovers(config_path: Optional[str]) -> None:
    """Docker containers of the job still running outside it (docs/containers.md): removed, and said."""
    import os

    from slurm_gpu.core.errors import SlurmGpuError

    try:
        from slurm_gpu.node.config import load_config
        from slurm_gpu.node.containers import remove_docker_leftovers

        gone = remove_docker_leftovers(load_config(config_path), os.environ.get("SLURM_JOB_ID", ""))
    except SlurmGpuError as exc:
        sys.stderr.write(f"slurm-gpu epilog: docker leftovers not checked: {exc}\n")
        return
    if gone:
        sys.stderr.write(f"slurm-gpu epilog: removed docker containers of the job: {' '.join(gone)}\n")


if __name__ == "__main__":
    sys.exit(main())
