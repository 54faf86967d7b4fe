"""How long creating and destroying a job's MIG instances takes, per profile (the instance-time model).

A dynamic policy's prolog creates the job's instances before the job runs and its epilog destroys them
after it ends; the slices are held meanwhile. A node's instances are made one after the other, nodes in
parallel, so a job of N instances per node waits ``N x create`` between its allocation and its run, and
its slices stay held ``N x destroy`` after it. ``static`` pays nothing: its instances exist.

Defaults: ``DEFAULT_CREATE_S`` for an instance of one compute slice rising linearly to
``DEFAULT_CREATE_FULL_S`` for the whole GPU (H100: 0.25 s for 1g, 0.67 s for 3g, 1.5 s for 7g), the
same for destroying. NVIDIA publishes no timing for instance creation; 0.25-1.5 s by size is the range
the what-if issue (14) gives for a GPU instance plus its compute instance made through NVML. Treat the
defaults as estimates: time your own GPUs (each hook run logs its NVML create and destroy times in
``hooks.log``, docs/monitoring.md) and set them per profile (``--create-time``, ``--destroy-time``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

from slurm_gpu.core.catalog import GpuModel, Profile
from slurm_gpu.core.errors import BadInputError

__all__ = ["InstanceTimes", "parse_times", "DEFAULT_CREATE_S", "DEFAULT_CREATE_FULL_S"]

DEFAULT_CREATE_S = 0.25  # one compute slice (1g.*)
DEFAULT_CREATE_FULL_S = 1.5  # the whole GPU (7g.* on A100/H100)


def _linear(model: GpuModel, profile: Profile) -> float:
    full = max(model.compute_slices_total, 1)
    if full == 1:
        return DEFAULT_CREATE_S
    share = (profile.compute_slices - 1) / (full - 1)
    return round(DEFAULT_CREATE_S + share * (DEFAULT_CREATE_FULL_S - DEFAULT_CREATE_S), 3)


@dataclass(frozen=True)
class InstanceTimes:
    """Seconds per instance; ``create``/``destroy`` override the defaults by profile name, ``all_*`` for
    every profile (None: the default)."""

    create: Dict[str, float] = field(default_factory=dict)
    destroy: Dict[str, float] = field(default_factory=dict)
    all_create: Optional[float] = None
    all_destroy: Optional[float] = None

    def create_s(self, model: GpuModel, profile: Profile) -> float:
        if profile.name in self.create:
            return self.create[profile.name]
        return _linear(model, profile) if self.all_create is None else self.all_create

    def destroy_s(self, model: GpuModel, profile: Profile) -> float:
        if profile.name in self.destroy:
            return self.destroy[profile.name]
        return _linear(model, profile) if self.all_destroy is None else self.all_destroy

    def to_dict(self, model: GpuModel) -> Dict[str, Dict[str, float]]:
        """The figures in force for ``model``'s base profiles (for reports)."""
        return {
            p.name: {"create_s": self.create_s(model, p), "destroy_s": self.destroy_s(model, p)}
            for p in model.base_profiles()
        }


def parse_times(text: Optional[str]) -> Tuple[Dict[str, float], Optional[float]]:
    """``0.5`` (every profile) or ``1g.10gb=0.3,7g.80gb=1.4`` (those profiles; the others keep the
    default) -> (per profile, for all). None or '' -> the defaults."""
    per: Dict[str, float] = {}
    if not text or not text.strip():
        return per, None
    try:
        if "=" not in text:
            every = float(text)
            if every < 0:
                raise ValueError(text)
            return per, every
        for item in text.split(","):
            name, _, value = item.partition("=")
            seconds = float(value)
            if seconds < 0 or not name.strip():
                raise ValueError(item)
            per[name.strip().lower()] = seconds
    except ValueError:
        raise BadInputError(
            f"instance time {text!r}: seconds (0.5) or PROFILE=SECONDS[,PROFILE=SECONDS]", part=text
        ) from None
    return per, None
