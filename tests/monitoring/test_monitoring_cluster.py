"""The exporter on a real local Slurm cluster, scraped by a real Prometheus while MIG jobs run.

Checks against the truth at that moment: instance counts = what each node's driver holds, capacity = what
Slurm was told (the node's active fit features), the dcgm-exporter mapping files = the running jobs'
instances (and gone after the epilogs), the owning jobs on ``_info``; every dashboard query returns
series; the live exposition passes ``promtool check metrics``; the rules load into Prometheus healthy.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict

import pytest
from promhelp import Prometheus, dashboard_queries, free_port, get, have_prometheus, promtool, wait_http

from slurm_gpu.core.errors import DriverError

pytestmark = [pytest.mark.slurm, pytest.mark.metrics, pytest.mark.slow]

RUNNING_JOBS = [("1g.10gb", 1), ("2g.20gb", 1), ("3g.40gb", 2), ("1g.10gb", 2), ("7g.80gb", 1),
                ("4g.40gb", 1), ("1g.20gb", 1)]


@pytest.fixture(scope="module")
def setup():
    if not have_prometheus():
        pytest.skip("prometheus/promtool not installed (scripts/setup.sh installs Debian's package)")
    from conftest import running_cluster

    with running_cluster(prefix="sg-test-mon-") as cl:
        config = Path(cl.spec.dir) / "config.yaml"
        with open(config, "a") as f:
            f.write(f"monitoring:\n  hpc_job_mapping_dir: {cl.spec.dir}/{{node}}/hpc-jobs\n")
        work = tempfile.mkdtemp(prefix="sg-prom-", dir="/var/tmp")
        exporters, ports = [], {}
        try:
            for i, node in enumerate(cl.nodes):
                ports[node] = free_port()
                args = [sys.executable, "-m", "slurm_gpu", "--config", str(config), "exporter",
                        "--node", node, "--address", "127.0.0.1", "--port", str(ports[node]),
                        "--slurm-interval", "2"]
                if i == 0:
                    args.append("--pending")
                exporters.append(subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                                  stderr=open(Path(work) / f"{node}.log", "wb")))
            for proc, port in zip(exporters, ports.values()):
                wait_http(f"http://127.0.0.1:{port}/metrics", proc=proc)
            prom = Prometheus(work, {"slurm-gpu": [f"127.0.0.1:{p}" for p in ports.values()]})
            try:
                yield cl, prom, ports
            finally:
                prom.stop()
                shutil.rmtree(work, ignore_errors=True)
        finally:
            for proc in exporters:
                proc.terminate()
                proc.wait(20)


def _driver_counts(cl) -> Dict[str, int]:
    from slurm_gpu.devices.open import open_driver

    out = {}
    for node in cl.nodes:
        driver = open_driver("sim", sim_state=str(Path(cl.spec.dir) / node / "gpus.json"))
        try:
            out[node] = len(driver.instances())
        finally:
            driver.close()
    return out


def _prom_counts(prom) -> Dict[str, int]:
    return {r["metric"]["node"]: int(float(r["value"][1]))
            for r in prom.query("sum by (node) (slurm_gpu_mig_instances) or sum by (node) "
                                "(slurm_gpu_orphan_instances) * 0")}


def _eventually(check, timeout: float = 30, what: str = ""):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            ok, last = check()
        except DriverError as exc:  # a read raced an epilog's destroy: the exporter fails that scrape too
            ok, last = False, exc
        if ok:
            return last
        time.sleep(0.5)
    raise AssertionError(f"{what}: {last}")


def _running(cl, job_ids):
    states = {j: cl.job(j).get("JobState") for j in job_ids}
    return all(s == "RUNNING" for s in states.values()), states


def _mapping_files(cl, node) -> Dict[str, str]:
    d = Path(cl.spec.dir) / node / "hpc-jobs"
    if not d.is_dir():
        return {}
    return {p.name: p.read_text().strip() for p in d.iterdir() if not p.name.startswith(".")}


def _expected_mapping(cl, node) -> Dict[str, str]:
    from slurm_gpu.state.journal import Journal

    out = {}
    for rec in Journal(str(Path(cl.spec.dir) / node / "state")).jobs():
        for item in rec.instances:
            if item.actual is not None and item.state == "created":
                out[f"{item.planned.gpu_index}.{item.actual.gi_id}"] = rec.job_id
    return out


def _slurm_told(cl, node) -> Dict[str, int]:
    from slurm_gpu.node.metrics import feature_counts
    from slurm_gpu.slurm.parse import parse_scontrol_pairs

    fields: Dict[str, str] = {}
    for line in cl.run(["scontrol", "show", "node", node], check=True).stdout.splitlines():
        for k, v in parse_scontrol_pairs(line.strip()).items():
            fields.setdefault(k, v)
    return feature_counts([f for f in fields.get("ActiveFeatures", "").split(",") if f])


def test_exporter_against_cluster_and_prometheus(setup):
    cl, prom, ports = setup
    job_ids = []
    want = 0
    for profile, count in RUNNING_JOBS:
        # One start at a time: two jobs racing onto a node within one pass would be requeued (by design).
        proc = cl.sbatch(f"--gres=gpu:{profile}:{count}", wrap="sleep 90")
        assert proc.returncode == 0, proc.stderr
        job_ids.append(proc.stdout.strip())
        want += count
        _eventually(lambda want=want: (sum(_driver_counts(cl).values()) == want, _driver_counts(cl)), 60,
                    f"instances of job {job_ids[-1]}")
    # Jobs that pend (begin in an hour): the pending-demand series must show them.
    pending = [cl.sbatch("--begin=now+3600", "--gres=gpu:7g.80gb:2", wrap="true").stdout.strip()
               for _ in range(2)]
    try:
        _eventually(lambda: _running(cl, job_ids), 120, "jobs not running")
        time.sleep(3)  # every prolog has finished and the exporters were scraped since

        # Instance counts: Prometheus's latest sample = what the drivers hold now (nothing changes here).
        truth = _driver_counts(cl)
        assert sum(truth.values()) == sum(c for _, c in RUNNING_JOBS)
        _eventually(lambda: (_prom_counts(prom) == truth, (_prom_counts(prom), truth)), 20, "instances")

        # Capacity: what Prometheus has = the node's active fit features in Slurm.
        for node in cl.nodes:
            told = _slurm_told(cl, node)

            def same(node=node, told=told):
                got = {r["metric"]["profile"]: int(float(r["value"][1])) for r in
                       prom.query(f'slurm_gpu_profile_published_instances{{node="{node}"}}')}
                seen = {r["metric"]["profile"]: int(float(r["value"][1])) for r in
                        prom.query(f'slurm_gpu_slurm_profile_instances{{node="{node}"}}')}
                return got == {p: told.get(p, 0) for p in got} and seen == got and bool(got), (got, told)

            _eventually(same, 20, f"capacity of {node}")

        # dcgm-exporter mapping files: one per running instance, holding its job id.
        for node in cl.nodes:
            assert _mapping_files(cl, node) == _expected_mapping(cl, node)
        files = {v for node in cl.nodes for v in _mapping_files(cl, node).values()}
        assert files == set(job_ids)

        # Owners on the _info series only; every instance owned by a running job.
        owners = {r["metric"]["job_id"] for r in prom.query("slurm_gpu_mig_instance_job_info")}
        assert owners == set(job_ids)
        assert "job_id" not in prom.query("slurm_gpu_mig_instance")[0]["metric"]
        assert prom.query("sum(slurm_gpu_mig_instance_unowned)")[0]["value"][1] == "0"
        _eventually(lambda: (bool(prom.query('slurm_gpu_pending_instances{profile="7g.80gb"} == 4')), None),
                    20, "pending demand")

        # Every dashboard query returns series while the workload runs.
        def empty_panels():
            empty = [q for q in dashboard_queries("1m") if not prom.query(q["expr"])]
            return not empty, (empty, prom.query("count_over_time(up[1m])"))

        _eventually(empty_panels, 60, "dashboard queries without series")

        # The live exposition is valid; rules loaded into this Prometheus evaluate without error.
        text = get(f"http://127.0.0.1:{next(iter(ports.values()))}/metrics")
        check = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True)
        assert check.returncode == 0, check.stdout + check.stderr
        import json

        groups = json.loads(get(prom.url + "/api/v1/rules"))["data"]["groups"]
        health = {r["name"]: r["health"] for g in groups for r in g["rules"]}
        assert len(health) == 14 and set(health.values()) == {"ok"}, health
    finally:
        cl.run(["scancel", *job_ids, *pending])

    # After the epilogs: no instance, no mapping file, and Prometheus sees it.
    _eventually(lambda: (sum(_driver_counts(cl).values()) == 0, _driver_counts(cl)), 90, "instances left")
    for node in cl.nodes:
        assert _mapping_files(cl, node) == {}
    _eventually(lambda: (sum(_prom_counts(prom).values()) == 0, _prom_counts(prom)), 20, "prometheus")
    prolog = prom.query('sum(slurm_gpu_hook_duration_seconds_count{hook="prolog"})')[0]["value"][1]
    epilog = prom.query('sum(slurm_gpu_hook_duration_seconds_count{hook="epilog"})')[0]["value"][1]
    creates = prom.query('sum(slurm_gpu_nvml_operation_duration_seconds_count'
                         '{operation="gpu_instance_create"})')[0]["value"][1]
    assert float(prolog) >= len(job_ids) and float(creates) >= sum(c for _, c in RUNNING_JOBS)
    _eventually(lambda: (float(prom.query('sum(slurm_gpu_hook_duration_seconds_count{hook="epilog"})')[0]
                               ["value"][1]) >= len(job_ids), epilog), 20, "epilog lines")
