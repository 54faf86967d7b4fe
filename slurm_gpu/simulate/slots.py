"""Fast, cached MIG geometry for the simulator.

A GPU's occupancy is a sorted tuple of ``(start, size, profile_id)`` slots (the fields of
``slurm_gpu.core.geometry.Slot``). Every answer here is a pure function of ``(model, slots)`` and is memoised,
so a replay of 100,000 jobs sees only a few thousand distinct GPU states. The validity rules are the
contract's (docs/CONTRACTS.md, geometry): aligned start, no overlap, per-profile ``max_instances``, compute
slices, ``max_gpu_instances``, ``+me.all`` exclusive except ``-me``; tests check them against the planner.

Requests are *keys* shared by the whole cluster (a profile name such as ``3g.40gb``, or ``gpu`` for a whole
GPU); each model maps a key to its own profile, so mixed clusters need no special case.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

from slurm_gpu.core.catalog import GpuModel, Profile

__all__ = ["GpuSlots", "ModelTable", "WHOLE_GPU"]

GpuSlots = Tuple[Tuple[int, int, int], ...]
WHOLE_GPU = "gpu"  # request key of a whole-GPU request: the model's full profile


class ModelTable:
    """One GPU model's geometry with memoised per-GPU answers, indexed by cluster-wide request keys."""

    def __init__(self, model: GpuModel, keys: Sequence[str]):
        self.model = model
        self.keys = tuple(keys)
        self.total_slices = model.memory_slices_total
        self.profiles: List[Optional[Profile]] = [self._resolve(k) for k in self.keys]
        self._by_id = {p.profile_id: p for p in model.profiles}
        self._base = model.base_profiles()
        self._cap: Dict[GpuSlots, Tuple[int, ...]] = {}
        self._value: Dict[GpuSlots, int] = {}
        self._starts: Dict[Tuple[GpuSlots, int], Tuple[int, ...]] = {}
        self._best: Dict[Tuple[GpuSlots, int], Optional[Tuple[int, GpuSlots, int]]] = {}

    def _resolve(self, key: str) -> Optional[Profile]:
        if key == WHOLE_GPU:
            return self.model.full_profile()
        if self.model.has_profile(key):
            return self.model.profile(key)
        if key.endswith("gb") and key[:-2].isdigit():  # memory-sized: the request module's rule
            from slurm_gpu.core.errors import RequestError
            from slurm_gpu.core.requests import parse_gres, resolve

            try:
                return resolve(parse_gres(f"gpu:{key}")[0], self.model)
            except RequestError:
                return None  # no profile of this model holds it
        return None

    # -- validity ---------------------------------------------------------------------------------------
    def free_starts(self, slots: GpuSlots, profile: Profile) -> Tuple[int, ...]:
        """Placement starts where one more instance of ``profile`` is valid now."""
        cache_key = (slots, profile.profile_id)
        found = self._starts.get(cache_key)
        if found is None:
            found = self._compute_starts(slots, profile)
            self._starts[cache_key] = found
        return found

    def _compute_starts(self, slots: GpuSlots, profile: Profile) -> Tuple[int, ...]:
        model = self.model
        if len(slots) >= model.max_gpu_instances:
            return ()
        used_compute = 0
        same = 0
        for _, _, pid in slots:
            other = self._by_id[pid]
            used_compute += other.compute_slices
            if pid == profile.profile_id:
                same += 1
            # +me.all owns the media engines: it shares the GPU only with -me profiles
            if other.variant == "+me.all" and profile.variant != "-me":
                return ()
            if profile.variant == "+me.all" and other.variant != "-me":
                return ()
        if (
            same >= profile.max_instances
            or used_compute + profile.compute_slices > model.compute_slices_total
        ):
            return ()
        starts = []
        for start, size in profile.placements:
            end = start + size
            if all(end <= s or start >= s + z for s, z, _ in slots):
                starts.append(start)
        return tuple(starts)

    @staticmethod
    def add(slots: GpuSlots, start: int, profile: Profile) -> GpuSlots:
        return tuple(sorted(slots + ((start, profile.memory_slices, profile.profile_id),)))

    @staticmethod
    def remove(slots: GpuSlots, start: int) -> GpuSlots:
        return tuple(s for s in slots if s[0] != start)

    # -- capacity ---------------------------------------------------------------------------------------
    def capacity(self, slots: GpuSlots) -> Tuple[int, ...]:
        """For each request key: how many more instances of it alone fit on this GPU now."""
        found = self._cap.get(slots)
        if found is None:
            found = tuple(0 if p is None else self._max_more(slots, p) for p in self.profiles)
            self._cap[slots] = found
        return found

    def _max_more(self, slots: GpuSlots, profile: Profile) -> int:
        best = 0
        for start in self.free_starts(slots, profile):
            best = max(best, 1 + self._max_more(self.add(slots, start, profile), profile))
            if best >= len(self.free_starts(slots, profile)):
                break  # cannot do better than one instance per free start
        return best

    def value(self, slots: GpuSlots) -> int:
        """Fragmentation score: memory slices of every base profile that still fits alone (higher: better)."""
        found = self._value.get(slots)
        if found is None:
            found = sum(self._max_more(slots, p) * p.memory_slices for p in self._base)
            self._value[slots] = found
        return found

    def best_start(self, slots: GpuSlots, key_index: int) -> Optional[Tuple[int, GpuSlots, int]]:
        """Best start for one instance of request ``key_index``: ``(start, new_slots, value_after)`` or None.

        Keeps as much future capacity as possible (the planner's principle); ties go to the lowest start.
        """
        cache_key = (slots, key_index)
        if cache_key in self._best:
            return self._best[cache_key]
        profile = self.profiles[key_index]
        best = None
        if profile is not None:
            for start in self.free_starts(slots, profile):
                after = self.add(slots, start, profile)
                score = self.value(after)
                if best is None or score > best[2]:
                    best = (start, after, score)
        self._best[cache_key] = best
        return best

    def used_slices(self, slots: GpuSlots) -> int:
        return sum(z for _, z, _ in slots)

    def layouts(self, key_indexes: Sequence[int]) -> List[GpuSlots]:
        """Every maximal layout of one GPU made of the given request keys (distinct profile multisets)."""
        profiles = []
        for k in key_indexes:
            p = self.profiles[k]
            if p is not None and p not in profiles:
                profiles.append(p)
        seen: Dict[Tuple[int, ...], GpuSlots] = {}

        def walk(slots: GpuSlots, min_start: int) -> None:
            grown = False
            for p in profiles:
                for start in self.free_starts(slots, p):
                    grown = True
                    if start >= min_start:
                        walk(self.add(slots, start, p), start)
            if not grown and slots:
                seen.setdefault(tuple(sorted(pid for _, _, pid in slots)), slots)

        walk((), 0)
        return list(seen.values())
