"""Exact feasibility of several profiles at once (slurm_gpu.core.packing), against the brute-force oracle
of tests/mig_oracle.py: per GPU the maximal packings, per node the whole demand."""

from __future__ import annotations

import itertools
import random
import time
from typing import Dict, List, Tuple

from hypothesis import given, settings
from hypothesis import strategies as st
from mig_oracle import addable_multisets

from slurm_gpu.core import planner
from slurm_gpu.core.catalog import load_catalog
from slurm_gpu.core.errors import NoFitError
from slurm_gpu.core.geometry import NodeState
from slurm_gpu.core.packing import maximal_packings
from slurm_gpu.core.target import choose_target

CATALOG = load_catalog()
MODELS = ("H100-80GB", "A100-40GB", "A30-24GB")


def _node(model: str, gpus: int, seed: int, fill: int) -> NodeState:
    rng = random.Random(seed)
    node = NodeState.empty(CATALOG.model(model), gpus)
    names = [p.name for p in CATALOG.model(model).profiles]
    for _ in range(fill):
        try:
            for p in planner.plan(node, rng.choice(names), 1):
                node = node.place(p.gpu_index, p.profile_name, p.start)
        except NoFitError:
            continue
    return node


def _existing(node: NodeState, i: int) -> List[Tuple[object, int]]:
    g = node.gpus[i]
    return [(g.model.profile_by_id(s.profile_id), s.start) for s in g.slots]


def _oracle_sets(node: NodeState, i: int, names: List[str]) -> set:
    model = node.gpus[i].model
    return addable_multisets(model, _existing(node, i), [model.profile(n) for n in names])


@settings(max_examples=40, deadline=None)
@given(model=st.sampled_from(MODELS), seed=st.integers(0, 10_000), fill=st.integers(0, 3),
       k=st.integers(1, 3))
def test_maximal_packings_are_the_oracles(model: str, seed: int, fill: int, k: int) -> None:
    node = _node(model, 1, seed, fill)
    rng = random.Random(seed)
    names = sorted(rng.sample([p.name for p in CATALOG.model(model).profiles if p.memory_slices <= 4], k))
    g = planner._node_gpus(node)[0][1]
    ps = tuple(g.m.by_name[n] for n in names)
    got = maximal_packings(g, ps)
    every = {tuple(ms.count(n) for n in names) for ms in _oracle_sets(node, 0, names)}
    maximal = {v for v in every if not any(w != v and all(a >= b for a, b in zip(w, v)) for w in every)}
    assert set(got) == maximal


@settings(max_examples=40, deadline=None)
@given(model=st.sampled_from(MODELS), seed=st.integers(0, 10_000), fill=st.integers(0, 4))
def test_a_demand_fits_the_node_exactly_when_the_oracle_finds_a_split(model: str, seed: int,
                                                                      fill: int) -> None:
    node = _node(model, 2, seed, fill)
    rng = random.Random(seed * 3 + 1)
    names = sorted(rng.sample([p.name for p in CATALOG.model(model).base_profiles()], 2))
    per_gpu = [_oracle_sets(node, i, names) for i in range(2)]
    for counts in itertools.product(range(4), repeat=2):
        demand: Dict[str, int] = {n: c for n, c in zip(names, counts) if c}
        expected = any(
            tuple(sorted(sum(([n] * a for n, a in zip(names, split)), []))) in per_gpu[0]
            and tuple(sorted(sum(([n] * (c - a) for n, c, a in zip(names, counts, split)), []))) in per_gpu[1]
            for split in itertools.product(*(range(c + 1) for c in counts))
        )
        assert planner.fits_counts(node, demand) == expected, demand


def test_a_mixed_queue_on_eight_gpus_is_planned_in_milliseconds() -> None:
    """The case that took seconds per re-plan when every split of the demand was tried per GPU."""
    node = NodeState.empty(CATALOG.model("H100-80GB"), 8)
    queue = [("1g.10gb", 1), ("3g.40gb", 1), ("2g.20gb", 2), ("1g.20gb", 1), ("4g.40gb", 1),
             ("7g.80gb", 1)] * 6
    planner.clear_caches()
    t0 = time.process_time()
    counts = choose_target(node, {}, queue)
    spent = time.process_time() - t0
    assert planner.fits_counts(node, counts)
    assert counts["7g.80gb"] >= 1 and counts["1g.10gb"] >= 1
    assert spent < 2.0, f"{spent:.2f} s"  # about 0.1 s here; the old walk took over 5 minutes


def test_a_profile_shared_by_two_requests_serves_both() -> None:
    """On a mixed node ``gpu:20gb`` is a 3g.20gb on the A100-40GB and a 1g.20gb on the H100, which
    ``gpu:1g.20gb`` asks for too: the H100's four 1g.20gb are shared between the two requests."""
    from slurm_gpu.core.geometry import GpuState
    from slurm_gpu.core.requests import parse_gres

    node = NodeState((GpuState(0, CATALOG.model("A100-40GB")), GpuState(1, CATALOG.model("H100-80GB"))))
    got = planner.plan_request(node, parse_gres("gpu:1g.20gb:2,gpu:20gb:4"))
    assert sorted((i.gpu_index, i.profile_name) for i in got) == [(0, "3g.20gb")] * 2 + [(1, "1g.20gb")] * 4
    for n in (5, 6):
        try:
            planner.plan_request(node, parse_gres(f"gpu:1g.20gb:2,gpu:20gb:{n}"))
        except NoFitError:
            continue
        raise AssertionError(f"gpu:20gb:{n} cannot fit beside gpu:1g.20gb:2")
