"""``slurm-gpu-hook prolog|epilog``: the entry point Slurm's root hooks run, without click.

Slurm starts a Prolog and an Epilog process for every job, so this entry imports only ``sys``, ``os``
and the one hook it runs (``python3 -m slurm_gpu.hooks.entry prolog`` is the same). ``slurm-gpu prolog``
and ``slurm-gpu epilog`` (the CLI, for people) run the same code. Exit codes are the CLI's: the hook's
own (0, or 1 for a broken node), 2 for a bad command line, 1 for an unexpected error (one line on
stderr; ``SLURM_GPU_DEBUG=1`` shows the traceback instead), 130 when interrupted.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing is not imported just for annotations
if TYPE_CHECKING:
    from typing import List, Optional, Sequence, Tuple

__all__ = ["main", "HOOKS"]

HOOKS = ("prolog", "epilog")
USAGE = "usage: slurm-gpu-hook [--config PATH] prolog|epilog"
DEBUG_ENV = "SLURM_GPU_DEBUG"  # the CLI's variable (slurm_gpu.cli.main.DEBUG_ENV)


class _Usage(Exception):
    pass


def _parse(args: Sequence[str]) -> Tuple[Optional[str], Optional[str]]:
    """``(hook, config_path)`` from ``[--config PATH] HOOK``; ``(None, None)`` for ``--help``."""
    hook: Optional[str] = None
    config: Optional[str] = None
    rest: List[str] = list(args)
    while rest:
        arg = rest.pop(0)
        if arg in ("-h", "--help"):
            return None, None
        if arg == "--config":
            if not rest:
                raise _Usage("--config needs a PATH")
            config = rest.pop(0)
        elif arg.startswith("--config="):
            config = arg[len("--config="):]
        elif arg in HOOKS and hook is None:
            hook = arg
        else:
            raise _Usage(f"unexpected argument {arg!r}")
    if hook is None:
        raise _Usage("name the hook: prolog or epilog")
    return hook, config or None


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the hook named in ``argv`` (default ``sys.argv[1:]``) and return its exit code."""
    try:
        hook, config = _parse(sys.argv[1:] if argv is None else argv)
    except _Usage as exc:
        from slurm_gpu.core.errors import EXIT_USAGE

        sys.stderr.write(f"{USAGE}\nslurm-gpu-hook: error: {exc}\n")
        return EXIT_USAGE
    if hook is None:
        sys.stdout.write(f"{USAGE}\n\nRun by Slurm as root: prolog creates the job's MIG instances, epilog "
                         "destroys them (docs/hooks.md).\n")
        return 0
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
        from slurm_gpu.core.errors import EXIT_ERROR, SlurmGpuError

        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        if isinstance(exc, SlurmGpuError):
            sys.stderr.write(f"slurm-gpu: error: {exc}\n")
            return exc.exit_code
        sys.stderr.write(f"slurm-gpu: error: internal error: {type(exc).__name__}: {exc} "
                         f"(set {DEBUG_ENV}=1 for a traceback)\n")
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
