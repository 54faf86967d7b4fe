"""Names of the node features that tell Slurm which MIG profiles still fit on a node.

``mig.<tok>.<k>`` means "at least k more instances of profile <tok> fit on this node now". Slurm feature
names cannot hold ``+``, so variant suffixes become underscores. Pure functions, no I/O.

>>> feature("1g.10gb", 3)
'mig.1g.10gb.3'
>>> feature("1g.24gb+me.all", 1)
'mig.1g.24gb_meall.1'
>>> parse_feature("mig.1g.24gb_nome.2")
FitFeature(profile='1g.24gb-me', count=2)
>>> active_features({"3g.40gb": 2, "7g.80gb": 0}, max_count=8)
('mig.3g.40gb.1', 'mig.3g.40gb.2')
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Dict, Iterable, List, Mapping, NamedTuple, Tuple

from slurm_gpu.core.errors import BadInputError

if TYPE_CHECKING:
    from slurm_gpu.core.catalog import GpuModel, Profile

__all__ = [
    "PREFIX",
    "DEFAULT_MAX_COUNT",
    "FitFeature",
    "feature_token",
    "profile_from_token",
    "feature",
    "parse_feature",
    "is_fit_feature",
    "max_fit",
    "node_max_counts",
    "all_features",
    "active_features",
]

PREFIX = "mig."
DEFAULT_MAX_COUNT = 8

# Order matters: "+me.all" must be replaced before "+me".
_TO_TOKEN: Tuple[Tuple[str, str], ...] = (
    ("+me.all", "_meall"), ("+me", "_me"), ("-me", "_nome"), ("+gfx", "_gfx"),
)
_PROFILE = re.compile(r"^\d+g\.\d+gb(\+me\.all|\+me|-me|\+gfx)?$")
_FEATURE = re.compile(r"^mig\.(?P<tok>\d+g\.\d+gb(?:_meall|_me|_nome|_gfx)?)\.(?P<k>[1-9]\d*)$")


class FitFeature(NamedTuple):
    profile: str  # MIG profile name, e.g. "1g.10gb+me"
    count: int  # type: ignore[assignment]  # at least this many more fit; shadows tuple.count on purpose


def feature_token(profile_name: str) -> str:
    """The profile name as it appears in a feature (``1g.10gb+me`` -> ``1g.10gb_me``)."""
    name = profile_name.strip().lower()
    if not _PROFILE.match(name):
        raise BadInputError(f"not a MIG profile name: {profile_name!r}", part=profile_name)
    for suffix, token in _TO_TOKEN:
        if name.endswith(suffix):
            return name[: -len(suffix)] + token
    return name


def profile_from_token(token: str) -> str:
    """Inverse of :func:`feature_token`."""
    for suffix, tok in _TO_TOKEN:
        if token.endswith(tok):
            return token[: -len(tok)] + suffix
    return token


def feature(profile_name: str, k: int) -> str:
    """``mig.<tok>.<k>``; k counts instances and starts at 1."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise BadInputError(f"feature count must be a positive integer, not {k!r}", part=str(k))
    return f"{PREFIX}{feature_token(profile_name)}.{k}"


def parse_feature(name: str) -> FitFeature:
    """``mig.1g.10gb_me.2`` -> ``FitFeature("1g.10gb+me", 2)``; raises ``BadInputError`` otherwise."""
    m = _FEATURE.match(name.strip())
    if not m:
        raise BadInputError(f"not a MIG fit feature: {name!r}", part=name)
    return FitFeature(profile_from_token(m.group("tok")), int(m.group("k")))


def is_fit_feature(name: str) -> bool:
    """Whether a node feature is one of ours (any name under ``mig.``, so foreign ones are not mixed in)."""
    return name.strip().startswith(PREFIX)


def max_fit(model: GpuModel, profile: Profile) -> int:
    """How many instances of ``profile`` alone an empty GPU of ``model`` can hold (an upper bound)."""
    return min(
        profile.max_instances,
        len(profile.placements),
        model.max_gpu_instances,
        model.compute_slices_total // max(profile.compute_slices, 1),
        model.memory_slices_total // max(profile.memory_slices, 1),
    )


def node_max_counts(models: Iterable[GpuModel]) -> Dict[str, int]:
    """Per profile name, how many instances the node's GPUs (one model per GPU) could ever hold."""
    counts: Dict[str, int] = {}
    for model in models:
        for profile in model.profiles:
            counts[profile.name] = counts.get(profile.name, 0) + max_fit(model, profile)
    return counts


def all_features(models: Iterable[GpuModel], max_count: int = DEFAULT_MAX_COUNT) -> Tuple[str, ...]:
    """Every fit feature a node with these GPUs (one model per GPU) could ever have: its AvailableFeatures.

    k runs 1..K, K = ``max_count`` capped by what the GPUs could ever hold. Ordered by profile as the
    catalog lists them, then by k.
    """
    return _expand(node_max_counts(models), max_count)


def active_features(capacity: Mapping[str, int], max_count: int = DEFAULT_MAX_COUNT) -> Tuple[str, ...]:
    """The fit features true now, from ``planner.capacity(node)`` (profile name -> instances that fit)."""
    return _expand(capacity, max_count)


def _expand(counts: Mapping[str, int], max_count: int) -> Tuple[str, ...]:
    if max_count < 1:
        raise BadInputError(f"max_count must be at least 1, not {max_count}", part=str(max_count))
    out: List[str] = []
    for name, count in counts.items():
        for k in range(1, min(int(count), max_count) + 1):
            out.append(feature(name, k))
    return tuple(out)
