"""slurm-gpu whatif on the checked-in sample sacct file: the table, report files and plots."""

from __future__ import annotations

import json
import time

import pytest
from cli_runner import cli_runner

from slurm_gpu.cli.main import main as MAIN

SAMPLE = "traces/sample-sacct.txt"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    pytest.importorskip("matplotlib", reason="the plots need matplotlib (scripts/setup.sh installs it)")
    out = tmp_path_factory.mktemp("whatif")
    t0 = time.monotonic()
    r = cli_runner().invoke(MAIN, ["whatif", SAMPLE, "--cluster", "4x8xH100-80GB", "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    doc["_elapsed"] = time.monotonic() - t0
    return out, doc


def test_whatif_compares_the_five_scenarios(report):
    out, doc = report
    assert doc["schema"] == "slurm-gpu.whatif/v1"
    rows = {r["scenario"]: r for r in doc["rows"]}
    assert list(rows) == ["current", "static", "default", "features", "ideal"]
    assert rows["default"]["policy"] == "default" and rows["features"]["policy"] == "features"
    assert rows["current"]["requests"] == "as asked" and rows["default"]["requests"] == "right-sized"
    assert all(r["started"] == doc["conversion"]["jobs"] and r["rejected"] == 0 for r in rows.values())
    # the sample's whole-GPU jobs mostly use a fraction of their GPU: right-sizing frees capacity and the
    # default policy waits far less than whole GPUs
    assert doc["conversion"]["rightsized_jobs"] > 0 and doc["summary"]["compute_freed"] > 0.1
    assert rows["default"]["mean_wait_s"] < rows["current"]["mean_wait_s"] / 2
    assert rows["current"]["stranded_capacity"] == 0.0  # whole GPUs strand nothing, they idle
    assert doc["_elapsed"] < 60


def test_whatif_writes_the_report_and_plots(report):
    out, doc = report
    for name in ("report.md", "report.json", "waits.png", "utilization.png", "capacity.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "waits.png").read_bytes()[:4] == b"\x89PNG"
    text = (out / "report.md").read_text()
    assert "| default | slurm-gpu default (counts) | right-sized |" in text
    assert "![waits.png](waits.png)" in text
    assert json.loads((out / "report.json").read_text())["files"] == doc["files"]


def test_whatif_table_without_plots(tmp_path):
    r = cli_runner().invoke(MAIN, ["whatif", SAMPLE, "--cluster", "4x8xH100-80GB", "-o", str(tmp_path),
                                   "--no-plots", "--current-layout", "3g.40gb,3g.40gb", "--create-time", "0"])
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("| scenario |") and "| current | site layout | as asked |" in r.stdout
    assert not (tmp_path / "waits.png").exists()
