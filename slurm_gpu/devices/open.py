"""Open the GPU driver a node is configured for: NVML, or the simulated NVML over a state file."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from slurm_gpu.core.errors import BadInputError
from slurm_gpu.devices.api import DRIVER_KINDS

if TYPE_CHECKING:  # pragma: no cover
    from slurm_gpu.devices.calllog import NvmlCallLog
    from slurm_gpu.devices.nvml import NvmlDriver

__all__ = ["mig_minors_file", "open_driver"]


def mig_minors_file(kind: str, sim_state: Optional[str] = None) -> str:
    """The mig-minors file a driver of ``kind`` reads: the driver's own, or the simulated node's
    ``<sandbox>/mig-minors`` ("" when its state has no sandbox: minors unknown)."""
    from slurm_gpu.devices.migminors import DEFAULT_MIG_MINORS

    if kind.strip().lower() != "sim":
        return DEFAULT_MIG_MINORS
    from slurm_gpu.devices import simstate

    sandbox = simstate.read_state(sim_state).get("sandbox") if sim_state else None  # read, not copied
    return f"{sandbox}/mig-minors" if sandbox else ""


def open_driver(
    kind: Any = "nvml", sim_state: Optional[str] = None, mig_minors_path: Optional[str] = None,
    sim_faults: Optional[str] = None, call_log: Optional[NvmlCallLog] = None,
) -> NvmlDriver:
    """``NvmlDriver`` over the real pynvml (``kind='nvml'``) or over ``SimNvml(sim_state)`` (``kind='sim'``).

    ``call_log`` (``devices.calllog.NvmlCallLog``) records the create/destroy times and NVML errors.
    ``kind`` may also be a ``Config`` (its ``driver.kind`` / ``driver.sim_state``) or that section. For the
    simulator, capability minors come from ``<sandbox>/mig-minors`` when its state has a sandbox.
    """
    if not isinstance(kind, str):  # a Config (``config.driver.kind``) or its driver section
        section = getattr(kind, "driver", kind)
        if isinstance(section, str):
            section = kind
            kind = getattr(kind, "driver", "nvml")
        else:
            kind = getattr(section, "kind", "nvml")
        sim_state = sim_state or getattr(section, "sim_state", None)
        sim_faults = sim_faults or getattr(section, "sim_faults", None)
    kind = kind.strip().lower()
    # Imported here, not at the top: hooks import this module, and each loads only the driver it asks for.
    from slurm_gpu.devices.nvml import NvmlDriver

    if kind == "nvml":
        module = None
        if call_log is not None:
            import pynvml

            module = call_log.wrap(pynvml)
        return NvmlDriver(module, mig_minors_path=mig_minors_path or mig_minors_file(kind))
    if kind == "sim":
        if not sim_state:
            raise BadInputError("the simulated driver needs a state file (sim_state)", part=kind)
        from slurm_gpu.devices.simnvml import SimNvml

        if mig_minors_path is None:
            mig_minors_path = mig_minors_file(kind, sim_state)
        sim: Any = SimNvml(sim_state, faults=sim_faults)
        module = call_log.wrap(sim) if call_log is not None else sim
        return NvmlDriver(module, mig_minors_path=mig_minors_path)
    raise BadInputError(f"unknown driver kind {kind!r} (known: {', '.join(DRIVER_KINDS)})", part=kind)
