"""Slurm Epilog (root): destroy the job's MIG instances. Idempotent. See docs/hooks.md.

Exit status: 0 when the job's instances are gone or left for reconcile (still in use after the wait);
non-zero only when the journal or driver cannot be used at all (the node then drains for an admin).
"""

from __future__ import annotations

import sys
from typing import Optional


def main(config_path: Optional[str] = None) -> int:
    import time

    from slurm_gpu.agent import JobContext
    from slurm_gpu.errors import SlurmGpuError

    from .runtime import build_agent, log_event

    t0 = time.monotonic()
    agent = None
    try:
        ctx = JobContext.from_env()
        agent = build_agent(config_path)
        out = agent.release(ctx)
    except SlurmGpuError as exc:
        log_event(agent, "epilog", {"error": str(exc), "type": type(exc).__name__})
        sys.stderr.write(f"slurm-gpu epilog: {exc}\n")
        return 1
    finally:
        if agent is not None:
            agent.driver.close()
    log_event(agent, "epilog", {**out.to_dict(), "seconds": round(time.monotonic() - t0, 4)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
