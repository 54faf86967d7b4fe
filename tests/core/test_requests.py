"""Parsing of gres request strings and their resolution to MIG profiles."""

import pytest

from slurm_gpu.core.catalog import load_catalog
from slurm_gpu.core.errors import BadInputError, RequestError
from slurm_gpu.core.requests import GresRequest, parse_gres, resolve

CAT = load_catalog()
H100 = CAT.model("H100-80GB")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1g.10gb", [("gpu", "1g.10gb", 1, None)]),
        ("1g.10gb:2", [("gpu", "1g.10gb", 2, None)]),
        ("gpu:3g.40gb:1", [("gpu", "3g.40gb", 1, None)]),
        ("gpu:3g.40gb", [("gpu", "3g.40gb", 1, None)]),
        ("gres:gpu:1g.10gb:2", [("gpu", "1g.10gb", 2, None)]),
        ("gres/gpu:1g.10gb:2", [("gpu", "1g.10gb", 2, None)]),
        ("gres/gpu:1g.10gb=2", [("gpu", "1g.10gb", 2, None)]),
        ("gpu:1g.10gb:2(IDX:3-4)", [("gpu", "1g.10gb", 2, None)]),
        ("gpu:1g.10gb:2(IDX:0,2),gpu:2g.20gb:1(IDX:5)",
         [("gpu", "1g.10gb", 2, None), ("gpu", "2g.20gb", 1, None)]),
        ("GPU:1G.10GB:3", [("gpu", "1g.10gb", 3, None)]),
        ("gpu", [("gpu", None, 1, None)]),
        ("gpu:2", [("gpu", None, 2, None)]),
        ("gres/gpu=2", [("gpu", None, 2, None)]),
        ("gres:gpu:4", [("gpu", None, 4, None)]),
        ("20gb", [("gpu", None, 1, 20480)]),
        ("gpu:20gb:1", [("gpu", None, 1, 20480)]),
        ("gpu:20gb:3", [("gpu", None, 3, 20480)]),
        ("gpu:mem=20G", [("gpu", None, 1, 20480)]),
        ("gpu:20480M", [("gpu", None, 1, 20480)]),
        ("gpu:20GiB", [("gpu", None, 1, 20480)]),
        ("gpu:1T", [("gpu", None, 1, 1024 * 1024)]),
        ("1g.24gb+me.all", [("gpu", "1g.24gb+me.all", 1, None)]),
        ("gpu:2g.48gb-me:2", [("gpu", "2g.48gb-me", 2, None)]),
        ("1g.10gb, 3g.40gb:2", [("gpu", "1g.10gb", 1, None), ("gpu", "3g.40gb", 2, None)]),
        ("gres:gpu:1g.10gb:1,gres:shard:2", [("gpu", "1g.10gb", 1, None), ("shard", None, 2, None)]),
    ],
)
def test_parse_forms(text, expected):
    got = parse_gres(text)
    assert [(r.name, r.type, r.count, r.min_memory_mib) for r in got] == expected
    assert all(isinstance(r, GresRequest) for r in got)


def test_raw_keeps_each_piece():
    reqs = parse_gres("gres:gpu:1g.10gb:2, 20gb")
    assert [r.raw for r in reqs] == ["gres:gpu:1g.10gb:2", "20gb"]


@pytest.mark.parametrize(
    "text, part",
    [
        ("", ""),
        ("   ", "   "),
        ("gpu:1g.10gb:0", "0"),
        ("gpu:1g.10gb:-1", "-1"),
        ("gpu:1g.10gb:1.5", "1.5"),
        ("1g.10gb:x", "x"),
        ("gpu:0", "0"),
        ("gpu:a100:2", "a100"),
        ("gpu:banana", "banana"),
        ("!!!", "!!!"),
        ("20", "20"),
        ("gpu:1g.10gb:2:3", "gpu:1g.10gb:2:3"),
        ("gpu::2", "gpu::2"),
        ("1g.10gb,,2g.20gb", ""),
        ("gpu:20b", "20b"),
        ("gpu:mem=512k", "mem=512k"),
        ("gpu:0gb", "0gb"),
        ("gpu:0m", "0m"),
        ("gpu:1k", "1k"),
        ("gpu:1023m", "1023m"),
    ],
)
def test_parse_errors_name_the_piece(text, part):
    with pytest.raises(RequestError) as info:
        parse_gres(text)
    assert info.value.part == part
    assert isinstance(info.value, BadInputError)


@pytest.mark.parametrize(
    "model, text, profile",
    [
        ("H100-80GB", "10gb", "1g.10gb"),  # 9984 MiB: the name says 10gb
        ("H100-80GB", "9gb", "1g.10gb"),
        ("H100-80GB", "11gb", "1g.20gb"),
        ("H100-80GB", "20gb", "1g.20gb"),  # 20096 MiB
        ("H100-80GB", "21gb", "3g.40gb"),
        ("H100-80GB", "40gb", "3g.40gb"),  # 3g.40gb and 4g.40gb have equal memory: fewer compute slices
        ("H100-80GB", "41gb", "7g.80gb"),
        ("H100-80GB", "gpu:mem=20000M", "1g.20gb"),
        ("H100-80GB", "80gb", "7g.80gb"),
        ("H200-141GB", "18gb", "1g.18gb"),  # 16384 MiB, but named 18gb
        ("H200-141GB", "16gb", "1g.18gb"),
        ("A100-40GB", "5gb", "1g.5gb"),
        ("A100-40GB", "6gb", "1g.10gb"),
        ("A30-24GB", "12gb", "2g.12gb"),
    ],
)
def test_memory_sized_resolve_to_smallest_base_profile(model, text, profile):
    m = CAT.model(model)
    (req,) = parse_gres(text)
    got = resolve(req, m)
    assert got.name == profile
    assert got.is_base


def test_memory_resolution_is_minimal_against_all_base_profiles():
    # independent check: no base profile with less memory would also hold the request
    for model in CAT.models:
        for gb in range(1, 200):
            (req,) = parse_gres(f"{gb}gb")
            try:
                got = resolve(req, model)
            except RequestError:
                assert all(p.usable_memory_mib < gb * 1024 * 0.98 and p.name_gb < gb
                           for p in model.base_profiles())
                continue
            assert got.usable_memory_mib >= gb * 1024 * 0.98 or got.name_gb >= gb
            for p in model.base_profiles():
                if p.usable_memory_mib < got.usable_memory_mib:
                    assert p.usable_memory_mib < gb * 1024 * 0.98 and p.name_gb < gb


def test_whole_gpu_resolves_to_full_profile():
    (req,) = parse_gres("gpu:2")
    assert resolve(req, H100).name == "7g.80gb"
    assert resolve(req, CAT.model("A30-24GB")).name == "4g.24gb"


def test_profile_unknown_on_model():
    (req,) = parse_gres("1g.5gb")
    with pytest.raises(RequestError) as info:
        resolve(req, H100)
    assert info.value.part == "1g.5gb"
    assert resolve(req, CAT.model("A100-40GB")).profile_id == 19


def test_too_much_memory():
    (req,) = parse_gres("200gb")
    with pytest.raises(RequestError) as info:
        resolve(req, H100)
    assert info.value.part == "200gb"


def test_non_gpu_request_does_not_resolve():
    (req,) = parse_gres("shard:2")
    with pytest.raises(RequestError):
        resolve(req, H100)
