"""trace from-sacct for real sites: multi-node totals, shards, site type names, right-sizing whole-GPU
jobs from their recorded GPU memory peak, and the report of what MIG would have done."""

from __future__ import annotations

import json

import pytest
from cli_runner import cli_runner

from slurm_gpu.cli.main import main as MAIN
from slurm_gpu.core.catalog import load_catalog
from slurm_gpu.core.errors import BadInputError
from slurm_gpu.simulate.sacct import SacctOptions, convert, load_types, parse_memory_mib
from slurm_gpu.simulate.traces import read_trace

H100 = load_catalog().model("H100-80GB")
HEAD = "JobID|Submit|Start|End|ReqTRES|AllocTRES|NNodes|Timelimit|AdminComment|TRESUsageInMax|Peak"
T = "2024-05-01T10:{:02d}:00"


def _row(jid, minute, tres, nodes=1, usage="", peak=""):
    times = f"{T.format(minute)}|{T.format(minute)}|{T.format(minute + 30)}"
    return f"{jid}|{times}|{tres}||{nodes}|01:00:00||{usage}|{peak}"


SITE = [
    HEAD,
    _row("1", 0, "cpu=8,gres/gpu=16,node=2", nodes=2),  # 8 GPUs on each of 2 nodes
    _row("2", 1, "cpu=1,gres/shard=3,node=1"),  # 3 of 7 shards: 3 compute slices
    _row("3", 2, "cpu=1,gres/shard=1,node=1"),
    _row("4", 3, "cpu=1,gres/gpu:nvidia_h100_80gb_hbm3_3g.40gb=1,gres/gpu=1,node=1"),
    _row("5", 4, "cpu=1,gres/gpu:small=1,node=1"),  # a site name, mapped below
    _row("6", 5, "cpu=1,gres/gpu:v100=1,node=1"),  # a GPU type the model is not
    _row("7", 6, "cpu=1,gres/gpu=1,node=1"),  # whole GPU, peak 15 GiB in its step
    _row("7.0", 6, "", usage="cpu=00:01:00,gres/gpumem=15G,gres/gpuutil=90,mem=1G"),
    _row("7.batch", 6, "", usage="cpu=00:00:01,gres/gpumem=2G,mem=1G"),
    _row("8", 7, "cpu=1,gres/gpu=1,node=1"),  # whole GPU, peak 70 GiB: stays whole
    _row("8.0", 7, "", usage="gres/gpumem=70G"),
    _row("9", 8, "cpu=1,gres/gpu=2,node=1"),  # two GPUs: stays whole
    _row("9.0", 8, "", usage="gres/gpumem=4G"),
    _row("10", 9, "cpu=1,gres/gpu=1,node=1"),  # no recorded memory
    _row("11", 10, "cpu=1,mem=1G,node=1"),  # no GPU
]


def _convert(**kw):
    return convert(SITE, SacctOptions(H100, types={"small": "1g.10gb"}, **kw))


def test_multi_node_shards_and_type_names():
    done = _convert()
    by_id = {j.id: j for j in done.jobs}
    assert by_id["1"].gres == "gpu:8" and by_id["1"].nodes == 2  # per node, not the job total
    assert by_id["2"].gres == "gpu:3g.40gb:1" and by_id["3"].gres == "gpu:1g.10gb:1"
    assert by_id["4"].gres == "gpu:3g.40gb:1"  # Slurm's autodetected MIG name
    assert by_id["5"].gres == "gpu:1g.10gb:1"  # the site mapping
    assert by_id["6"].gres == "gpu:v100:1"  # kept, simulate rejects it with its reason
    r = done.report.to_dict()
    assert r["multi_node"] == 1 and r["shards"] == 2
    assert r["unknown_types"] == {"v100": 1}
    assert r["types"]["small"] == "1g.10gb" and r["types"]["nvidia_h100_80gb_hbm3_3g.40gb"] == "3g.40gb"
    assert r["skipped"] == {"step": 4, "no GPU": 1}
    assert by_id["7"].gres == "gpu:1"  # no right-sizing unless asked


def test_rightsizing_from_the_steps_peak_with_margin():
    done = _convert(rightsize=True, margin=0.1)
    by_id = {j.id: j for j in done.jobs}
    assert by_id["7"].gres == "gpu:1g.20gb:1"  # 15 GiB x 1.1 fits the 20 GB profiles; fewest GPCs
    assert by_id["8"].gres == by_id["9"].gres.replace("2", "1") == "gpu:1"
    assert {j.id: j.gres for j in done.original}["7"] == "gpu:1"
    r = done.report.to_dict()
    assert r["rightsized"] == {"1g.20gb": 1} and r["whole_gpu_jobs"] == 5
    assert r["not_rightsized"] == {
        "its peak needs the whole GPU": 1,
        "several GPUs per node (a process sees one MIG instance)": 2,  # jobs 1 (8 per node) and 9
        "no recorded GPU memory": 1,
    }
    assert 0 < r["compute_freed"] < 1 and r["compute_slice_hours"][1] < r["compute_slice_hours"][0]
    # a large margin pushes job 7 up to a 40 GB profile
    big = _convert(rightsize=True, margin=1.0)
    assert {j.id: j.gres for j in big.jobs}["7"] == "gpu:3g.40gb:1"


def test_rightsizing_from_a_site_column():
    rows = [HEAD, _row("1", 0, "gres/gpu=1", peak="9000"), _row("2", 1, "gres/gpu=1", peak="30G")]
    done = convert(rows, SacctOptions(H100, rightsize=True, margin=0.0, peak_column="Peak"))
    assert [j.gres for j in done.jobs] == ["gpu:1g.10gb:1", "gpu:3g.40gb:1"]
    with pytest.raises(BadInputError, match="no column"):
        convert(rows, SacctOptions(H100, rightsize=True, peak_column="Nope"))


def test_memory_units_and_mapping_file(tmp_path):
    assert parse_memory_mib("2G") == 2048 and parse_memory_mib("512") == 512 and parse_memory_mib("") is None
    good = tmp_path / "types.yaml"
    good.write_text("small: 1g.10gb\nbig: gpu\n")
    assert load_types(str(good), H100) == {"small": "1g.10gb", "big": "gpu"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("small: 9g.1gb\n")
    with pytest.raises(BadInputError, match="neither gpu nor a profile"):
        load_types(str(bad), H100)


def test_cli_from_sacct_report(tmp_path):
    src = tmp_path / "s.txt"
    src.write_text("\n".join(SITE) + "\n")
    types = tmp_path / "t.yaml"
    types.write_text("small: 1g.10gb\n")
    out = tmp_path / "t.jsonl"
    r = cli_runner().invoke(MAIN, ["trace", "from-sacct", str(src), "--rightsize", "--types", str(types),
                                   "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["schema"] == "slurm-gpu.trace.from-sacct/v1" and doc["rightsized_jobs"] == 1
    assert len(read_trace(str(out))) == doc["jobs"] == 10
    r = cli_runner().invoke(MAIN, ["trace", "from-sacct", str(src), "--json"])
    assert r.exit_code == 3  # the report and the trace cannot share stdout


def test_slurm_autodetected_gpu_names_are_whole_gpus_of_their_model():
    a100 = load_catalog().model("A100-80GB")
    rows = [HEAD, _row("1", 0, "gres/gpu:nvidia_a100-sxm4-80gb=1", usage="gres/gpumem=8G"),
            _row("2", 1, "gres/gpu:nvidia_a100-sxm4-80gb_2g.20gb=1"),
            _row("3", 2, "gres/gpu:nvidia_h100_80gb_hbm3=1")]
    done = convert(rows, SacctOptions(a100, rightsize=True))
    assert [j.gres for j in done.jobs] == ["gpu:1g.10gb:1", "gpu:2g.20gb:1", "gpu:nvidia_h100_80gb_hbm3:1"]
    assert done.report.unknown_types == {"nvidia_h100_80gb_hbm3": 1}  # an H100 name on A100s
    # and the simulator runs the autodetected whole-GPU name as a whole A100
    from slurm_gpu.simulate.cluster import parse_cluster
    from slurm_gpu.simulate.engine import SimConfig, simulate
    from slurm_gpu.simulate.policies import make_policy

    out = simulate(done.original[:1], parse_cluster("1x1xA100-80GB"), make_policy("default"), SimConfig())
    assert out.started == 1 and out.rejected == 0
