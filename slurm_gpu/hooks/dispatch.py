"""Run one root hook in this process, with the CLI's exit codes: the hook's own (0, or 1 for a broken
node), 1 for an unexpected error (one line on stderr; ``SLURM_GPU_DEBUG=1`` shows the traceback instead),
130 when interrupted. ``slurm-gpu-hook`` and the hook server's children both end here."""

import sys

# Annotations quoted, typing not imported: a served hook's process loads this (see hooks.client).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

__all__ = ["HOOKS", "run_hook"]

HOOKS = ("prolog", "epilog")


def run_hook(hook: str, config: "Optional[str]" = None) -> int:
    """Run ``hook`` (one of HOOKS) with the configuration at ``config`` (None: the default search)."""
    try:
        if hook == "prolog":
            from slurm_gpu.hooks.prolog import main as run
        else:
            from slurm_gpu.hooks.epilog import main as run
        return run(config)
    except KeyboardInterrupt:
        sys.stderr.write("slurm-gpu: error: interrupted\n")
        return 130
    except Exception as exc:
        # As the CLI maps errors (slurm_gpu.cli.main): one line in slurmd's log, not a traceback.
        import os

        from slurm_gpu.core.errors import DEBUG_ENV, EXIT_ERROR, SlurmGpuError

        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        if isinstance(exc, SlurmGpuError):
            sys.stderr.write(f"slurm-gpu: error: {exc}\n")
            return exc.exit_code
        sys.stderr.write(f"slurm-gpu: error: internal error: {type(exc).__name__}: {exc} "
                         f"(set {DEBUG_ENV}=1 for a traceback)\n")
        return EXIT_ERROR
