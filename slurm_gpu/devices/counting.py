"""An NVML module wrapper that counts calls by function name: how much of the driver a use case reads.

``NvmlDriver(CountingNvml(module))`` runs exactly as over ``module``; ``counts`` says how many times each
``nvml*`` function was called. Used by the NVML-call budget test and bench/bench_prepare.py.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

__all__ = ["CountingNvml"]


class CountingNvml:
    def __init__(self, module: Any):
        self._module = module
        self.counts: Counter = Counter()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._module, name)
        if not (name.startswith("nvml") and callable(value)):
            return value
        counts = self.counts

        def counted(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return value(*args, **kwargs)

        return counted

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def reset(self) -> None:
        self.counts.clear()

    def calls_of(self, *names: str) -> int:
        return sum(self.counts[n] for n in names)


