"""What a node tells Slurm about the MIG instances it can still host: the one replaceable piece of
admission on the node side. ``FeaturePublisher`` sets the fit features ``mig.<profile>.<k>``; any object
with ``publish(node, state)`` may stand in for it (``NodeAgent(publisher=...)``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Protocol, Sequence, Tuple

from slurm_gpu.core.features import active_features, all_features, is_fit_feature
from slurm_gpu.core.planner import capacity

if TYPE_CHECKING:
    from slurm_gpu.core.geometry import NodeState
    from slurm_gpu.slurm.api import SlurmAdapter

__all__ = ["Publisher", "FeaturePublisher"]


class Publisher(Protocol):
    def publish(self, node: str, state: NodeState) -> Tuple[str, ...]:
        """Tell Slurm what ``state`` can still host (under the node lock); returns what was published."""
        ...


class FeaturePublisher:
    """Sets the node's fit features in Slurm, keeping the admin's other features."""

    def __init__(self, slurm: SlurmAdapter, max_count_per_node: int, enabled: bool = True):
        self.slurm = slurm
        self.max_count = max_count_per_node
        self.enabled = enabled
        self.updates = 0  # times this object changed Slurm's features (the hooks log it, the exporter counts)

    def fit_features(self, state: NodeState) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
        """(every fit feature of the node's models, the ones true now)."""
        models = [g.model for g in state.gpus]  # one per GPU: counts add up over the node
        return all_features(models, self.max_count), active_features(capacity(state), self.max_count)

    def publish(self, node: str, state: NodeState) -> Tuple[str, ...]:
        fit_all, fit_active = self.fit_features(state)
        if not self.enabled:
            return fit_active
        avail, active = self.slurm.node_features(node)
        new_avail = _merged(avail, fit_all)
        new_active = _merged(active, fit_active)
        if new_avail != sorted(set(avail)) or new_active != sorted(set(active)):
            self.slurm.set_features(node, new_avail, new_active)
            self.updates += 1
        return fit_active


def _merged(current: Sequence[str], fit: Sequence[str]) -> List[str]:
    return sorted({f for f in current if not is_fit_feature(f)} | set(fit))
