"""What a hook asked of NVML, for monitoring: the time of each create/destroy call and the errors by call.

``NvmlDriver(NvmlCallLog().wrap(module))`` runs exactly as over ``module``; the log then holds
``timings`` (operation, seconds) for the four calls that change a GPU, and ``errors`` (call, NVML code).
Codes NVML uses as answers while enumerating (INVALID_ARGUMENT ends a profile walk, NOT_SUPPORTED skips a
profile, NOT_FOUND marks a sparse handle index) are not errors of a read call; every failure of a call
that changes the GPU is. The hooks log both with their JSON line (``hooks.runtime.log_event``), which the
exporter turns into histograms and counters.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Tuple

__all__ = ["NvmlCallLog", "TIMED_CALLS"]

# NVML call -> the operation name the exporter's histogram carries
TIMED_CALLS: Dict[str, str] = {
    "nvmlDeviceCreateGpuInstanceWithPlacement": "gpu_instance_create",
    "nvmlGpuInstanceCreateComputeInstance": "compute_instance_create",
    "nvmlComputeInstanceDestroy": "compute_instance_destroy",
    "nvmlGpuInstanceDestroy": "gpu_instance_destroy",
}
_READ_ANSWERS = frozenset({2, 3, 6})  # INVALID_ARGUMENT, NOT_SUPPORTED, NOT_FOUND


class NvmlCallLog:
    def __init__(self) -> None:
        self.timings: List[Tuple[str, float]] = []
        self.errors: List[Tuple[str, int]] = []

    def wrap(self, module: Any) -> Any:
        return _Recorded(module, self)

    def to_dict(self) -> Dict[str, Any]:
        return {"timings": [[op, round(s, 6)] for op, s in self.timings],
                "errors": [[call, code] for call, code in self.errors]}

    def __bool__(self) -> bool:
        return bool(self.timings or self.errors)


class _Recorded:
    def __init__(self, module: Any, log: NvmlCallLog):
        self._module = module
        self._log = log

    def __getattr__(self, name: str) -> Any:
        # Looked up once per name: what this returns is kept on the object (a hook makes a few hundred
        # NVML calls of a few dozen names; a new closure per call was a sizeable share of them).
        value = getattr(self._module, name)
        if not (name.startswith("nvml") and callable(value)):
            self.__dict__[name] = value
            return value
        log, error_type, op = self._log, self._module.NVMLError, TIMED_CALLS.get(name)

        def recorded(*args: Any, **kwargs: Any) -> Any:
            t0 = time.monotonic()
            try:
                result = value(*args, **kwargs)
            except error_type as exc:
                code = getattr(exc, "value", None)
                code = code if isinstance(code, int) else -1
                if op is not None or code not in _READ_ANSWERS:
                    log.errors.append((name, code))
                raise
            if op is not None:
                log.timings.append((op, time.monotonic() - t0))
            return result

        self.__dict__[name] = recorded
        return recorded
