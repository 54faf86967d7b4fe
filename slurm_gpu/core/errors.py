"""Exception types of slurm-gpu and the one table of exit codes.

Library code raises these and never exits; the CLI (``slurm_gpu.cli``) turns them into exit codes in one
place. Each exception carries the input that was wrong so a message can name it.
"""

from __future__ import annotations

TYPE_CHECKING = False  # the TaskProlog imports this module: typing would cost it milliseconds
if TYPE_CHECKING:
    from typing import Optional

# Exit codes of every `slurm-gpu` command (documented in README.md, "Exit codes").
EXIT_OK = 0
EXIT_ERROR = 1  # unexpected internal error
EXIT_USAGE = 2  # bad command line (click's own code)
EXIT_BAD_INPUT = 3  # a request, profile, model, layout or file that is wrong
EXIT_NO_FIT = 4  # a valid request that does not fit the node's GPUs now
EXIT_DRIVER = 5  # the GPU driver (NVML, real or simulated) refused or failed
EXIT_STATE = 6  # the journal or the simulated driver's state file is corrupt, foreign or locked
EXIT_CONFIG = 7  # the configuration file is missing, malformed or has unknown keys
EXIT_SLURM = 8  # the Slurm controller could not be asked, or answered something unexpected
# Set (not "" or "0"): an unexpected error shows its traceback instead of one line (CLI and hooks).
DEBUG_ENV = "SLURM_GPU_DEBUG"


class SlurmGpuError(Exception):
    """Base of every error slurm-gpu raises on purpose."""

    exit_code = EXIT_ERROR


class BadInputError(SlurmGpuError):
    """Input that is wrong; ``part`` is the offending piece of it."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, part: Optional[str] = None):
        super().__init__(message)
        self.part = part


class CatalogError(BadInputError):
    """An unknown GPU model or MIG profile, or a catalog file that is not valid."""


class UnknownModelError(CatalogError):
    pass


class UnknownProfileError(CatalogError):
    pass


class RequestError(BadInputError):
    """A gres request string that cannot be parsed or resolved."""


class NoFitError(SlurmGpuError):
    """A valid request that cannot be placed on the node's GPUs as they are now."""

    exit_code = EXIT_NO_FIT


class DriverError(SlurmGpuError):
    """The GPU driver failed; ``nvml_code`` is the NVML return code where there is one."""

    exit_code = EXIT_DRIVER

    def __init__(self, message: str, nvml_code: Optional[int] = None):
        super().__init__(message)
        self.nvml_code = nvml_code


class StateError(SlurmGpuError):
    """A state file (journal, simulated driver) that is corrupt, foreign, or whose lock timed out."""

    exit_code = EXIT_STATE


class LockTimeout(StateError):
    """A lock not obtained in time; ``path`` is the lock file, ``holder_pid`` its holder where known."""

    def __init__(self, message: str, path: Optional[str] = None, holder_pid: Optional[int] = None):
        super().__init__(message)
        self.path = path
        self.holder_pid = holder_pid


class ConfigError(SlurmGpuError):
    exit_code = EXIT_CONFIG


class SlurmError(SlurmGpuError):
    exit_code = EXIT_SLURM
