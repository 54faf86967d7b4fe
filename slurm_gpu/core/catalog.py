"""GPU models and their MIG GPU-instance profiles.

The data lives in ``slurm_gpu/data/catalog.json`` with the provenance of every value. This module turns
it into immutable value types and answers lookups; it does no I/O beyond reading that packaged file
once (``load_catalog``). On real hardware, profiles read from NVML win over the file
(``slurm_gpu.devices.discover`` reports the differences).

>>> cat = load_catalog()
>>> h100 = cat.model("H100-80GB")
>>> [p.profile_id for p in h100.base_profiles()]
[19, 15, 14, 9, 5, 0]
>>> h100.profile("3g.40gb").placement_starts
(0, 4)
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass, field, replace
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

from slurm_gpu.core.errors import CatalogError, UnknownModelError, UnknownProfileError

__all__ = ["Profile", "GpuModel", "PciId", "Identification", "Catalog", "load_catalog", "CATALOG_PATH",
           "MEMORY_DRIFT"]

# How far a profile's memory as a driver reports it may differ from the catalog's and still be the same
# profile: sizes move between driver versions (RTX PRO 6000 1g.24gb: 23.12 GiB in one recorded output,
# 24192 MiB in the catalog, 2.1 %), and nvidia-smi rounds GiB to 2 decimals. NVML's value wins at run time.
MEMORY_DRIFT = 0.03
# os.path, not pathlib: the root hooks load the catalog on every job and need nothing else of pathlib.
CATALOG_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "catalog.json")
CATALOG_FORMAT_VERSION = 1

# "1g.10gb", "3g.40gb", "1g.5gb+me", "1g.24gb-me", "2g.48gb+me.all", "4g.96gb+gfx"
_PROFILE_NAME = re.compile(r"^(?P<g>\d+)g\.(?P<gb>\d+)gb(?P<variant>[+-][a-z.]+)?$")


@dataclass(frozen=True)
class Profile:
    """One MIG GPU-instance profile of one GPU model.

    ``profile_id`` is NVML's ``GpuInstanceProfileInfo.id`` (what create/placement/list calls take);
    ``nvml_profile_index`` is the ``NVML_GPU_INSTANCE_PROFILE_*`` constant passed to
    ``nvmlDeviceGetGpuInstanceProfileInfo``. Never pass one for the other.
    Placements are ``(start, size)`` in memory slices (``nvmlGpuInstancePlacement_t``).
    """

    name: str
    profile_id: int
    nvml_profile_index: int
    nvml_profile_constant: str
    compute_slices: int
    memory_slices: int
    memory_mib: Optional[int]  # None where no source confirms it
    max_instances: int
    placements: Tuple[Tuple[int, int], ...]
    ci_profile_index: int  # NVML_COMPUTE_INSTANCE_PROFILE_* of the CI that spans the whole GI
    multiprocessors: Optional[int] = None
    unconfirmed: Tuple[str, ...] = ()
    variant: str = ""  # "", "+me", "-me", "+me.all", "+gfx"

    @property
    def placement_starts(self) -> Tuple[int, ...]:
        return tuple(start for start, _ in self.placements)

    @property
    def name_gb(self) -> int:
        """The memory size the profile's name advertises, in GB."""
        m = _PROFILE_NAME.match(self.name)
        return int(m.group("gb")) if m else 0

    @property
    def is_base(self) -> bool:
        """A plain compute profile (no media-engine or graphics variant)."""
        return self.variant == ""

    @property
    def usable_memory_mib(self) -> int:
        """Memory in MiB for sizing requests: the measured value, else the name's GB (marked unconfirmed)."""
        if self.memory_mib is not None:
            return self.memory_mib
        return self.name_gb * 1024

    def to_dict(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "profile_id": self.profile_id,
            "nvml_profile_index": self.nvml_profile_index,
            "nvml_profile_constant": self.nvml_profile_constant,
            "compute_slices": self.compute_slices,
            "memory_slices": self.memory_slices,
            "memory_mib": self.memory_mib,
            "max_instances": self.max_instances,
            "placements": [{"start": s, "size": z} for s, z in self.placements],
            "ci_profile_index": self.ci_profile_index,
            "multiprocessors": self.multiprocessors,
            "unconfirmed": list(self.unconfirmed),
        }


@dataclass(frozen=True)
class PciId:
    """One row of NVIDIA's product/PCI table: ``device`` as NVML's ``pciDeviceId`` (``0x234210DE``),
    ``subsystem`` as NVML's ``pciSubSystemId`` (``0x16EB10DE``: subsystem device, then vendor) or None."""

    device: str
    subsystem: Optional[str]
    name: str


@dataclass(frozen=True)
class Identification:
    """What :meth:`Catalog.identify` resolved and how (``pci+subsystem``, ``pci`` or ``name``)."""

    model: GpuModel
    matched_by: str
    product: str  # the product name of the matching PCI row, else the name asked for

    def to_dict(self) -> Dict[str, Any]:
        return {"model": self.model.key, "matched_by": self.matched_by, "product": self.product,
                "architecture": self.model.architecture,
                "unconfirmed": list(self.model.unconfirmed_fields)}


@dataclass(frozen=True)
class GpuModel:
    """A MIG-capable GPU model and its profiles (``key`` such as ``H100-80GB``)."""

    key: str
    nvml_names: Tuple[str, ...]
    pci_device_ids: Tuple[str, ...]
    architecture: str
    compute_slices_total: int
    memory_slices_total: int
    max_gpu_instances: int
    total_memory_mib: Optional[int]
    mode_change_requires_reset: bool
    profiles: Tuple[Profile, ...]
    sources: Tuple[str, ...] = ()
    variants: Tuple[str, ...] = ()
    pci_ids: Tuple[PciId, ...] = ()
    unconfirmed_fields: Tuple[str, ...] = ()  # model-level fields no source confirms
    _by_name: Mapping[str, Profile] = field(default_factory=dict, repr=False, compare=False)
    _by_id: Mapping[int, Profile] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {p.name: p for p in self.profiles})
        object.__setattr__(self, "_by_id", {p.profile_id: p for p in self.profiles})

    def profile(self, name: str) -> Profile:
        try:
            return self._by_name[name.strip().lower()]
        except KeyError:
            known = ", ".join(p.name for p in self.profiles)
            raise UnknownProfileError(
                f"unknown MIG profile {name!r} for {self.key} (known: {known})", part=name
            ) from None

    def has_profile(self, name: str) -> bool:
        return name.strip().lower() in self._by_name

    def profile_by_id(self, profile_id: int) -> Profile:
        try:
            return self._by_id[profile_id]
        except KeyError:
            raise UnknownProfileError(
                f"unknown MIG profile id {profile_id} for {self.key}", part=str(profile_id)
            ) from None

    def base_profiles(self) -> Tuple[Profile, ...]:
        """Plain compute profiles, largest memory first within equal compute (what users request)."""
        return tuple(p for p in self.profiles if p.is_base)

    def full_profile(self) -> Profile:
        """The profile that spans the whole GPU (what a whole-GPU request gets on a MIG node)."""
        return max(self.base_profiles(), key=lambda p: (p.memory_slices, p.compute_slices))

    def with_driver_profiles(self, offered: Iterable[Any]) -> GpuModel:
        """This model as the driver describes it: NVML's profile table wins over the catalog file.

        ``offered`` are the driver's profiles (``slurm_gpu.devices.NvmlProfile``: ``profile_id``,
        ``nvml_profile_index``, ``slice_count``, ``memory_mib``, ``instance_count``, ``placements``).
        Catalog profiles the driver does not offer are dropped; profiles only the driver offers are left
        out as well, since users have no name to ask for them (``slurm-gpu inventory --check-catalog``
        reports both). Returns ``self`` when nothing differs, so planner caches keep hitting.
        """
        by_id = {int(p.profile_id): p for p in offered}
        kept = []
        for p in self.profiles:
            d = by_id.get(p.profile_id)
            if d is None:
                continue
            placements = tuple((int(s), int(z)) for s, z in d.placements)
            kept.append(
                replace(
                    p,
                    nvml_profile_index=int(d.nvml_profile_index),
                    compute_slices=int(d.slice_count),
                    memory_slices=placements[0][1] if placements else p.memory_slices,
                    memory_mib=int(d.memory_mib),
                    max_instances=int(d.instance_count),
                    placements=placements,
                )
            )
        if tuple(kept) == self.profiles:
            return self
        return replace(self, profiles=tuple(kept))

    def to_dict(self) -> Dict[str, Any]:
        return {
            "model": self.key,
            "architecture": self.architecture,
            "nvml_names": list(self.nvml_names),
            "pci_device_ids": list(self.pci_device_ids),
            "compute_slices_total": self.compute_slices_total,
            "memory_slices_total": self.memory_slices_total,
            "max_gpu_instances": self.max_gpu_instances,
            "total_memory_mib": self.total_memory_mib,
            "mode_change_requires_reset": self.mode_change_requires_reset,
            "profiles": [p.to_dict() for p in self.profiles],
            "sources": list(self.sources),
            "pci_ids": [{"device": i.device, "subsystem": i.subsystem, "name": i.name} for i in self.pci_ids],
            "unconfirmed": list(self.unconfirmed_fields),
        }


def _normalise_name(name: str) -> str:
    name = name.strip().lower()
    if name.startswith("nvidia "):
        name = name[len("nvidia ") :]
    return re.sub(r"[\s_]+", " ", name)


class Catalog:
    """All known GPU models, looked up by key, NVML device name or PCI device id."""

    def __init__(self, models: Iterable[GpuModel]):
        self.models: Tuple[GpuModel, ...] = tuple(models)
        self._by_key = {m.key.lower(): m for m in self.models}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Catalog:
        version = data.get("format_version")
        if version != CATALOG_FORMAT_VERSION:
            raise CatalogError(f"catalog format_version {version!r} is not {CATALOG_FORMAT_VERSION}")
        models = []
        for m in data["models"]:
            profiles = []
            for p in m["profiles"]:
                variant = _PROFILE_NAME.match(p["name"])
                if variant is None:
                    raise CatalogError(
                        f"catalog: bad profile name {p['name']!r} in {m['key']}", part=p["name"]
                    )
                profiles.append(
                    Profile(
                        name=p["name"],
                        profile_id=int(p["profile_id"]),
                        nvml_profile_index=int(p["nvml_profile_index"]),
                        nvml_profile_constant=p["nvml_profile_constant"],
                        compute_slices=int(p["compute_slices"]),
                        memory_slices=int(p["memory_slices"]),
                        memory_mib=p["memory_mib"],
                        max_instances=int(p["max_instances"]),
                        placements=tuple((int(s), int(z)) for s, z in p["placements"]),
                        ci_profile_index=int(p["ci_profile_index"]),
                        multiprocessors=p.get("multiprocessors"),
                        unconfirmed=tuple(p.get("unconfirmed", ())),
                        variant=variant.group("variant") or "",
                    )
                )
            models.append(
                GpuModel(
                    key=m["key"],
                    nvml_names=tuple(m["nvml_names"]),
                    pci_device_ids=tuple(_normalise_pci_id(x) for x in m["pci_device_ids"]),
                    architecture=m.get("architecture") or "",
                    compute_slices_total=int(m["compute_slices_total"]),
                    memory_slices_total=int(m["memory_slices_total"]),
                    max_gpu_instances=int(m["max_gpu_instances"]),
                    total_memory_mib=m.get("total_memory_mib"),
                    mode_change_requires_reset=bool(m["mig_mode_change"]["requires_gpu_reset"]),
                    profiles=tuple(profiles),
                    sources=tuple(m.get("sources", ())),
                    variants=tuple(m.get("variants", ())),
                    pci_ids=tuple(
                        PciId(_normalise_pci_id(i["device"]),
                              _normalise_pci_id(i["subsystem"]) if i.get("subsystem") else None, i["name"])
                        for i in m.get("pci_ids", ())
                    ),
                    unconfirmed_fields=tuple(m.get("unconfirmed_model_fields", ())),
                )
            )
        return cls(models)

    def keys(self) -> Tuple[str, ...]:
        return tuple(m.key for m in self.models)

    def model(self, key: str) -> GpuModel:
        """A model by its catalog key (case-insensitive), e.g. ``H100-80GB``."""
        try:
            return self._by_key[key.strip().lower()]
        except KeyError:
            raise UnknownModelError(
                f"unknown GPU model {key!r} (known: {', '.join(self.keys())})", part=key
            ) from None

    def recognise(
        self, nvml_name: str, pci_device_id: Optional[str] = None, pci_subsystem_id: Optional[str] = None
    ) -> GpuModel:
        """The model of a GPU as NVML reports it: PCI device id first, then the device name.

        ``pci_device_id`` is ``nvmlPciInfo_t.pciDeviceId`` as hex (``0x233010DE``, or the bare device
        ``0x2330``) or an int string; ``pci_subsystem_id`` (``pciSubSystemId``) only decides between models
        that share a device id.
        """
        return self.identify(nvml_name, pci_device_id, pci_subsystem_id).model

    def identify(
        self, nvml_name: str, pci_device_id: Optional[str] = None, pci_subsystem_id: Optional[str] = None
    ) -> Identification:
        """Like :meth:`recognise`, with how the model was found."""
        if pci_device_id:
            found = self._by_pci(_normalise_pci_id(pci_device_id),
                                 _normalise_pci_id(pci_subsystem_id) if pci_subsystem_id else None)
            if found is not None:
                return found
        wanted_name = _normalise_name(nvml_name)
        for m in self.models:
            if any(_normalise_name(n) == wanted_name for n in m.nvml_names):
                return Identification(m, "name", nvml_name)
        raise UnknownModelError(
            f"GPU {nvml_name!r} (PCI device id {pci_device_id or 'unknown'}) is not a MIG-capable model "
            f"this catalog knows ({', '.join(self.keys())})",
            part=nvml_name,
        )

    def _by_pci(self, device: str, subsystem: Optional[str]) -> Optional[Identification]:
        candidates = [m for m in self.models if device in m.pci_device_ids]
        if not candidates:
            return None
        for m in candidates:
            for row in m.pci_ids:
                if row.device == device and subsystem is not None and row.subsystem == subsystem:
                    return Identification(m, "pci+subsystem", row.name)
        m = candidates[0]
        product = next((r.name for r in m.pci_ids if r.device == device), m.key)
        return Identification(m, "pci", product)


def _normalise_pci_id(value: str) -> str:
    """``0x233010DE`` form; a bare 16-bit device id (``0x2330``, ``2330``) gets NVIDIA's vendor 10DE.

    Four hex digits without ``0x`` are read as hex (how PCI tables print them); longer bare digits as an int.
    """
    value = str(value).strip()
    try:
        if value.lower().startswith("0x") or (len(value) <= 4 and re.fullmatch(r"[0-9a-fA-F]+", value)):
            number = int(value, 16)
        else:
            number = int(value)
    except ValueError:
        raise UnknownModelError(f"not a PCI id: {value!r}", part=value) from None
    if number <= 0xFFFF:
        number = (number << 16) | 0x10DE
    return f"0x{number:08X}"


@functools.lru_cache(maxsize=4)
def load_catalog(path: Optional[str] = None) -> Catalog:
    """The packaged catalog (or another file in the same format), parsed once per process."""
    file = os.fspath(path) if path else CATALOG_PATH
    try:
        with open(file, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise CatalogError(f"cannot read MIG catalog {file}: {exc}", part=str(file)) from exc
    return Catalog.from_dict(data)
