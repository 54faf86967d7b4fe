"""What every call of the simulated NVML shares: the init check, fault injection and state access.

``SimCalls`` is the base of ``SimNvml``: its subclasses define the ``nvml*`` entry points, each
wrapped in ``nvml_call``. Reads use the shared cached state; privileged changes take the node lock.
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Any, Callable, Dict, Iterator, Optional, TypeVar

from slurm_gpu.devices import simstate
from slurm_gpu.devices.faults import FaultPlan, parse_faults, plan_from_env
from slurm_gpu.devices.simhandles import fail, nvml

__all__ = ["SimCalls", "nvml_call"]

F = TypeVar("F", bound=Callable[..., Any])
_INIT_CALLS = ("nvmlInit", "nvmlInitWithFlags")


def nvml_call(fn: F) -> F:
    """Fault injection and the init check around every simulated NVML entry point."""
    name = fn.__name__

    @functools.wraps(fn)
    def wrapper(self: SimCalls, *args: Any, **kwargs: Any) -> Any:
        plan = self._faults if self._faults is not None else plan_from_env()
        code = plan.before_call(name)
        if code is not None:
            fail(code)
        if self._init_count <= 0 and name not in _INIT_CALLS:
            fail(nvml().NVML_ERROR_UNINITIALIZED)
        return fn(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


class SimCalls:
    """State, faults and init count of one simulated NVML library handle.

    ``faults`` overrides ``SLURM_GPU_SIM_FAULTS`` for this instance (same syntax, own call counters).
    """

    def __init__(self, state_path: str, faults: Optional[str] = None):
        self.state_path = os.path.abspath(state_path)
        self._faults: Optional[FaultPlan] = FaultPlan(parse_faults(faults)) if faults is not None else None
        self._init_count = 0

    def _body(self) -> Dict[str, Any]:
        """The state for a read-only call (shared, never modified; changes go through ``_locked``)."""
        return simstate.read_state(self.state_path)

    def _require_root(self, body: Dict[str, Any]) -> None:
        if os.geteuid() != 0 and not body.get("allow_unprivileged"):
            fail(nvml().NVML_ERROR_NO_PERMISSION)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[Dict[str, Any]]:
        """The state under the node lock, for a privileged change (checked before taking the lock)."""
        self._require_root(self._body())
        with simstate.locked_state(self.state_path) as body:
            yield body

    @staticmethod
    def _require_mig(gpu: Dict[str, Any]) -> None:
        if not gpu["mig_current"]:
            fail(nvml().NVML_ERROR_NOT_SUPPORTED)
