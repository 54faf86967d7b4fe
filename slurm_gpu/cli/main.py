"""Entry point of ``slurm-gpu``: a click group whose subcommands are imported only when they run.

``slurm-gpu --help`` and every command import only click and the one module they need. Slurm's Prolog and
Epilog start through ``slurm-gpu-hook`` (``slurm_gpu.hooks.entry``), without click. Errors of
``slurm_gpu.core.errors`` become exit codes here, in one place (:func:`main`).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import sys
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import click

from slurm_gpu.core.errors import DEBUG_ENV
from slurm_gpu.node import CONFIG_ENV  # the package's constants only: --help loads no module of it

# name -> ("module:attr", one-line help shown by `slurm-gpu --help` without importing the module)
COMMANDS: Dict[str, Tuple[str, str]] = {
    "catalog": ("slurm_gpu.cli.catalog:cmd", "List GPU models, or one model's MIG profiles."),
    "plan": ("slurm_gpu.cli.plan:cmd", "Show where a request would be placed on a described node."),
    "inventory": ("slurm_gpu.cli.inventory:cmd", "List this node's GPUs and MIG instances."),
    "status": ("slurm_gpu.cli.status:cmd", "Show MIG instances with their owning jobs and problems."),
    "health": ("slurm_gpu.cli.health:cmd", "Node health check for Slurm's HealthCheckProgram."),
    "sim": ("slurm_gpu.cli.sim:cmd", "Create and inspect a simulated GPU driver state."),
    "simulate": ("slurm_gpu.cli.simulate:cmd", "Replay a job trace through admission and placement."),
    "trace": ("slurm_gpu.cli.trace:cmd", "Generate or inspect job traces for the simulator."),
    "whatif": ("slurm_gpu.cli.whatif:cmd", "Would dynamic MIG help? A report from a site's sacct history."),
    "config": ("slurm_gpu.cli.config:cmd", "Render gres.conf, slurm.conf, cgroup.conf, job_submit.lua."),
    "cluster": ("slurm_gpu.cli.cluster:cmd", "Start, stop or inspect a local Slurm cluster for testing."),
    "prolog": ("slurm_gpu.cli.hooks:prolog", "Slurm Prolog: create the job's MIG instances."),
    "epilog": ("slurm_gpu.cli.hooks:epilog", "Slurm Epilog: destroy the job's MIG instances."),
    "task-prolog": ("slurm_gpu.cli.hooks:task_prolog", "Slurm TaskProlog: export CUDA_VISIBLE_DEVICES."),
    "reconcile": ("slurm_gpu.cli.hooks:reconcile", "Repair drift between driver, journal and Slurm."),
    "publish": ("slurm_gpu.cli.hooks:publish", "Re-plan and publish what this node can host now."),
    "exporter": ("slurm_gpu.cli.exporter:cmd", "Export the node's MIG metrics for Prometheus."),
    "node": ("slurm_gpu.cli.node:cmd", "Install the hooks, configuration and units on this node."),
    "container": ("slurm_gpu.cli.container:cmd", "Run a container on this task's MIG instance (in a job)."),
}


class LazyGroup(click.Group):
    """A group that maps command names to ``"module:attr"`` and imports a module only to run it."""

    def __init__(self, *args: Any, lazy_commands: Optional[Dict[str, Tuple[str, str]]] = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lazy_commands: Dict[str, Tuple[str, str]] = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> List[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy_commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> Optional[click.Command]:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        if cmd_name not in self.lazy_commands:
            return None
        return _load(cmd_name, self.lazy_commands[cmd_name][0])

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Help comes from the map so that listing commands imports none of them.
        rows = []
        for name in self.list_commands(ctx):
            if name in self.commands:
                rows.append((name, self.commands[name].get_short_help_str(limit=80)))
            else:
                rows.append((name, self.lazy_commands[name][1]))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class _Unavailable(click.Command):
    """Stands in for a command whose module cannot be imported; fails only when it is run."""

    def __init__(self, name: str, target: str, reason: str):
        super().__init__(
            name,
            help=f"(unavailable: {reason})",
            add_help_option=False,
            context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        )
        self.target = target
        self.reason = reason

    def invoke(self, ctx: click.Context) -> Any:
        raise click.ClickException(f"command {self.name!r} is not available: {self.reason} ({self.target})")


def _load(name: str, target: str) -> click.Command:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        # A command whose module (or a module it needs) is missing fails when run, not at --help.
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        return _Unavailable(name, target, f"cannot import {module_name}: {exc}")
    command = getattr(module, attr, None)
    if not isinstance(command, click.Command):
        return _Unavailable(name, target, f"{module_name} has no click command {attr!r}")
    return command


class SlurmGpuGroup(LazyGroup):
    """The top-level group: its ``main`` maps errors to exit codes (see :func:`_run_group`)."""

    def main(
        self,
        args: Optional[Sequence[str]] = None,
        prog_name: Optional[str] = None,
        complete_var: Optional[str] = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        code = _run_group(self, args, prog_name or "slurm-gpu", complete_var=complete_var, **extra)
        if standalone_mode:
            sys.exit(code)
        return code


class CliContext:
    """What the group hands its commands (``ctx.obj``); the configuration is loaded on first use."""

    def __init__(self, config_path: Optional[str] = None):
        self.config_path = config_path
        self._config: Any = None

    @property
    def config(self) -> Any:
        """The node's ``slurm_gpu.node.config.Config`` (``--config``, else env, else the default path)."""
        if self._config is None:
            from slurm_gpu.node.config import load_config

            self._config = load_config(self.config_path)
        return self._config

    def open_driver(self, kind: Optional[str] = None, sim_state: Optional[str] = None) -> Any:
        """The GPU driver: ``kind``/``sim_state`` when given (``--driver``/``--sim-state``), else the
        configured one (``slurm_gpu.devices.open.open_driver(config)``). The caller closes it."""
        from slurm_gpu.devices.open import open_driver

        if kind or sim_state:
            return open_driver(kind or "sim", sim_state=sim_state)
        configured = self.config.driver
        return open_driver(configured.kind, sim_state=configured.sim_state)

    @contextlib.contextmanager
    def driver(self, kind: Optional[str] = None, sim_state: Optional[str] = None) -> Iterator[Any]:
        """:meth:`open_driver` for a ``with`` block, closed when the block ends."""
        driver = self.open_driver(kind, sim_state)
        try:
            yield driver
        finally:
            driver.close()

    def state_dir(self, override: Optional[str] = None) -> str:
        """The journal's directory: ``override``, else the configuration's ``state_dir``."""
        if override:
            return override
        configured = getattr(self.config, "state_dir", None)
        if configured:
            return str(configured)
        from slurm_gpu.state.journal import DEFAULT_STATE_DIR

        return DEFAULT_STATE_DIR


SIM_STATE_ENV = "SLURM_GPU_SIM_STATE"


def sim_state_option(help: str, dest: str = "sim_state") -> Callable[[Any], Any]:
    """``--sim-state FILE`` (env ``SLURM_GPU_SIM_STATE``): the simulated driver's state file, one name for it
    in every command."""
    return click.option("--sim-state", dest, type=click.Path(dir_okay=False), envvar=SIM_STATE_ENV, help=help)


def renamed_option(old: str, new: str, dest: str, **attrs: Any) -> Callable[[Any], Any]:
    """Keep ``old``, the former spelling of option ``new`` (parameter ``dest``), as a hidden alias.

    Scripts written for the old name go on working, with a warning on stderr. The alias fills ``dest``
    unless ``new`` itself was given on the command line (an environment default yields to it).
    """
    legacy = f"{dest}_renamed"

    def decorate(func: Any) -> Any:
        @functools.wraps(func)
        def command(*args: Any, **kwargs: Any) -> Any:
            value = kwargs.pop(legacy, None)
            if value is not None:
                click.echo(f"slurm-gpu: warning: {old} is deprecated; use {new}", err=True)
                source = click.get_current_context().get_parameter_source(dest)
                if kwargs.get(dest) is not None and source is click.core.ParameterSource.COMMANDLINE:
                    raise click.UsageError(f"give {new} or {old}, not both")
                kwargs[dest] = value
            return func(*args, **kwargs)

        return click.option(old, legacy, hidden=True, **attrs)(command)

    return decorate


def driver_options(func: Any) -> Any:
    """``--driver`` and ``--sim-state``: use a driver other than the configured one (passed as
    ``driver_kind`` and ``sim_state``)."""
    from slurm_gpu.devices.api import DRIVER_KINDS  # here: `slurm-gpu --help` imports no adapter

    func = sim_state_option(
        f"State file of the simulated driver (implies --driver sim; env {SIM_STATE_ENV})."
    )(func)
    return click.option(
        "--driver",
        "driver_kind",
        type=click.Choice(DRIVER_KINDS),
        help="GPU driver to ask instead of the configured one.",
    )(func)


def get_context(ctx: Optional[click.Context] = None) -> CliContext:
    """The ``CliContext`` of the running command (one with defaults when a command runs on its own)."""
    ctx = ctx or click.get_current_context()
    root = ctx.find_root()
    if not isinstance(root.obj, CliContext):
        root.obj = CliContext(config_path=os.environ.get(CONFIG_ENV) or None)
    return root.obj


def _version() -> str:
    from slurm_gpu import __version__

    return __version__


@click.group(
    "slurm-gpu",
    cls=SlurmGpuGroup,
    lazy_commands=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar=CONFIG_ENV,
    default=None,
    help=f"Node configuration file (env {CONFIG_ENV}; default /etc/slurm-gpu/config.yaml).",
)
@click.version_option(_version(), "--version", prog_name="slurm-gpu", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, config_path: Optional[str]) -> None:
    """Dynamic NVIDIA MIG for Slurm.

    \b
    Example:
      slurm-gpu catalog H100-80GB
      slurm-gpu plan --gpus H100-80GB:8 1g.10gb:2
      slurm-gpu --config /etc/slurm-gpu/config.yaml inventory --json
    """
    ctx.obj = CliContext(config_path=config_path)


def _fail(message: str, code: int) -> int:
    click.echo(f"slurm-gpu: error: {message}", err=True)
    return code


def _run_group(group: click.Group, args: Optional[Sequence[str]], prog_name: str, **extra: Any) -> int:
    """Run ``group`` and return its exit code; every error becomes a code here and nowhere else."""
    from slurm_gpu.core.errors import EXIT_ERROR, SlurmGpuError

    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        rv = click.Group.main(
            group,
            args=list(args) if args is not None else None,
            prog_name=prog_name,
            standalone_mode=False,
            **extra,
        )
    except SlurmGpuError as exc:
        if debug:
            raise
        return _fail(str(exc), exc.exit_code)
    except click.exceptions.Abort:
        return _fail("aborted", EXIT_ERROR)
    except click.UsageError as exc:
        # Usage errors print click's own message (with the usage line) and keep click's code (2).
        exc.show()
        return exc.exit_code
    except click.ClickException as exc:
        return _fail(exc.format_message(), exc.exit_code)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except BrokenPipeError:
        return EXIT_ERROR
    except Exception as exc:
        if debug:
            raise
        return _fail(
            f"internal error: {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 for a traceback)", EXIT_ERROR
        )
    # In non-standalone mode click returns ctx.exit(n)'s code; a command's own return value is not a code.
    return rv if isinstance(rv, int) and not isinstance(rv, bool) else 0


def run(args: Optional[Sequence[str]] = None, prog_name: str = "slurm-gpu") -> int:
    """Run ``slurm-gpu ARGS`` in this process and return the exit code (no ``sys.exit``)."""
    return _run_group(cli, args, prog_name)


# The console script ``slurm-gpu = slurm_gpu.cli.main:main``: calling it runs the CLI and exits with
# the code; being the click group itself, it can also be handed to click's CliRunner.
main = cli


if __name__ == "__main__":
    main()
