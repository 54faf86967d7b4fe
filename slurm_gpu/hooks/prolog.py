"""Slurm Prolog (root, PrologFlags=Alloc): create the job's MIG instances. See docs/hooks.md.

Exit status: 0 whenever the job was handled, including refusals and requeues of a job that raced onto
a full node (a non-zero Prolog drains the node). Non-zero only for a broken node (driver, journal or
controller failing), where draining is what an admin needs to see.
"""

from __future__ import annotations

import sys
from typing import Optional


def main(config_path: Optional[str] = None) -> int:
    from slurm_gpu.hooks.runtime import run_job_hook

    return run_job_hook("prolog", "prepare", config_path)


if __name__ == "__main__":
    sys.exit(main())
