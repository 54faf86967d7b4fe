"""Count admission on clusters of several GPU models: gres types for requests that mean another profile
on each model.

``gpu:20gb`` is ``1g.20gb`` on an H100-80GB and ``3g.20gb`` on an A100-40GB; ``gpu:1`` is ``7g.80gb`` on
one and ``7g.40gb`` on the other. A count type names one profile, so such a request gets an *alias* type
of ``migp`` instead: ``<N>gb`` for a memory size (N the largest size in GB that still means the same
profiles on the cluster's models, so every request of that class gets one name) and ``whole`` for whole
GPUs. A node publishes an alias type's free slots as it publishes a profile's; on the node the alias means
the profile its own model resolves the request to (:func:`alias_profile`), so the Prolog creates exactly
that and the slots stay exact. ``job_submit.lua`` maps a request to its alias by the profiles it means
(:func:`cluster_aliases`, generated into the script).

>>> from slurm_gpu.core.catalog import load_catalog
>>> h100, a100 = (load_catalog().model(k) for k in ("H100-80GB", "A100-40GB"))
>>> cluster_aliases([h100, a100])["1g.20gb|3g.20gb"]
'20gb'
>>> alias_profile("20gb", [a100]), alias_profile("whole", [h100]), alias_profile("1g.10gb", [h100])
('3g.20gb', '7g.80gb', None)
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence

from slurm_gpu.core.errors import RequestError
from slurm_gpu.core.requests import parse_gres, resolve

if TYPE_CHECKING:  # pragma: no cover
    from slurm_gpu.core.catalog import GpuModel

__all__ = ["WHOLE_TYPE", "is_alias_type", "alias_profile", "cluster_aliases", "candidates_key"]

WHOLE_TYPE = "whole"  # whole GPUs (gpu:N) on a cluster whose models' full profiles differ
_MEMORY_TYPE = re.compile(r"^[1-9]\d*gb$")


def is_alias_type(type_name: str) -> bool:
    """Whether a ``migp`` type is an alias (``20gb``, ``whole``) rather than a profile's type."""
    return type_name == WHOLE_TYPE or bool(_MEMORY_TYPE.match(type_name))


def _resolved(request: str, model: GpuModel) -> Optional[str]:
    try:
        return resolve(parse_gres(request)[0], model).name
    except RequestError:
        return None


def alias_profile(type_name: str, models: Sequence[GpuModel]) -> Optional[str]:
    """The profile alias ``type_name`` means on GPUs of ``models`` (a node's), or None: not an alias, no
    such profile, or the models disagree (a node of two models whose profiles differ offers no slot of it)."""
    if not is_alias_type(type_name) or not models:
        return None
    request = "gpu" if type_name == WHOLE_TYPE else f"gpu:{type_name}"
    found = {_resolved(request, m) for m in models}
    return found.pop() if len(found) == 1 else None


def candidates_key(profiles: Sequence[Optional[str]]) -> str:
    """The distinct profiles a request means over the cluster's models, in model order, joined by ``|``
    (how job_submit.lua keys its alias table)."""
    seen: List[str] = []
    for name in profiles:
        if name and name not in seen:
            seen.append(name)
    return "|".join(seen)


def cluster_aliases(models: Sequence[GpuModel]) -> Dict[str, str]:
    """Candidate key -> alias type for every request that means two or more profiles over ``models`` (the
    cluster's dynamic-MIG models, in job_submit.lua's order). A memory size's alias names the largest
    whole GB of its class."""
    out: Dict[str, str] = {}
    most = max((m.full_profile().name_gb for m in models), default=0)
    for gb in range(1, most + 1):
        key = candidates_key([_resolved(f"gpu:{gb}gb", m) for m in models])
        if "|" in key:
            out[key] = f"{gb}gb"  # ascending: the largest size of the class wins
    whole = candidates_key([m.full_profile().name for m in models])
    if "|" in whole:
        out.setdefault(whole, WHOLE_TYPE)
    return out
