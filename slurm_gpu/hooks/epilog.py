"""Slurm Epilog (root): destroy the job's MIG instances. Idempotent. See docs/hooks.md.

Exit status: 0 when the job's instances are gone or left for reconcile (still in use after the wait);
non-zero only when the journal or driver cannot be used at all (the node then drains for an admin).
"""

from __future__ import annotations

import sys
from typing import Optional


def main(config_path: Optional[str] = None) -> int:
    from slurm_gpu.hooks.runtime import run_job_hook

    return run_job_hook("epilog", "release", config_path)


if __name__ == "__main__":
    sys.exit(main())
