"""The ``static`` policy: fixed MIG layouts per GPU, as sites run MIG with Slurm today.

Jobs take a free instance of their exact profile (typed gres); they never misfit but wait for a slot of
their size. The layout comes from ``--layout`` or from :func:`best_static_layouts` for the trace's mix.
The MIG rules are not restated here: a ``--layout`` is placed by the planner, the candidate layouts are
enumerated with ``slurm_gpu.core.geometry``; once made, the instances are only counted.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple

from slurm_gpu.core.catalog import GpuModel, Profile
from slurm_gpu.core.errors import BadInputError, NoFitError
from slurm_gpu.core.geometry import GpuState
from slurm_gpu.core.slotplan import plan_slots
from slurm_gpu.simulate.base import Policy
from slurm_gpu.simulate.slots import GpuSlots, ModelTable
from slurm_gpu.simulate.state import SimJob, SimNode

__all__ = ["StaticPolicy", "layouts_from_text", "best_static_layouts", "maximal_layouts"]


class StaticPolicy(Policy):
    """Fixed layouts: ``layouts[node][gpu]`` is the GPU's slot tuple, made once; jobs take free instances."""

    name = "static"
    creates_instances = False  # the instances exist: nothing to create or destroy per job

    def __init__(self, layout: Optional[str] = None):
        self.layout_text = layout
        self.layouts: List[List[GpuSlots]] = []
        self._views: Dict[Tuple[GpuSlots, GpuSlots], Tuple[int, int, int, int]] = {}

    def prepare(self, nodes: List[SimNode], jobs: Sequence[SimJob]) -> None:
        if not self.layouts:
            if self.layout_text is not None:
                self.layouts = layouts_from_text(self.layout_text, nodes)
            elif jobs:
                demand: Dict[int, float] = {}
                needs: Dict[int, Dict[int, int]] = {}  # key -> {count per node: nodes}
                for job in jobs:
                    if Policy.why_never(self, job) is not None:
                        continue  # no layout could run it: it must not shape the layout
                    demand[job.key] = demand.get(job.key, 0.0) + job.duration * job.count * job.nodes
                    per = needs.setdefault(job.key, {})
                    per[job.count] = max(per.get(job.count, 0), job.nodes)
                self.layouts = best_static_layouts(nodes, demand, needs)
            else:
                raise BadInputError("static policy needs --layout or a trace to choose one from",
                                    part="static")
        # free instances per node and profile id: [(gpu, start), ...]
        self.free: List[Dict[int, List[Tuple[int, int]]]] = []
        for per_gpu in self.layouts:
            free: Dict[int, List[Tuple[int, int]]] = {}
            for g, slots in enumerate(per_gpu):
                for start, _size, pid in slots:
                    free.setdefault(pid, []).append((g, start))
            self.free.append(free)

    def _pid(self, node: SimNode, key: int) -> int:
        p = node.table.profiles[key]
        return -1 if p is None else p.profile_id

    def why_never(self, job: SimJob) -> Optional[str]:
        base = super().why_never(job)
        if base is not None:
            return base
        ok = sum(1 for n, free in zip(self.nodes, self.free)
                 if len(free.get(self._pid(n, job.key), ())) >= job.count)
        if ok >= job.nodes:
            return None
        p = self.nodes[0].table.profiles[job.key]
        name = p.name if p is not None else self.keys[job.key]
        return f"the static layout has {ok} nodes with {job.count} x {name}; the job needs {job.nodes}"

    def describe(self) -> Optional[List[Dict[str, Any]]]:
        counts: Dict[Tuple[str, str], int] = {}
        for node, per_gpu in zip(self.nodes, self.layouts):
            model = node.table.model
            for slots in per_gpu:
                text = ",".join(model.profile_by_id(pid).name for _, _, pid in sorted(slots)) or "(empty)"
                counts[(model.key, text)] = counts.get((model.key, text), 0) + 1
        ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return [{"model": m, "layout": text, "gpus": n} for (m, text), n in ordered]

    def free_view(self, node: SimNode) -> Iterator[Tuple[int, int, int, int]]:
        """Free: idle instances and unpartitioned slices; stranded compute: what the fixed layout leaves
        unpartitioned (no instance is ever made there); lost memory: free memory beyond the largest
        idle instance."""
        model = node.table.model
        memo = self._views
        for layout, used in zip(self.layouts[node.index], node.gpus):
            found = memo.get((layout, used))
            if found is None:
                c_total, m_total = model.compute_slices_total, model.memory_slices_total
                busy = set(used)
                made_c = sum(model.profile_by_id(pid).compute_slices for _, _, pid in layout)
                used_c = sum(model.profile_by_id(pid).compute_slices for _, _, pid in used)
                free_m = m_total - sum(z for _, z, _ in used)
                idle = max((z for slot in layout if slot not in busy for _, z, _ in (slot,)), default=0)
                found = memo[(layout, used)] = (c_total - used_c, c_total - made_c, free_m, free_m - idle)
            yield found

    def allocate(self, job: SimJob, exclude: Set[int]) -> Optional[List[int]]:
        chosen = []
        for node, free in zip(self.nodes, self.free):
            if node.index not in exclude and len(free.get(self._pid(node, job.key), ())) >= job.count:
                chosen.append(node.index)
                if len(chosen) == job.nodes:
                    break
        if len(chosen) < job.nodes:
            return None
        job.alloc = []
        for n in chosen:
            pool = self.free[n][self._pid(self.nodes[n], job.key)]
            taken, pool[:] = pool[: job.count], pool[job.count :]
            job.alloc.append((n, taken))
        return chosen

    def prolog(self, job: SimJob, nodes: List[int]) -> bool:
        # the instances exist already; mark them used on the real state for the invariant checks
        for n, taken in job.alloc:
            node = self.nodes[n]
            p = node.table.profiles[job.key]
            assert p is not None  # noqa: S101 - allocate found instances of it
            for g, start in taken:
                node.set_gpu(g, node.table.add(node.gpus[g], start, p))
        return True

    def release(self, job: SimJob) -> None:
        for n, taken in job.alloc:
            pool = self.free[n][self._pid(self.nodes[n], job.key)]
            pool.extend(taken)
            pool.sort()
        super().release(job)

    def fit_after_ends(self, node: SimNode, job: SimJob, ending: Sequence[SimJob]) -> int:
        pid = self._pid(node, job.key)
        free = len(self.free[node.index].get(pid, ()))
        for i, other in enumerate(ending, 1):
            for n, taken in other.alloc:
                if n == node.index and self._pid(node, other.key) == pid:
                    free += len(taken)
            if free >= job.count:
                return i
        return 0


def layouts_from_text(text: str, nodes: Sequence[SimNode]) -> List[List[GpuSlots]]:
    """``3g.40gb,3g.40gb`` (every GPU) or ``4g.40gb,3g.40gb;1g.10gb*7`` (GPUs take the layouts in turn);
    ``full`` is each model's full-size profile (whole GPUs, as without MIG).

    Instances are placed one by one by the planner (the agent's placement), so a layout that cannot
    exist is refused.
    """
    gpu_layouts = [part.strip() for part in text.split(";") if part.strip()]
    if not gpu_layouts:
        raise BadInputError("empty --layout", part=text)
    out: List[List[GpuSlots]] = []
    turn = 0
    for node in nodes:
        table: ModelTable = node.table
        per_gpu = []
        for _ in node.gpus:
            spec = gpu_layouts[turn % len(gpu_layouts)]
            turn += 1
            slots: GpuSlots = ()
            for item in spec.split(","):
                name, _, times = item.strip().partition("*")
                if name == "full":  # one instance of the model's full-size profile: a whole GPU
                    name = table.model.full_profile().name
                if not table.model.has_profile(name):
                    raise BadInputError(
                        f"layout {spec!r}: no profile {name!r} on {table.model.key}", part=name
                    )
                for _ in range(int(times or 1)):
                    placed = _place_one(table, slots, name)
                    if placed is None:
                        raise BadInputError(f"layout {spec!r} does not fit one {table.model.key}", part=spec)
                    slots = placed
            per_gpu.append(slots)
        out.append(per_gpu)
    return out


def _place_one(table: ModelTable, slots: GpuSlots, name: str) -> Optional[GpuSlots]:
    """One more ``name`` on a GPU, where the planner puts it; None when it does not fit."""
    try:
        [inst] = plan_slots(table.model, [(0, slots)], name, 1)
    except NoFitError:
        return None
    return table.add(slots, inst.start, table.model.profile_by_id(inst.profile_id))


def maximal_layouts(model: GpuModel, profiles: Sequence[Profile]) -> List[GpuSlots]:
    """Every maximal layout of one GPU made of ``profiles`` (one per distinct profile multiset), by the
    rules of ``slurm_gpu.core.geometry``: nothing of ``profiles`` can be added to it."""
    profiles = list(dict.fromkeys(profiles))
    seen: Dict[Tuple[int, ...], GpuSlots] = {}

    def walk(gpu: GpuState, min_start: int) -> None:
        grown = False
        for p in profiles:
            for start in gpu.free_starts(p):
                grown = True
                if start >= min_start:
                    walk(gpu.place(p, start), start)
        if not grown and gpu.slots:
            slots = tuple((s.start, s.size, s.profile_id) for s in gpu.slots)
            seen.setdefault(tuple(sorted(pid for _, _, pid in slots)), slots)

    walk(GpuState(0, model), 0)
    return list(seen.values())


Candidates = Dict[str, List[Tuple[GpuSlots, Dict[int, int]]]]


Option = Tuple[GpuSlots, Dict[int, int]]


def _candidates(table: ModelTable, keys: Sequence[int], cache: Candidates) -> List[Option]:
    """The model's maximal layouts of the keys' profiles, each with its instance count per key."""
    if table.model.key not in cache:
        known = {k: p for k in keys for p in (table.profiles[k],) if p is not None}
        options = []
        for slots in maximal_layouts(table.model, list(known.values())):
            counts = {k: sum(1 for _, _, pid in slots if pid == p.profile_id) for k, p in known.items()}
            options.append((slots, counts))
        cache[table.model.key] = options
    return cache[table.model.key]


def best_static_layouts(
    nodes: Sequence[SimNode], demand: Dict[int, float], needs: Optional[Dict[int, Dict[int, int]]] = None
) -> List[List[GpuSlots]]:
    """The static layout today's practice would pick for a profile mix: instance-seconds ``demand`` per key.

    Greedy leximin: GPU after GPU, take the maximal layout that most raises the worst ratio of instances
    to demand; successive choices go to different nodes so every node gets a mix. Then ``needs`` (per key,
    ``{instances per node: nodes}``, e.g. a ``gpu:8`` job) is met where the nodes can hold it: an admin
    whose users run 8-GPU jobs keeps nodes for them, so enough nodes are given layouts rich in that key.
    """
    keys = sorted(k for k, d in demand.items() if d > 0)
    have = {k: 0.0 for k in keys}
    out: List[List[GpuSlots]] = [[()] * len(n.gpus) for n in nodes]
    cache: Candidates = {}
    order = [
        (g, node) for g in range(max(len(n.gpus) for n in nodes)) for node in nodes if g < len(node.gpus)
    ]
    for g, node in order:
        table = node.table
        best = None
        best_rank = None
        for slots, counts in _candidates(table, keys, cache):
            ratios = sorted((have[k] + counts.get(k, 0)) / demand[k] for k in keys)
            rank = (ratios, table.used_slices(slots), slots)
            if best_rank is None or rank > best_rank:
                best, best_rank = (slots, counts), rank
        if best is None:
            continue
        out[node.index][g] = best[0]
        for k, c in best[1].items():
            have[k] += c
    _meet_needs(nodes, out, keys, needs or {}, cache)
    return out


def _count(node: SimNode, per_gpu: Sequence[GpuSlots], key: int) -> int:
    p = node.table.profiles[key]
    return 0 if p is None else sum(1 for slots in per_gpu for _, _, pid in slots if pid == p.profile_id)


def _meet_needs(
    nodes: Sequence[SimNode],
    out: List[List[GpuSlots]],
    keys: Sequence[int],
    needs: Dict[int, Dict[int, int]],
    cache: Candidates,
) -> None:
    """Rewrite GPUs so that, per key and count, enough nodes hold that many instances; largest counts
    first, and a node rewritten for one need is left to it. Needs no node could hold are left alone
    (the policy then rejects those jobs with the reason)."""
    taken: Set[int] = set()
    wants = sorted(((c, m, k) for k, per in needs.items() for c, m in per.items() if c > 1), reverse=True)
    for count, n_nodes, key in wants:
        ranked = sorted(
            (n for n in nodes if n.index not in taken), key=lambda n: (-_count(n, out[n.index], key), n.index)
        )
        met = [n for n in ranked if _count(n, out[n.index], key) >= count]
        for node in ranked:
            if len(met) >= n_nodes:
                break
            if node in met:
                continue
            options = _candidates(node.table, keys, cache)
            richest = max(options, key=lambda o: (o[1].get(key, 0), node.table.used_slices(o[0])),
                          default=None)
            if richest is None or richest[1].get(key, 0) == 0:
                break
            per_gpu = out[node.index]
            for g in sorted(range(len(per_gpu)), key=lambda i: _count(node, [per_gpu[i]], key)):
                if _count(node, per_gpu, key) >= count:
                    break
                per_gpu[g] = richest[0]
            if _count(node, per_gpu, key) >= count:
                met.append(node)
                taken.add(node.index)
