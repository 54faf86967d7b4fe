"""Fault injection for the simulated driver.

``SLURM_GPU_SIM_FAULTS`` holds rules separated by ``;``::

    <nvml function>[@N]=<NVML error>      fail the Nth call (1-based) in this process; without @N every call
    <nvml function>[@N]=delay:<seconds>   add latency, then run the call normally

The error is a name with or without the ``NVML_ERROR_`` prefix (``INSUFFICIENT_RESOURCES``, ``IN_USE``)
or a number. Two function names stand for more than one call: ``*`` is every NVML call (a loaded driver's
latency per call) and ``walk`` is one walk of a GPU's MIG device handles (``NvmlDriver`` starts each with
``nvmlDeviceGetMaxMigDeviceCount``; the slow listing seen under load). Example::

    SLURM_GPU_SIM_FAULTS="nvmlGpuInstanceCreateComputeInstance@2=INSUFFICIENT_RESOURCES;nvmlDeviceCreateGpuInstanceWithPlacement=delay:0.2"
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from slurm_gpu.core.errors import BadInputError

__all__ = ["FaultRule", "FaultPlan", "parse_faults", "plan_from_env", "ENV"]

ENV = "SLURM_GPU_SIM_FAULTS"
EVERY_CALL = "*"
# A walk of MIG handles begins with this call (devices/nvml.py), so a delay on it is one per walk.
WALK_ALIAS = "walk"
WALK_FUNCTION = "nvmlDeviceGetMaxMigDeviceCount"


@dataclass(frozen=True)
class FaultRule:
    function: str
    nth: Optional[int]  # None: every call
    error: Optional[int]  # NVML return code to raise
    delay_s: float = 0.0


def _error_code(text: str) -> int:
    import pynvml

    text = text.strip()
    if text.isdigit():
        return int(text)
    name = text.upper()
    if not name.startswith("NVML_ERROR_"):
        name = "NVML_ERROR_" + name
    code = getattr(pynvml, name, None)
    if not isinstance(code, int):
        raise BadInputError(f"{ENV}: unknown NVML error {text!r}", part=text)
    return code


def parse_faults(spec: str) -> Tuple[FaultRule, ...]:
    rules: List[FaultRule] = []
    for part in spec.split(";"):
        part = part.strip()
        if not part:
            continue
        target, sep, action = part.partition("=")
        if not sep or not target.strip() or not action.strip():
            raise BadInputError(f"{ENV}: expected '<function>[@N]=<error|delay:s>', got {part!r}", part=part)
        function, _, nth_text = target.strip().partition("@")
        function = WALK_FUNCTION if function.strip() == WALK_ALIAS else function.strip()
        nth: Optional[int] = None
        if nth_text:
            if not nth_text.isdigit() or int(nth_text) < 1:
                raise BadInputError(f"{ENV}: call number must be >= 1 in {part!r}", part=part)
            nth = int(nth_text)
        action = action.strip()
        if action.lower().startswith("delay:"):
            try:
                delay = float(action[len("delay:") :])
            except ValueError:
                raise BadInputError(f"{ENV}: bad delay in {part!r}", part=part) from None
            if delay < 0:
                raise BadInputError(f"{ENV}: negative delay in {part!r}", part=part)
            rules.append(FaultRule(function, nth, None, delay))
        else:
            rules.append(FaultRule(function, nth, _error_code(action)))
    return tuple(rules)


class FaultPlan:
    """Rules plus per-function call counters (counted in this process, from the plan's creation)."""

    def __init__(self, rules: Tuple[FaultRule, ...] = ()):
        self.rules = rules
        self._functions = {r.function for r in rules}
        self._calls: Dict[str, int] = {}
        self._mutex = threading.Lock()

    def before_call(self, function: str) -> Optional[int]:
        """Count the call, sleep for delay rules; return the NVML error to raise, if any."""
        if function not in self._functions and EVERY_CALL not in self._functions:
            return None
        with self._mutex:
            n = self._calls.get(function, 0) + 1
            self._calls[function] = n
            every = self._calls.get(EVERY_CALL, 0) + 1
            self._calls[EVERY_CALL] = every
        error: Optional[int] = None
        for rule in self.rules:
            count = every if rule.function == EVERY_CALL else n
            if rule.function not in (function, EVERY_CALL) or (rule.nth is not None and rule.nth != count):
                continue
            if rule.delay_s:
                time.sleep(rule.delay_s)
            if rule.error is not None and error is None:
                error = rule.error
        return error


_env_plans: Dict[str, FaultPlan] = {}


def plan_from_env() -> FaultPlan:
    """The process-wide plan of ``SLURM_GPU_SIM_FAULTS`` (a new plan, fresh counters, when it changes)."""
    spec = os.environ.get(ENV, "")
    plan = _env_plans.get(spec)
    if plan is None:
        _env_plans.clear()
        plan = _env_plans[spec] = FaultPlan(parse_faults(spec))
    return plan
