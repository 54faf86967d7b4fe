"""The shared gres grammar: terms, prefixes, details, the ``=`` count, fields and count suffixes."""

import doctest

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slurm_gpu.core import gres
from slurm_gpu.core.errors import BadInputError, RequestError
from slurm_gpu.core.gres import (
    GresTerm,
    is_count,
    parse_count,
    parse_term,
    split_detail,
    split_fields,
    split_outside,
    split_terms,
    strip_prefix,
)


def test_doctests():
    assert doctest.testmod(gres).failed == 0


@pytest.mark.parametrize(
    "text, fields",
    [
        ("mig", ("mig", None, None)),
        ("gres:mig:4", ("mig", None, "4")),
        ("gres/mig:4", ("mig", None, "4")),
        ("gres/mig=4", ("mig", None, "4")),
        ("mig:4(IDX:0-3)", ("mig", None, "4")),
        ("gpu:1g.10gb:2(IDX:3-4)", ("gpu", "1g.10gb", "2")),
        ("gres/gpu:1g.10gb=2", ("gpu", "1g.10gb", "2")),
        ("gpu:1g.10gb=2", ("gpu", "1g.10gb", "2")),
        ("gpu:mem=20G", ("gpu", "mem=20G", None)),
        ("gpu:MEM=20G:2", ("gpu", "MEM=20G", "2")),
        ("shard:2k", ("shard", None, "2k")),
        ("gpu:3g.40gb", ("gpu", "3g.40gb", None)),
        ("mig(CNT:4)", ("mig", None, "4")),
        ("gpu:1g.10gb:1(CNT:2)", ("gpu", "1g.10gb", "2")),  # the detail's count is what was allocated
        ("gpu:nvidia_h100:2(S:0-1)", ("gpu", "nvidia_h100", "2")),
        ("GRES:gpu:2", ("gpu", None, "2")),
        ("  gres/gpu=2  ", ("gpu", None, "2")),
    ],
)
def test_term_fields(text, fields):
    term = parse_term(text)
    assert (term.name, term.type, term.count) == fields
    assert term.raw == text.strip()


def test_prefix_detail_and_raw_are_kept():
    term = parse_term("gres/gpu:2(IDX:0,2)")
    assert term == GresTerm("gpu", None, "2", "IDX:0,2", True, "gres/gpu:2(IDX:0,2)")
    assert term.detail_kind == "IDX"
    assert parse_term("gpu:2").detail_kind == "" and not parse_term("gpu:2").prefixed


def test_equals_always_gives_the_count():
    # `gres/mig=four` is a bad count, never a type named "four"
    assert parse_term("gres/mig=four").count == "four"
    assert parse_term("gres/mig:four").type == "four"


def test_lone_field_rule_is_the_callers():
    assert parse_term("gpu:20g").count == "20g"  # Slurm's reading: 20 x 1024^3
    user = parse_term("gpu:20g", looks_like_count=str.isdigit)
    assert (user.type, user.count) == ("20g", None)


def test_bare_type_takes_the_default_name():
    bare = parse_term("1g.10gb:2", bare_type=lambda f: "." in f)
    assert (bare.name, bare.type, bare.count) == ("gpu", "1g.10gb", "2")
    assert parse_term("1g.10gb=2", bare_type=lambda f: "." in f).count == "2"
    assert parse_term("shard:2", bare_type=lambda f: "." in f).name == "shard"
    assert parse_term("x:1", bare_type=lambda f: f == "x", default_name="nic").name == "nic"


@pytest.mark.parametrize("text", ["gpu::2", ":4", "gpu:", "gres/gpu=", "=2", "gpu:1g.10gb:"])
def test_empty_field_is_refused_naming_the_term(text):
    with pytest.raises(RequestError) as info:
        parse_term(text)
    assert info.value.part == text
    assert "empty field" in str(info.value)


def test_too_many_fields():
    with pytest.raises(RequestError) as info:
        parse_term("gpu:1g.10gb:2:3(IDX:0)")
    assert info.value.part == "gpu:1g.10gb:2:3(IDX:0)"
    with pytest.raises(RequestError):
        parse_term("1g.10gb:2:3:4", bare_type=lambda f: "." in f)


def test_split_helpers():
    assert split_terms("a:1(IDX:0,2), b ,,c") == ["a:1(IDX:0,2)", "b", "", "c"]
    assert split_outside("n[1,3],m", brackets="[]") == ["n[1,3]", "m"]
    assert split_outside("") == [""]
    assert strip_prefix("gres:gpu") == ("gpu", True)
    assert strip_prefix("Gres/gpu") == ("gpu", True)
    assert strip_prefix("gresx:gpu") == ("gresx:gpu", False)
    assert split_detail("mig:4 (IDX:0-3)") == ("mig:4", "IDX:0-3")
    assert split_detail("gpu:2(IDX:0") == ("gpu:2(IDX:0", "")  # unclosed: no detail
    assert split_fields("gpu") == (("gpu",), False)
    assert split_fields("gpu=2") == (("gpu", "2"), True)
    assert split_fields("gpu:mem=20G") == (("gpu", "mem=20G"), False)


@pytest.mark.parametrize(
    "text, value",
    [("0", 0), ("7", 7), ("2k", 2048), ("2K", 2048), ("1m", 1024**2), ("3g", 3 * 1024**3), ("1t", 1024**4)],
)
def test_count_suffixes(text, value):
    assert is_count(text)
    assert parse_count(text, "x") == value


@pytest.mark.parametrize("text", ["", "x", "-1", "1.5", "2kb", "k", "+3", " 3"])
def test_bad_counts_name_the_count(text):
    assert not is_count(text)
    with pytest.raises(RequestError) as info:
        parse_count(text, "gres/mig=" + text)
    assert info.value.part == text
    assert isinstance(info.value, BadInputError)


def test_count_options():
    with pytest.raises(RequestError, match="positive integer"):
        parse_count("2k", "gpu:x:2k", suffixes=False)
    with pytest.raises(RequestError, match="at least 1") as info:
        parse_count("0", "gpu:0", minimum=1)
    assert info.value.part == "0"
    assert parse_count("12", "gpu:12", suffixes=False, minimum=1) == 12


# -- properties ----------------------------------------------------------------------------------------
_names = st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True)
_types = st.from_regex(r"[a-z0-9][a-z0-9_.+-]{0,9}", fullmatch=True).filter(lambda t: not is_count(t))
_counts = st.integers(0, 10**6).map(str)
_details = st.sampled_from(["", "(IDX:0-3)", "(IDX:0,2)", "(S:0-1)"])


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["", "gres:", "gres/"]),
    _names,
    st.one_of(st.none(), _types),
    st.one_of(st.none(), _counts),
    st.sampled_from([":", "="]),
    _details,
)
def test_written_fields_come_back(prefix, name, gtype, count, count_sep, detail):
    text = prefix + name + (f":{gtype}" if gtype else "") + (f"{count_sep}{count}" if count else "") + detail
    term = parse_term(text)
    assert (term.name, term.type, term.count) == (name, gtype, count)
    assert term.prefixed == bool(prefix)
    assert term.detail == detail[1:-1]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_names, _counts, _details), min_size=1, max_size=5))
def test_a_list_splits_into_its_terms(items):
    terms = [f"{name}:{count}{detail}" for name, count, detail in items]
    assert split_terms(",".join(terms)) == terms
    assert [(t.name, t.count) for t in map(parse_term, terms)] == [(n, c) for n, c, _ in items]


@given(st.integers(0, 10**9), st.sampled_from(["", "k", "m", "g", "t"]))
def test_count_value(n, suffix):
    assert parse_count(f"{n}{suffix}", "x") == n * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3,
                                                       "t": 1024**4}[suffix]


@given(st.text(alphabet="gres:/pu0123=,()IDXCNmk.-+ ", max_size=30))
def test_any_text_parses_or_names_the_bad_part(text):
    # no other exception escapes, and a refusal says which part was wrong
    for piece in split_terms(text):
        try:
            term = parse_term(piece)
        except RequestError as exc:
            assert exc.part is not None and exc.part in piece
            continue
        assert term.name and term.type != "" and term.count != ""
