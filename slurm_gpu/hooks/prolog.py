"""Slurm Prolog (root, PrologFlags=Alloc): create the job's MIG instances. See docs/hooks.md.

Exit status: 0 whenever the job was handled, including refusals and requeues of a job that raced onto
a full node (a non-zero Prolog drains the node). Non-zero only for a broken node (driver, journal or
controller failing), where draining is what an admin needs to see.
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
        out = agent.prepare(ctx)
    except SlurmGpuError as exc:
        log_event(agent, "prolog", {"error": str(exc), "type": type(exc).__name__})
        sys.stderr.write(f"slurm-gpu prolog: {exc}\n")
        return 1
    finally:
        if agent is not None:
            agent.driver.close()
    log_event(agent, "prolog", {**out.to_dict(), "seconds": round(time.monotonic() - t0, 4)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
