"""Parse gres requests as users and Slurm write them, and resolve them to MIG profiles.

Accepted forms (one piece; pieces are comma-separated):

- a profile: ``1g.10gb``, ``1g.10gb:2``, ``gpu:3g.40gb``, ``gpu:3g.40gb:1``
- Slurm's own spelling: ``gres:gpu:1g.10gb:2`` (22.05), ``gres/gpu:1g.10gb:2`` (24.11+), and the
  ``gpu:1g.10gb:2(IDX:3-4)`` detail form (the index list is ignored)
- whole GPUs: ``gpu``, ``gpu:2``, ``gres/gpu=2``
- memory-sized: ``20gb``, ``gpu:20gb:1``, ``gpu:mem=20G``, ``gpu:20480M``
- other gres names are parsed too (``shard:2``) so a caller can skip them

The grammar (prefixes, details, ``=`` counts, fields) is :mod:`slurm_gpu.core.gres`; this module adds what a
user's request means: a leading profile or size implies ``gpu:``, a lone number is a count, a gpu type is a
profile or a memory size, counts are positive integers without Slurm's ``k``/``m`` suffixes, and only an
index detail may follow.

Memory sizes: ``G``/``GB``/``GiB`` all mean GiB, ``M``/``MB``/``MiB`` MiB, ``T``/``TB`` TiB; see
:func:`resolve` for how a size picks a profile.

>>> parse_gres("gpu:1g.10gb:2")
(GresRequest(name='gpu', type='1g.10gb', count=2, min_memory_mib=None, raw='gpu:1g.10gb:2'),)
>>> [r.min_memory_mib for r in parse_gres("20gb,gpu:mem=2048M")]
[20480, 2048]
>>> from slurm_gpu.core.catalog import load_catalog
>>> h100 = load_catalog().model("H100-80GB")
>>> [resolve(r, h100).name for r in parse_gres("10gb,20gb,40gb,gpu")]
['1g.10gb', '1g.20gb', '3g.40gb', '7g.80gb']
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Tuple

from slurm_gpu.core.errors import RequestError
from slurm_gpu.core.gres import parse_count, parse_term, split_terms

if TYPE_CHECKING:  # pragma: no cover - typing only; keeps import of this module cheap
    from slurm_gpu.core.catalog import GpuModel, Profile

__all__ = ["GresRequest", "parse_gres", "resolve", "MEMORY_TOLERANCE"]

# NVML memory sizes of the same profile shift 1-2 % between drivers: a request for N GiB accepts
# a profile with 2 % less.
MEMORY_TOLERANCE = 0.02

_PROFILE = re.compile(r"^\d+g\.\d+gb(?:[+-][a-z]+(?:\.[a-z]+)?)?$")
_MEMORY = re.compile(r"^(?:mem=)?(?P<value>\d+)(?P<unit>[kmgt]?i?b?)$")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_NUMBER = re.compile(r"^[+-]?\d+(?:\.\d*)?$|^[+-]?\.\d+$")
_TYPE = re.compile(r"^[a-z0-9_.+-]+$")
_UNIT_MIB = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}
MIN_MEMORY_MIB = 1024  # job_submit.lua's SG.min_memory_mib says the same


@dataclass(frozen=True)
class GresRequest:
    """One requested gres: ``count`` instances of profile ``type``, or of a whole GPU (``type`` None,
    ``min_memory_mib`` None), or of the smallest profile with ``min_memory_mib`` of memory."""

    name: str
    type: Optional[str]
    count: int
    min_memory_mib: Optional[int]
    raw: str

    @property
    def is_whole_gpu(self) -> bool:
        return self.type is None and self.min_memory_mib is None

    @property
    def is_memory_sized(self) -> bool:
        return self.min_memory_mib is not None


def parse_gres(text: str) -> Tuple[GresRequest, ...]:
    """All requests in ``text`` in order; raises :class:`RequestError` with ``part`` the bad piece."""
    if text is None or not str(text).strip():
        raise RequestError("empty gres request", part="" if text is None else str(text))
    pieces = split_terms(str(text))
    for piece in pieces:
        if not piece:
            raise RequestError(f"empty piece in gres request {text!r}", part=piece)
    return tuple(_parse_piece(piece) for piece in pieces)


def _parse_piece(piece: str) -> GresRequest:
    raw = piece.strip()
    term = parse_term(raw, looks_like_count=_looks_numeric, bare_type=lambda f: _is_gpu_type(f.lower()))
    if term.detail and term.detail_kind != "IDX":
        raise RequestError(f"gres request {raw!r}: only an (IDX:...) detail may follow", part=term.detail)
    # Users may write any case (GPU:1G.10GB); names, profiles and units are lower case.
    name = term.name.lower()
    gtype = None if term.type is None else term.type.lower()
    if not _NAME.match(name):
        raise RequestError(f"cannot parse gres request {raw!r}: {name!r} is no gres name", part=raw)
    count = 1 if term.count is None else parse_count(term.count.lower(), raw, suffixes=False, minimum=1)

    min_memory: Optional[int] = None
    if gtype is not None and name == "gpu":
        if _PROFILE.match(gtype):
            pass
        elif _MEMORY.match(gtype):
            min_memory = _parse_memory(gtype, raw)
            gtype = None
        else:
            raise RequestError(
                f"unknown gpu type {gtype!r} in {raw!r}: expected a MIG profile such as 1g.10gb "
                f"or a memory size such as 20gb",
                part=gtype,
            )
    elif gtype is not None and not _TYPE.match(gtype):
        raise RequestError(f"bad gres type {gtype!r} in {raw!r}", part=gtype)
    return GresRequest(name=name, type=gtype, count=count, min_memory_mib=min_memory, raw=raw)


def _is_gpu_type(token: str) -> bool:
    """A leading profile or memory size means an implicit ``gpu:`` (``1g.10gb:2``, ``20gb``)."""
    return bool(_PROFILE.match(token)) or (
        bool(_MEMORY.match(token)) and not token.isdigit() and token[-1] in "bgmtk"
    )


def _looks_numeric(token: str) -> bool:
    """Whether a lone field after the name is meant as a count. Not Slurm's k/m/g suffixes: a user's
    ``gpu:20g`` is a memory size. Signs and decimals count, so ``gpu:-1`` is refused as a count."""
    return bool(_NUMBER.match(token))


def _parse_memory(token: str, raw: str) -> int:
    m = _MEMORY.match(token)
    assert m is not None
    unit = m.group("unit")
    if unit in ("", "b", "ib") or unit[0] not in _UNIT_MIB or unit[1:] not in ("", "b", "ib"):
        raise RequestError(f"memory size {token!r} in {raw!r} needs a unit (M, G, T)", part=token)
    mib = int(m.group("value")) * _UNIT_MIB[unit[0]]
    if mib < MIN_MEMORY_MIB:
        # 0gb, 1k, 512m: no MIG profile is that small; taking them as "the smallest" hides a typo.
        raise RequestError(f"memory size {token!r} in {raw!r} must be at least 1gb", part=token)
    return int(mib)


def resolve(req: GresRequest, model: GpuModel) -> Profile:
    """The profile of ``model`` that serves ``req``.

    - a profile name must exist on the model (``RequestError`` otherwise);
    - a whole-GPU request gets ``model.full_profile()``;
    - a memory-sized request gets the smallest *base* profile that holds it: a profile holds
      ``N`` GiB when its real memory (``Profile.usable_memory_mib``) is at least ``N`` GiB less
      :data:`MEMORY_TOLERANCE`, or when its name advertises at least ``N`` GB (H100 ``1g.10gb``
      has 9984 MiB and is what ``10gb`` means to a user). Among those: least memory, then fewest
      compute slices, then fewest memory slices.
    """
    if req.name != "gpu":
        raise RequestError(f"{req.raw!r} is a {req.name!r} request, not a gpu one", part=req.raw)
    if req.type is not None:
        if not model.has_profile(req.type):
            known = ", ".join(p.name for p in model.profiles)
            raise RequestError(
                f"MIG profile {req.type!r} does not exist on {model.key} (known: {known})", part=req.type
            )
        return model.profile(req.type)
    if req.min_memory_mib is None:
        return model.full_profile()
    need = req.min_memory_mib * (1 - MEMORY_TOLERANCE)
    name_gb = req.min_memory_mib // 1024 if req.min_memory_mib % 1024 == 0 else None
    holding = [
        p
        for p in model.base_profiles()
        if p.usable_memory_mib >= need or (name_gb is not None and p.name_gb >= name_gb)
    ]
    if not holding:
        biggest = model.full_profile()
        raise RequestError(
            f"no MIG profile of {model.key} holds {req.min_memory_mib} MiB ({req.raw!r}); the largest, "
            f"{biggest.name}, has {biggest.usable_memory_mib} MiB",
            part=req.raw,
        )
    return min(holding, key=lambda p: (p.usable_memory_mib, p.compute_slices, p.memory_slices))
