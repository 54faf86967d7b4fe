"""Trace format, seeded generators (exact offered load) and the sacct converter."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slurm_gpu.core.catalog import load_catalog
from slurm_gpu.core.errors import BadInputError
from slurm_gpu.core.requests import parse_gres
from slurm_gpu.simulate.sacct import from_sacct
from slurm_gpu.simulate.traces import (
    GENERATORS,
    TraceJob,
    generate,
    offered_load,
    parse_job_gres,
    read_trace,
    write_trace,
)
from slurm_gpu.slurm.parse import GresCount, parse_gres_counts

H100 = load_catalog().model("H100-80GB")
SLICES = 16 * 8 * 8


@pytest.mark.parametrize(
    "text, expected",
    [
        ("gpu:3g.40gb:1", ("3g.40gb", 1)),
        ("gpu:1g.10gb", ("1g.10gb", 1)),
        ("1g.10gb:2", ("1g.10gb", 2)),
        ("gres:gpu:2g.20gb:3", ("2g.20gb", 3)),
        ("gres/gpu:2g.20gb:3", ("2g.20gb", 3)),
        ("gpu:2", ("gpu", 2)),
        ("gpu:20gb", ("20gb", 1)),
    ],
)
def test_parse_job_gres_forms(text, expected):
    assert parse_job_gres(text) == expected


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["gpu:{p}:{n}", "gres:gpu:{p}:{n}", "gres/gpu:{p}:{n}", "gres/gpu:{p}={n}",
                     "gpu:{p}:{n}(IDX:0-{n})", "gpu:{n}", "gres/gpu={n}", "gres:gpu:{n}"]),
    st.sampled_from([p.name for p in H100.profiles]),
    st.integers(1, 64),
)
def test_users_slurm_and_traces_read_a_term_alike(form, profile, n):
    text = form.format(p=profile, n=n)
    typ = profile if "{p}" in form else None
    (req,) = parse_gres(text)
    assert (req.name, req.type, req.count) == ("gpu", typ, n)
    assert parse_gres_counts(text) == (GresCount("gpu", typ, n),)
    assert parse_job_gres(text) == (typ or "gpu", n)


@pytest.mark.parametrize("text", ["gpu:20gb:2", "gpu:mem=20G:2", "20gb:2", "gpu:20480M:2", "GPU:20GiB:2"])
def test_trace_memory_sizes_in_any_spelling(text):
    assert parse_job_gres(text) == ("20gb", 2)


@pytest.mark.parametrize("text", ["", "gpu:1g.10gb:0", "gpu:1g.10gb:x", "gpu:a:b:c", "gpu:1g.10gb,gpu:2",
                                  "shard:2", "gpu:9800m", "gpu:Banana!"])
def test_parse_job_gres_rejects(text):
    with pytest.raises(BadInputError):
        parse_job_gres(text)


@pytest.mark.parametrize("kind", GENERATORS)
def test_generators_are_seeded_and_hit_the_offered_load(kind):
    a = generate(kind, 400, H100, SLICES, load=0.9, seed=7)
    b = generate(kind, 400, H100, SLICES, load=0.9, seed=7)
    c = generate(kind, 400, H100, SLICES, load=0.9, seed=8)
    assert a == b
    assert a != c
    assert len(a) == 400
    assert [j.submit for j in a] == sorted(j.submit for j in a)
    assert offered_load(a, H100, SLICES) == pytest.approx(0.9, rel=1e-6)
    assert all(j.limit >= j.duration > 0 for j in a)


def test_mixes_skew_sizes():
    def mean_slices(kind):
        jobs = generate(kind, 2000, H100, SLICES, seed=3)
        return sum(H100.profile(parse_job_gres(j.gres)[0]).memory_slices for j in jobs) / len(jobs)

    assert mean_slices("mostly-small") < mean_slices("steady") < mean_slices("mostly-large")


def test_bursty_arrivals_cluster_and_share_profiles():
    jobs = generate("bursty", 1000, H100, SLICES, seed=2)
    steady = generate("steady", 1000, H100, SLICES, seed=2)

    def gap_cv(js):  # coefficient of variation of inter-arrival gaps: 1 for Poisson
        gaps = [b.submit - a.submit for a, b in zip(js, js[1:])]
        mean = sum(gaps) / len(gaps)
        return (sum((g - mean) ** 2 for g in gaps) / len(gaps)) ** 0.5 / mean

    def same_as_previous(js):
        return sum(1 for a, b in zip(js, js[1:]) if a.gres == b.gres) / (len(js) - 1)

    assert 0.8 < gap_cv(steady) < 1.2
    assert gap_cv(jobs) > 2.0
    assert same_as_previous(jobs) > 2 * same_as_previous(steady)


def test_round_trip_through_the_file(tmp_path):
    jobs = generate("steady", 50, H100, SLICES, seed=1)
    path = tmp_path / "t.jsonl"
    with open(path, "w") as fh:
        write_trace(jobs, fh)
    again = read_trace(str(path))
    assert [(j.id, j.gres, j.nodes) for j in again] == [(j.id, j.gres, j.nodes) for j in jobs]
    assert all(
        abs(a.submit - b.submit) < 0.06 and abs(a.duration - b.duration) < 0.06 for a, b in zip(again, jobs)
    )


def test_read_trace_reports_the_bad_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"id": "1", "submit": 0, "duration": 10, "gres": "gpu:1g.10gb"})
    path.write_text(good + "\n" + json.dumps({"id": "2", "submit": 0, "gres": "gpu:1g.10gb"}) + "\n")
    with pytest.raises(BadInputError) as err:
        read_trace(str(path))
    assert err.value.part.endswith(":2")
    path.write_text(good + "\n" + good + "\n")
    with pytest.raises(BadInputError, match="repeats"):
        read_trace(str(path))


def test_optional_fields_default():
    job = TraceJob("1", 0.0, 100.0, "gpu:1g.10gb")
    assert job.nodes == 1 and job.limit == 100.0
    assert "time_limit" not in job.to_dict() and "nodes" not in job.to_dict()


SACCT = """JobID|Submit|Start|End|ReqTRES|AllocTRES|NNodes|Timelimit|AdminComment
100|2024-05-01T10:00:00|2024-05-01T10:00:05|2024-05-01T11:00:05|billing=1,cpu=1,gres/mig=4,mem=1G,node=1|cpu=1,gres/mig=4,node=1|1|02:00:00|slurm-gpu:gpu:3g.40gb:1
100.batch|2024-05-01T10:00:05|2024-05-01T10:00:05|2024-05-01T11:00:05||cpu=1|1||
101|2024-05-01T10:01:00|2024-05-01T10:02:00|2024-05-01T10:12:00|cpu=1,gres/gpu:1g.10gb=2,gres/gpu=2,node=1|cpu=1|2|1-00:00:00|
102|2024-05-01T10:02:00|2024-05-01T10:03:00|2024-05-01T10:04:00|cpu=1,gres/gpu=1,node=1|cpu=1|1|UNLIMITED|
103|2024-05-01T10:03:00|Unknown|Unknown|cpu=1,gres/gpu:1g.10gb=1,node=1||1|01:00:00|
104|2024-05-01T10:04:00|2024-05-01T10:05:00|2024-05-01T10:06:00|cpu=4,mem=8G,node=1|cpu=4|1|10:00|
105|2024-05-01T10:05:00|2024-05-01T10:05:00|2024-05-01T10:35:00|cpu=1,gres/gpu:2g.20gb=1,node=1||1|20:00|
"""


def test_from_sacct_converts_and_skips():
    warnings = []
    jobs = from_sacct(SACCT.splitlines(), warn=warnings.append)
    by_id = {j.id: j for j in jobs}
    assert sorted(by_id) == ["100", "101", "102", "105"]
    assert by_id["100"].gres == "gpu:3g.40gb:1"  # the recorded request wins over the mig count
    assert by_id["100"].submit == 0.0 and by_id["100"].duration == 3600.0 and by_id["100"].limit == 7200.0
    # TRES counts are job totals: 2 instances on 2 nodes is one per node
    assert by_id["101"].gres == "gpu:1g.10gb:1" and by_id["101"].nodes == 2 and by_id["101"].limit == 86400.0
    assert by_id["101"].submit == 60.0
    assert by_id["102"].gres == "gpu:1" and by_id["102"].time_limit is None
    assert by_id["105"].limit == by_id["105"].duration == 1800.0  # ran past a 20 min limit: grace
    text = " ".join(warnings)
    assert "no GPU" in text and "did not run" in text and "step" in text


def test_from_sacct_needs_the_columns():
    with pytest.raises(BadInputError, match="lacks"):
        from_sacct(["JobID|Submit", "1|2024-05-01T10:00:00"])


def test_cli_from_sacct_reads_stdin(tmp_path):
    from cli_runner import cli_runner

    from slurm_gpu.cli import main as cli_main

    out = tmp_path / "t.jsonl"
    r = cli_runner().invoke(cli_main.main, ["trace", "from-sacct", "-", "-o", str(out)], input=SACCT)
    assert r.exit_code == 0, r.output
    assert [j.id for j in read_trace(str(out))] == ["100", "101", "102", "105"]
    assert "skipped" in r.stderr
