"""The shipped rules and dashboard: promtool checks and unit tests of the rules, the dashboard's shape."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from promhelp import DASHBOARD, MONITORING, RULES, dashboard_queries, promtool

pytestmark = [pytest.mark.metrics]


def _promtool(*args: str) -> subprocess.CompletedProcess:
    if not promtool():
        pytest.skip("promtool not installed (scripts/setup.sh installs Debian's prometheus)")
    return subprocess.run([promtool(), *args], capture_output=True, text=True, cwd=RULES.parent)


def test_rules_check():
    proc = _promtool("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_rules_unit_tests():
    proc = _promtool("test", "rules", "slurm-gpu.rules.test.yml")
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, proc.stdout + proc.stderr


def test_example_scrape_config():
    proc = _promtool("check", "config", str(MONITORING / "prometheus" / "prometheus.example.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_of_the_issue_is_there():
    text = RULES.read_text()
    for name in ("SlurmGpuLeakedInstance", "SlurmGpuCapacityStuck", "SlurmGpuHookFailures",
                 "SlurmGpuPrologSlow", "SlurmGpuRacedRequeues", "SlurmGpuExporterDown",
                 "SlurmGpuExporterStale"):
        assert f"alert: {name}" in text


def test_dashboard_shape():
    board = json.loads(DASHBOARD.read_text())
    names = [v["name"] for v in board["templating"]["list"]]
    assert names == ["datasource", "cluster", "node"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert rows == ["Cluster", "Node", "Hooks"]
    for panel in board["panels"]:
        g = panel["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}" and panel["description"]
        assert panel["targets"], panel["title"]
        for t in panel["targets"]:
            assert "slurm_gpu_" in t["expr"]
            assert 'cluster=~"$cluster"' in t["expr"], (panel["title"], t["expr"])
    queries = dashboard_queries()
    assert all("$" not in q["expr"] for q in queries)
    assert len(queries) >= 15


def test_dashboard_queries_parse():
    """Each query with its variables filled in is valid PromQL (promtool parses it as a rule)."""
    import tempfile

    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:{re.sub(r'[^a-z0-9]+', '_', q['panel'].lower())}:{q['ref']}",
         "expr": q["expr"]}
        for q in dashboard_queries()]}]}
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as f:
        json.dump(rules, f)
        f.flush()
        proc = _promtool("check", "rules", f.name)
    assert proc.returncode == 0, proc.stdout + proc.stderr
