"""``slurm-gpu-hook prolog|epilog|serve``: the entry point Slurm's root hooks run, without click.

Slurm starts a Prolog and an Epilog process for every job, so this entry imports only ``sys``, ``os``
and the one hook it runs (``python3 -m slurm_gpu.hooks.entry prolog`` is the same). When a hook server
(``slurm-gpu-hook serve``, ``slurm_gpu.hooks.server``) listens on ``$SLURM_GPU_HOOK_SOCKET`` (default
``/run/slurm-gpu/hooks.sock``; empty or ``none``: never ask one), the hook runs in a child forked from it,
already imported, with this process's environment and standard streams; when none answers, it runs here.
``slurm-gpu prolog`` and ``slurm-gpu epilog`` (the CLI, for people) run the same code in-process. Exit
codes: the hook's (``slurm_gpu.hooks.dispatch``), 2 for a bad command line.
"""

import posix
import sys

from slurm_gpu.hooks.dispatch import HOOKS

# Annotations quoted, typing not imported: a served hook's process loads this (see hooks.client).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, Optional, Sequence, Tuple

__all__ = ["main", "launch"]

_served = False  # main() had the hook run by the server

USAGE = ("usage: slurm-gpu-hook [--config PATH] prolog|epilog\n"
         "       slurm-gpu-hook serve [--socket PATH]")
HELP = """
Run by Slurm as root: prolog creates the job's MIG instances, epilog destroys them (docs/hooks.md).
serve: the resident hook server (systemd unit slurm-gpu-hooks.service) the hooks start from, imported.

Examples:
  SLURM_JOB_ID=42 SLURMD_NODENAME=node1 slurm-gpu-hook prolog
  slurm-gpu-hook serve --socket /run/slurm-gpu/hooks.sock
"""


class _Usage(Exception):
    pass


def _parse(args: "Sequence[str]") -> "Tuple[Optional[str], Optional[str]]":
    """``(command, value)``: ``(hook, config_path)`` from ``[--config PATH] HOOK``, ``("serve",
    socket_path)`` from ``serve [--socket PATH]``; ``(None, None)`` for ``--help``."""
    command: Optional[str] = None
    options: Dict[str, Optional[str]] = {"--config": None, "--socket": None}
    rest: List[str] = list(args)
    while rest:
        arg = rest.pop(0)
        name, eq, value = arg.partition("=")
        if arg in ("-h", "--help"):
            return None, None
        if name in options:
            if not eq:
                if not rest:
                    raise _Usage(f"{name} needs a PATH")
                value = rest.pop(0)
            options[name] = value
        elif arg in (*HOOKS, "serve") and command is None:
            command = arg
        else:
            raise _Usage(f"unexpected argument {arg!r}")
    if command is None:
        raise _Usage("name the hook: prolog or epilog (or serve)")
    wrong = "--config" if command == "serve" else "--socket"
    if options[wrong] is not None:
        raise _Usage(f"{wrong} does not go with {command}")
    return command, options["--socket" if command == "serve" else "--config"] or None


def _site() -> None:
    """Load the site module if the interpreter was started without it (``-S``, as
    ``install.layout.HOOK_LAUNCHER`` does: asking the server needs nothing from site-packages), before
    anything that imports the package's dependencies."""
    if sys.flags.no_site:
        import site

        site.main()


def main(argv: "Optional[Sequence[str]]" = None) -> int:
    """Run what ``argv`` (default ``sys.argv[1:]``) names and return its exit code."""
    try:
        command, value = _parse(sys.argv[1:] if argv is None else argv)
    except _Usage as exc:
        from slurm_gpu.core.errors import EXIT_USAGE

        sys.stderr.write(f"{USAGE}\nslurm-gpu-hook: error: {exc}\n")
        return EXIT_USAGE
    if command is None:
        sys.stdout.write(f"{USAGE}\n{HELP}")
        return 0
    if command == "serve":
        _site()
        from slurm_gpu.core.errors import SlurmGpuError
        from slurm_gpu.hooks.client import DEFAULT_SOCKET
        from slurm_gpu.hooks.server import serve

        try:
            return serve(value or DEFAULT_SOCKET)
        except (SlurmGpuError, OSError) as exc:
            sys.stderr.write(f"slurm-gpu-hook serve: error: {exc}\n")
            return getattr(exc, "exit_code", 1)
    from slurm_gpu.hooks.client import via_server

    global _served
    code = via_server(command, value)
    if code is not None:
        _served = True
        return code
    _site()
    from slurm_gpu.hooks.dispatch import run_hook

    return run_hook(command, value)


def launch() -> None:
    """``main()``, then exit with its code (``install.layout.HOOK_LAUNCHER``). A served hook's process has
    nothing to tear down but its streams: it skips the interpreter's finalisation (milliseconds of
    every job's start)."""
    code = main()
    if _served:
        sys.stdout.flush()
        sys.stderr.flush()
        posix._exit(code)  # os._exit: the served path never imports os
    sys.exit(code)


if __name__ == "__main__":
    launch()
