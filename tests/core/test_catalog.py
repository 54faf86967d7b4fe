"""The packaged catalog: reference values, and agreement with recorded nvidia-smi outputs."""

from pathlib import Path

import pytest

from slurm_gpu.core.catalog import load_catalog
from slurm_gpu.core.errors import BadInputError
from slurm_gpu.core.nvsmi import (
    NvsmiProfile,
    compare_with_catalog,
    parse_lgip,
    parse_lgipp,
    profiles_from_nvsmi,
)

CAT = load_catalog()
FIXTURES = Path(__file__).parents[1] / "fixtures" / "nvidia-smi"
EIGHT_SLICE = ["A100-40GB", "A100-80GB", "H100-80GB", "H100-NVL-94GB", "GH200-96GB", "GH200-144GB",
               "H200-141GB", "B200-180GB", "GB200-186GB", "GB300-278GB", "B300-269GB", "H20-96GB",
               "PG506-96GB", "H20-3e-141GB"]


def read_fixture(path: Path) -> str:
    """The recorded text without the comment lines that name its source."""
    return "\n".join(line for line in path.read_text().splitlines() if not line.startswith("#"))


def test_h100_profile_ids_and_reference_placements():
    h100 = CAT.model("H100-80GB")
    assert [p.profile_id for p in h100.profiles] == [19, 20, 15, 14, 9, 5, 0]
    placements = {p.name: p.placements for p in h100.profiles}
    assert placements == {
        "1g.10gb": tuple((s, 1) for s in range(7)),
        "1g.10gb+me": tuple((s, 1) for s in range(7)),
        "1g.20gb": ((0, 2), (2, 2), (4, 2), (6, 2)),
        "2g.20gb": ((0, 2), (2, 2), (4, 2)),
        "3g.40gb": ((0, 4), (4, 4)),
        "4g.40gb": ((0, 4),),
        "7g.80gb": ((0, 8),),
    }
    assert (h100.compute_slices_total, h100.memory_slices_total, h100.max_gpu_instances) == (7, 8, 7)
    assert h100.full_profile().name == "7g.80gb"


@pytest.mark.parametrize("key", EIGHT_SLICE)
def test_eight_slice_models_share_the_geometry(key):
    model = CAT.model(key)
    by_id = {p.profile_id: p for p in model.profiles}
    assert set(by_id) == {19, 20, 15, 14, 9, 5, 0}
    shape = {pid: (p.compute_slices, p.memory_slices, p.max_instances, p.placement_starts)
             for pid, p in by_id.items()}
    assert shape == {
        19: (1, 1, 7, (0, 1, 2, 3, 4, 5, 6)),
        20: (1, 1, 1, (0, 1, 2, 3, 4, 5, 6)),
        15: (1, 2, 4, (0, 2, 4, 6)),
        14: (2, 2, 3, (0, 2, 4)),
        9: (3, 4, 2, (0, 4)),
        5: (4, 4, 1, (0,)),
        0: (7, 8, 1, (0,)),
    }
    # memory grows with the memory slices, and names agree with the model's size class
    mem = [by_id[i].usable_memory_mib for i in (19, 15, 9, 0)]
    assert mem == sorted(mem)


def test_a30_and_rtx_pro():
    a30 = CAT.model("A30-24GB")
    assert {p.name: (p.profile_id, p.placement_starts) for p in a30.profiles} == {
        "1g.6gb": (14, (0, 1, 2, 3)),
        "1g.6gb+me": (21, (0, 1, 2, 3)),
        "2g.12gb": (5, (0, 2)),
        "2g.12gb+me": (6, (0, 2)),
        "4g.24gb": (0, (0,)),
    }
    rtx = CAT.model("RTX-PRO-6000-Blackwell-96GB")
    assert (rtx.compute_slices_total, rtx.memory_slices_total) == (4, 12)
    assert rtx.profile("2g.48gb").placements == ((0, 6), (6, 6))
    assert rtx.profile("1g.24gb+me.all").variant == "+me.all"


def test_every_placement_lies_within_the_gpu():
    for model in CAT.models:
        for p in model.profiles:
            assert p.placements, (model.key, p.name)
            for start, size in p.placements:
                assert size == p.memory_slices
                assert 0 <= start and start + size <= model.memory_slices_total, (model.key, p.name)
            assert p.compute_slices <= model.compute_slices_total
            assert p.max_instances <= len(p.placements)


# --- recorded nvidia-smi outputs -----------------------------------------------------------------------
LGIP = sorted(FIXTURES.glob("*.lgip.txt"))


def test_fixtures_exist_and_name_their_source():
    assert len(LGIP) >= 5
    for path in FIXTURES.iterdir():
        first = path.read_text().splitlines()[0]
        assert first.startswith("# source: http"), path.name


@pytest.mark.parametrize("path", LGIP, ids=lambda p: p.name)
def test_catalog_agrees_with_recorded_lgip(path):
    key = path.name.split(".lgip")[0]
    model = CAT.model(key)
    lgipp_path = path.with_name(f"{key}.lgipp.txt")
    lgipp = read_fixture(lgipp_path) if lgipp_path.exists() else None
    text = read_fixture(path)
    gpus = sorted({r.gpu for r in parse_lgip(text)})  # an excerpt may quote rows of several GPUs
    seen = 0
    for gpu in gpus:
        profiles = profiles_from_nvsmi(text, lgipp, gpu=gpu)
        seen += len(profiles)
        assert compare_with_catalog(model, profiles) == [], gpu
        if lgipp:
            assert all(p.placements for p in profiles)
    assert seen >= 3


def test_a30_lgip_fields_parsed():
    rows = parse_lgip(read_fixture(FIXTURES / "A30-24GB.lgip.txt"))
    assert [(r.name, r.profile_id, r.free, r.total, r.memory_gib) for r in rows] == [
        ("1g.6gb", 14, 0, 4, 5.81),
        ("1g.6gb+me", 21, 0, 1, 5.81),
        ("2g.12gb", 5, 0, 2, 11.69),
        ("4g.24gb", 0, 0, 1, 23.50),
    ]
    assert [(r.multiprocessors, r.ce, r.jpeg, r.ofa) for r in rows][1] == (14, 1, 1, 1)
    placements = parse_lgipp(read_fixture(FIXTURES / "A30-24GB.lgipp.txt"))
    assert placements[(0, 5)] == ((0, 2), (2, 2))
    assert placements[(0, 0)] == ((0, 4),)


def test_comparison_reports_differences():
    h100 = CAT.model("H100-80GB")
    wrong = (
        NvsmiProfile("1g.10gb", 19, 7, 9.75, ((0, 1),)),  # placements differ
        NvsmiProfile("3g.40gb", 8, 2, 39.5, ()),  # id differs
        NvsmiProfile("4g.40gb", 5, 1, 30.0, ()),  # memory differs beyond 2 %
        NvsmiProfile("9g.99gb", 99, 1, 99.0, ()),  # unknown
    )
    diffs = compare_with_catalog(h100, wrong)
    assert len(diffs) == 4
    assert any("placements" in d for d in diffs) and any("9g.99gb" in d for d in diffs)


def test_parsers_refuse_text_without_data():
    with pytest.raises(BadInputError):
        parse_lgip("No MIG-enabled devices found.")
    with pytest.raises(BadInputError):
        parse_lgipp("")
