from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slurm_gpu.core import features
from slurm_gpu.core.catalog import load_catalog
from slurm_gpu.core.errors import BadInputError

CAT = load_catalog()
ALL_PROFILES = sorted({p.name for m in CAT.models for p in m.profiles})
# What Slurm accepts in a feature name without quoting: no operators of --constraint.
SLURM_SAFE = re.compile(r"^[A-Za-z0-9._]+$")


@pytest.mark.parametrize(
    "name,token",
    [
        ("1g.10gb", "1g.10gb"),
        ("1g.10gb+me", "1g.10gb_me"),
        ("1g.24gb+me.all", "1g.24gb_meall"),
        ("2g.48gb+me.all", "2g.48gb_meall"),
        ("1g.24gb-me", "1g.24gb_nome"),
        ("4g.96gb+gfx", "4g.96gb_gfx"),
    ],
)
def test_feature_token_variants(name, token):
    assert features.feature_token(name) == token
    assert features.profile_from_token(token) == name


@pytest.mark.parametrize("name", ALL_PROFILES)
def test_every_catalog_profile_round_trips_and_is_slurm_safe(name):
    for k in (1, 7, 12):
        f = features.feature(name, k)
        assert SLURM_SAFE.match(f), f
        assert features.parse_feature(f) == (name, k)


def test_tokens_are_unique_across_catalog():
    tokens = [features.feature_token(n) for n in ALL_PROFILES]
    assert len(set(tokens)) == len(tokens)


@pytest.mark.parametrize("bad", ["1g.10gb+xx", "gpu", "", "10gb", "1g.10gb:2"])
def test_feature_token_rejects_non_profiles(bad):
    with pytest.raises(BadInputError) as exc:
        features.feature_token(bad)
    assert exc.value.part == bad


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_feature_rejects_bad_count(k):
    with pytest.raises(BadInputError):
        features.feature("1g.10gb", k)


@pytest.mark.parametrize(
    "bad",
    ["mig.1g.10gb", "mig.1g.10gb.0", "mig.1g.10gb.x", "gpu.1g.10gb.1", "mig.1g.10gb+me.1", "mig.1g.10gb.01"],
)
def test_parse_feature_rejects(bad):
    with pytest.raises(BadInputError):
        features.parse_feature(bad)


def test_all_features_h100_node():
    h100 = CAT.model("H100-80GB")
    feats = features.all_features([h100] * 4, max_count=8)
    # 1g.10gb: 7 per GPU, 28 on the node, capped at 8.
    assert [f for f in feats if f.startswith("mig.1g.10gb.")] == [f"mig.1g.10gb.{k}" for k in range(1, 9)]
    # 7g.80gb: one per GPU -> 4.
    assert [f for f in feats if f.startswith("mig.7g.80gb.")] == [f"mig.7g.80gb.{k}" for k in range(1, 5)]
    # +me: one per GPU.
    assert "mig.1g.10gb_me.4" in feats and "mig.1g.10gb_me.5" not in feats
    assert len(feats) == len(set(feats))


def test_all_features_single_gpu_caps_by_gpu():
    h100 = CAT.model("H100-80GB")
    feats = features.all_features([h100], max_count=8)
    assert "mig.3g.40gb.2" in feats and "mig.3g.40gb.3" not in feats
    assert "mig.1g.10gb.7" in feats and "mig.1g.10gb.8" not in feats


def test_all_features_mixed_models_union():
    a30, h100 = CAT.model("A30-24GB"), CAT.model("H100-80GB")
    feats = features.all_features([a30, h100], max_count=8)
    assert "mig.4g.24gb.1" in feats and "mig.7g.80gb.1" in feats
    assert "mig.4g.24gb.2" not in feats


def test_active_features_from_capacity():
    got = features.active_features({"1g.10gb": 3, "7g.80gb": 0, "3g.40gb": 20}, max_count=4)
    assert got == (
        "mig.1g.10gb.1", "mig.1g.10gb.2", "mig.1g.10gb.3",
        "mig.3g.40gb.1", "mig.3g.40gb.2", "mig.3g.40gb.3", "mig.3g.40gb.4",
    )


def test_active_features_rejects_bad_max():
    with pytest.raises(BadInputError):
        features.active_features({"1g.10gb": 1}, max_count=0)


@given(
    caps=st.dictionaries(st.sampled_from(ALL_PROFILES), st.integers(min_value=0, max_value=30)),
    max_count=st.integers(min_value=1, max_value=12),
)
def test_active_features_property(caps, max_count):
    got = features.active_features(caps, max_count)
    parsed = [features.parse_feature(f) for f in got]
    for name, cap in caps.items():
        ks = sorted(k for p, k in parsed if p == name)
        assert ks == list(range(1, min(cap, max_count) + 1))
    assert all(p in caps for p, _ in parsed)


def test_is_fit_feature():
    assert features.is_fit_feature("mig.1g.10gb.1")
    assert not features.is_fit_feature("rack1")
