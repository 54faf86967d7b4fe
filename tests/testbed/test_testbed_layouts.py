"""Static layouts of the local test cluster, placed by the planner, against the first-fit loop they replace.

``tests/cluster/test_cluster_static.py`` checks a static cluster on real Slurm daemons; here, without
daemons, the files such a cluster is configured from are compared for the layouts it uses: the typed
gres, their GI/CI ids and their capability files must be what the first-fit loop produced. Only the
placements move, to where the planner leaves room (e.g. a 4g.40gb or a further 1g.10gb).
"""

from __future__ import annotations

import functools
import os
import stat
from typing import Any, List, Tuple

import pytest

from slurm_gpu.core.catalog import load_catalog
from slurm_gpu.core.errors import BadInputError, UnknownProfileError
from slurm_gpu.core.geometry import GpuState, NodeState, Slot
from slurm_gpu.core.planner import capacity
from slurm_gpu.devices.open import open_driver
from slurm_gpu.devices.simstate import init_state
from slurm_gpu.testbed import files, layouts
from slurm_gpu.testbed.spec import ClusterSpec, node_names

# The layouts test_cluster_static.py (and docs/cluster.md) start clusters with: (gpus, layout).
CLUSTER_LAYOUTS = [("H100-80GB:2", "3g.40gb,2g.20gb,1g.10gb")]

# Output of the first-fit apply_layout this module replaced, recorded on those layouts before the
# change: (gpu, profile id, start, size, gi_id, ci_id) per instance, in creation order.
RECORDED_FIRST_FIT = {
    "3g.40gb,2g.20gb,1g.10gb": [
        (0, 9, 0, 4, 1, 0), (0, 14, 4, 2, 2, 0), (0, 19, 6, 1, 3, 0),
        (1, 9, 0, 4, 1, 0), (1, 14, 4, 2, 2, 0), (1, 19, 6, 1, 3, 0),
    ],
}
# What the planner makes instead: the 3g.40gb at 4 keeps slices 0-3 for a 4g.40gb as long as possible,
# and the finished layout leaves slice 3 (usable by a 1g.10gb) free rather than slice 7 (usable by none).
PLANNED = {
    "3g.40gb,2g.20gb,1g.10gb": [
        (0, 9, 4, 4, 1, 0), (0, 14, 0, 2, 2, 0), (0, 19, 2, 1, 3, 0),
        (1, 9, 4, 4, 1, 0), (1, 14, 0, 2, 2, 0), (1, 19, 2, 1, 3, 0),
    ],
}


def first_fit(driver: Any, layout: str) -> List[Any]:
    """The replaced loop, verbatim: every profile of the layout at its first non-overlapping placement."""
    catalog = load_catalog()
    made = []
    for gpu in driver.gpus():
        model = catalog.model(gpu.model)
        used = [(i.start, i.end) for i in driver.instances(gpu.index)]
        for name in (x.strip() for x in layout.split(",") if x.strip()):
            profile = model.profile(name)
            start = next((s for s, z in profile.placements
                          if all(s + z <= a or s >= b for a, b in used)), None)
            if start is None:
                raise BadInputError(f"layout {layout!r}: no room for {name} on GPU {gpu.index} ({model.key})",
                                    part=name)
            inst = driver.create(gpu.index, profile.profile_id, start)
            used.append((inst.start, inst.end))
            made.append(inst)
    return made


def _driver(tmp_path, gpus: List[Tuple[str, int]], name: str = "gpus.json") -> Any:
    state = str(tmp_path / name)
    init_state(state, gpus, allow_unprivileged=True)
    return open_driver("sim", sim_state=state)


def _table(made: List[Any]) -> List[Tuple[int, ...]]:
    return [(i.gpu_index, i.profile_id, i.start, i.size, i.gi_id, i.ci_id) for i in made]


def _gpus(spec_text: str) -> List[Tuple[str, int]]:
    model, _, count = spec_text.partition(":")
    return [(model, int(count or 1))]


@pytest.mark.parametrize(("gpus", "layout"), CLUSTER_LAYOUTS)
def test_recording_is_what_the_first_fit_loop_makes(tmp_path, gpus, layout):
    with _driver(tmp_path, _gpus(gpus)) as driver:
        assert _table(first_fit(driver, layout)) == RECORDED_FIRST_FIT[layout]


@pytest.mark.parametrize(("gpus", "layout"), CLUSTER_LAYOUTS)
def test_planned_layout_has_the_same_instances_and_ids_as_first_fit(tmp_path, gpus, layout):
    with _driver(tmp_path, _gpus(gpus)) as driver:
        made = _table(layouts.apply_layout(driver, layout))
    assert made == PLANNED[layout]
    old = RECORDED_FIRST_FIT[layout]
    # same GPUs, profiles, sizes, GI and CI ids, in the same (layout) order: only the starts differ
    def without_start(table: List[Tuple[int, ...]]) -> List[Tuple[int, ...]]:
        return [row[:2] + row[3:] for row in table]

    assert without_start(made) == without_start(old)


@pytest.mark.parametrize(("gpus", "layout"), CLUSTER_LAYOUTS)
def test_planned_layout_leaves_at_least_the_room_first_fit_left(tmp_path, gpus, layout):
    def room(driver: Any) -> dict:
        model = load_catalog().model(driver.gpus()[0].model)
        states = []
        for gpu in driver.gpus():
            slots = tuple(Slot(i.start, i.size, i.profile_id) for i in driver.instances(gpu.index))
            states.append(GpuState(gpu.index, model, slots))
        return capacity(NodeState(tuple(states)))

    with _driver(tmp_path, _gpus(gpus), "old.json") as old, _driver(tmp_path, _gpus(gpus), "new.json") as new:
        first_fit(old, layout)
        layouts.apply_layout(new, layout)
        before, after = room(old), room(new)
    assert all(after[name] >= before[name] for name in before)
    assert after["1g.10gb"] > before["1g.10gb"]


@pytest.mark.parametrize(("gpus", "layout"), CLUSTER_LAYOUTS)
def test_static_cluster_files_are_those_of_the_first_fit_layout(tmp_path, monkeypatch, gpus, layout):
    """gres.conf and the sandbox device files of a static cluster, as test_cluster_static.py reads them."""

    # the cluster runs as root; unprivileged here, the simulated driver is told to allow it
    monkeypatch.setattr(files, "init_state", functools.partial(init_state, allow_unprivileged=True))

    def configure(directory: str) -> Tuple[ClusterSpec, List[List[str]]]:
        spec = ClusterSpec(dir=directory, nodes=1, gpus=gpus, port_base=18000, mode="static", layout=layout)
        os.makedirs(directory)
        paths = files.write_config(spec)
        with open(paths["gres.conf"], encoding="utf-8") as fh:
            lines = [x.split() for x in fh if x.startswith("NodeName=")]
        return spec, lines

    new_spec, new = configure(str(tmp_path / "new"))
    monkeypatch.setattr(files, "apply_layout", first_fit)
    old_spec, old = configure(str(tmp_path / "old"))

    def comparable(lines: List[List[str]], spec: ClusterSpec) -> List[str]:
        # the cluster directory differs between the two runs, nothing else may
        return sorted(" ".join(f.replace(spec.dir, "<dir>") for f in line) for line in lines)

    assert comparable(new, new_spec) == comparable(old, old_spec)
    node = node_names(new_spec)[0]
    assert len(new) == 6
    types = sorted(dict(f.split("=", 1) for f in line)["Type"] for line in new)
    assert types == sorted(["1g.10gb", "2g.20gb", "3g.40gb"] * 2)
    for line in new:
        kv = dict(f.split("=", 1) for f in line)
        assert kv["NodeName"] == node
        caps = kv["MultipleFiles"].split(",")
        sandbox_dev = os.path.join(new_spec.dir, node, "sandbox", "dev")
        assert len(caps) == 3 and all(p.startswith(sandbox_dev) for p in caps)
        if os.geteuid() == 0:  # the simulator mknods them as root: what the cluster's jobs open
            assert all(stat.S_ISCHR(os.stat(p).st_mode) for p in caps)


def test_layout_is_made_in_its_own_order_so_gi_ids_follow_it(tmp_path):
    with _driver(tmp_path, [("H100-80GB", 1)]) as driver:
        made = layouts.apply_layout(driver, "1g.10gb, 3g.40gb")
    assert [(i.profile_id, i.gi_id) for i in made] == [(19, 1), (9, 2)]


def test_existing_instances_are_planned_around(tmp_path):
    with _driver(tmp_path, [("H100-80GB", 1)]) as driver:
        driver.create(0, 9, 4)  # a 3g.40gb at 4, made before
        made = layouts.apply_layout(driver, "3g.40gb")
    assert [(i.profile_id, i.start) for i in made] == [(9, 0)]


def test_layout_that_does_not_fit_names_the_gpu(tmp_path):
    with _driver(tmp_path, [("H100-80GB", 1)]) as driver:
        with pytest.raises(BadInputError, match=r"GPU 0 \(H100-80GB\)"):
            layouts.apply_layout(driver, "4g.40gb,4g.40gb")
        assert driver.instances() == []  # planned first: nothing is made on a refusal


def test_unknown_profile_is_refused(tmp_path):
    with _driver(tmp_path, [("H100-80GB", 1)]) as driver, pytest.raises(UnknownProfileError):
        layouts.apply_layout(driver, "1g.5gb")
