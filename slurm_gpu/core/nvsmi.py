"""Parse the text of ``nvidia-smi mig -lgip`` and ``nvidia-smi mig -lgipp``, and compare it with the catalog.

The text format is not guaranteed stable (NVML is); this parser serves recorded outputs kept as test
fixtures and a node's live output shown next to the catalog (``slurm-gpu`` compares the two). It does
no I/O: callers run ``nvidia-smi`` themselves and pass the text.

>>> lgipp = "GPU  0 Profile ID  9 Placements: {0,4}:4\\nGPU  0 Profile ID  0 Placement : {0}:8"
>>> parse_lgipp(lgipp)[(0, 9)]
((0, 4), (4, 4))
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from slurm_gpu.core.catalog import MEMORY_DRIFT
from slurm_gpu.core.errors import BadInputError

if TYPE_CHECKING:  # pragma: no cover
    from slurm_gpu.core.catalog import GpuModel

__all__ = [
    "LgipRow", "NvsmiProfile", "parse_lgip", "parse_lgipp", "profiles_from_nvsmi", "compare_with_catalog",
]

# |   0  MIG 1g.10gb       19     7/7        9.75       No     16     1     0   |
_ROW = re.compile(
    r"^\|\s*(?P<gpu>\d+)\s+MIG\s+(?P<name>\S+)\s+(?P<id>\d+)\s+(?P<free>\d+)/(?P<total>\d+)\s+"
    r"(?P<gib>\d+(?:\.\d+)?)\s+(?P<p2p>\S+)\s+(?P<sm>\d+)\s+(?P<dec>\d+)\s+(?P<enc>\d+)\s*\|$"
)
# |                                                             1     1     0   |   (CE JPEG OFA)
_ROW2 = re.compile(r"^\|\s+(?P<ce>\d+)\s+(?P<jpeg>\d+)\s+(?P<ofa>\d+)\s*\|$")
# GPU  0 Profile ID 19 Placements: {0,1,2,3,4,5,6}:1     /  GPU  0 Profile ID  0 Placement : {0}:8
_PLACEMENT = re.compile(
    r"^GPU\s+(?P<gpu>\d+)\s+Profile ID\s+(?P<id>\d+)\s+Placements?\s*:\s*"
    r"\{(?P<starts>[\d,\s]*)\}:(?P<size>\d+)$"
)


@dataclass(frozen=True)
class LgipRow:
    """One profile row of ``nvidia-smi mig -lgip`` (memory in GiB as printed)."""

    gpu: int
    name: str
    profile_id: int
    free: int
    total: int
    memory_gib: float
    p2p: str
    multiprocessors: int
    dec: int
    enc: int
    ce: Optional[int] = None
    jpeg: Optional[int] = None
    ofa: Optional[int] = None


@dataclass(frozen=True)
class NvsmiProfile:
    """What nvidia-smi says of one profile on one GPU; ``placements`` is empty without ``-lgipp``."""

    name: str
    profile_id: int
    instances: int
    memory_gib: float
    placements: Tuple[Tuple[int, int], ...]

    @property
    def memory_mib(self) -> int:
        return round(self.memory_gib * 1024)


def parse_lgip(text: str) -> Tuple[LgipRow, ...]:
    """Profile rows of ``nvidia-smi mig -lgip``; other lines (borders, headers, prompts) are skipped."""
    rows: List[LgipRow] = []
    for line in text.splitlines():
        line = line.strip()
        m = _ROW.match(line)
        if m:
            rows.append(
                LgipRow(
                    gpu=int(m["gpu"]), name=m["name"], profile_id=int(m["id"]), free=int(m["free"]),
                    total=int(m["total"]), memory_gib=float(m["gib"]), p2p=m["p2p"],
                    multiprocessors=int(m["sm"]), dec=int(m["dec"]), enc=int(m["enc"]),
                )
            )
            continue
        m2 = _ROW2.match(line)
        if m2 and rows and rows[-1].ce is None:
            last = rows[-1]
            rows[-1] = LgipRow(**{**last.__dict__, "ce": int(m2["ce"]), "jpeg": int(m2["jpeg"]),
                                  "ofa": int(m2["ofa"])})
    if not rows:
        raise BadInputError("no profile rows found in the nvidia-smi mig -lgip text", part=text[:200])
    return tuple(rows)


def parse_lgipp(text: str) -> Dict[Tuple[int, int], Tuple[Tuple[int, int], ...]]:
    """``{(gpu, profile_id): ((start, size), ...)}`` from ``nvidia-smi mig -lgipp``."""
    out: Dict[Tuple[int, int], Tuple[Tuple[int, int], ...]] = {}
    for line in text.splitlines():
        m = _PLACEMENT.match(line.strip())
        if m:
            size = int(m["size"])
            starts = [s for s in re.split(r"[,\s]+", m["starts"]) if s]
            out[(int(m["gpu"]), int(m["id"]))] = tuple((int(s), size) for s in starts)
    if not out:
        raise BadInputError("no placement lines found in the nvidia-smi mig -lgipp text", part=text[:200])
    return out


def profiles_from_nvsmi(lgip: str, lgipp: Optional[str] = None, gpu: int = 0) -> Tuple[NvsmiProfile, ...]:
    """The profiles of GPU ``gpu``: names, ids, instance totals and memory from ``-lgip``, placements
    from ``-lgipp`` when given."""
    placements = parse_lgipp(lgipp) if lgipp else {}
    return tuple(
        NvsmiProfile(
            name=r.name,
            profile_id=r.profile_id,
            instances=r.total,
            memory_gib=r.memory_gib,
            placements=placements.get((gpu, r.profile_id), ()),
        )
        for r in parse_lgip(lgip)
        if r.gpu == gpu
    )


def compare_with_catalog(model: GpuModel, profiles: Tuple[NvsmiProfile, ...]) -> List[str]:
    """Differences between nvidia-smi's profiles and the catalog's ``model`` (empty when they agree).

    Profiles the catalog has but nvidia-smi does not list are not differences (older drivers lack
    some, e.g. ``2g.12gb+me`` before R525); memory may differ by :data:`MEMORY_DRIFT`.
    """
    diffs: List[str] = []
    for seen in profiles:
        if not model.has_profile(seen.name):
            diffs.append(f"{seen.name} (id {seen.profile_id}) is not in the catalog of {model.key}")
            continue
        p = model.profile(seen.name)
        if p.profile_id != seen.profile_id:
            diffs.append(f"{seen.name}: profile id {seen.profile_id}, catalog {p.profile_id}")
        if p.max_instances != seen.instances:
            diffs.append(f"{seen.name}: {seen.instances} instances, catalog {p.max_instances}")
        if p.memory_mib is not None and abs(seen.memory_mib - p.memory_mib) > MEMORY_DRIFT * p.memory_mib:
            diffs.append(f"{seen.name}: {seen.memory_mib} MiB, catalog {p.memory_mib} MiB")
        if seen.placements and tuple(seen.placements) != tuple(p.placements):
            diffs.append(f"{seen.name}: placements {seen.placements}, catalog {p.placements}")
    return diffs
