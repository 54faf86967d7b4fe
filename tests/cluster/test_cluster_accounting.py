"""Accounting on a real local cluster: its own MariaDB and a real slurmdbd (``ClusterSpec.accounting``).

Every MIG job's profile in ``sacct``: under count admission in AllocTRES (``gres/migp:<profile>=N``, from
the generated ``AccountingStorageTRES``), under both admissions in AdminComment. And the simulator's
end-to-end path a site would take: the cluster's own ``sacct -P`` output through ``slurm-gpu trace
from-sacct`` and replayed, with the replay's starts checked against what the cluster did.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.accounting]

SACCT_COLUMNS = "JobID,Submit,Start,End,ReqTRES,AllocTRES,NNodes,Timelimit,AdminComment,TRESUsageInMax"
# request -> (profile recorded by job_submit.lua, count) on H100-80GB
JOBS = {"gpu:1g.10gb": ("1g.10gb", 1), "gpu:3g.40gb:2": ("3g.40gb", 2), "gpu:20gb": ("1g.20gb", 1),
        "gpu:1": ("7g.80gb", 1)}


def _cluster(admission: str):
    from conftest import running_cluster

    from slurm_gpu.testbed import accounting

    missing = accounting.available()
    if missing:
        pytest.skip(f"accounting: {missing}")
    return running_cluster(nodes=1, gpus="H100-80GB:2", prefix="sg-test-acct-", accounting=True,
                           admission=admission)


def _sacct(cl, ids: List[str], columns: str) -> List[Dict[str, str]]:
    proc = cl.run(["sacct", "-P", "-X", "-a", "-j", ",".join(ids), "-o", columns], check=True)
    lines = proc.stdout.strip().splitlines()
    head = lines[0].split("|")
    return [dict(zip(head, line.split("|"))) for line in lines[1:]]


def _recorded(cl, ids: List[str], columns: str, timeout: float = 60) -> List[Dict[str, str]]:
    """sacct's rows once every job has ended and slurmdbd has its end."""
    deadline = time.monotonic() + timeout
    while True:
        rows = _sacct(cl, ids, columns)
        if len(rows) == len(ids) and all(r.get("State") == "COMPLETED" and r.get("End") not in ("", "Unknown")
                                         for r in rows):
            return rows
        assert time.monotonic() < deadline, rows
        time.sleep(1)


@pytest.mark.parametrize("admission", ["counts", "features"])
def test_sacct_names_the_profile_of_every_mig_job(admission):
    with _cluster(admission) as cl:
        ids = {}
        for gres in JOBS:
            out = cl.sbatch("-o", "/dev/null", f"--gres={gres}", wrap="sleep 1").stdout.strip()
            assert out.isdigit(), out
            ids[out] = gres
        rows = _recorded(cl, list(ids), "JobID,State,End,AllocTRES,AdminComment")
        for row in rows:
            profile, count = JOBS[ids[row["JobID"]]]
            assert row["AdminComment"] == f"slurm-gpu:gpu:{profile}:{count}", row
            tres = dict(item.split("=", 1) for item in row["AllocTRES"].split(","))
            if admission == "counts":
                assert tres[f"gres/migp:{profile}"] == str(count) and tres["gres/migp"] == str(count), row
            else:
                assert int(tres["gres/mig"]) >= count, row  # memory slices: the profile is the comment's


def test_the_clusters_own_accounting_replays_with_the_same_starts(tmp_path):
    """Two whole-GPU-sized jobs fill the node's two GPUs; two more wait for them. The cluster's sacct
    history, converted as a site would and replayed, starts the same jobs in the same order, each within
    3 s of when the cluster started it."""
    from slurm_gpu.simulate.replay import simulate_trace
    from slurm_gpu.simulate.traces import read_trace

    with _cluster("features") as cl:
        ids = []
        for gres, seconds in (("gpu:7g.80gb", 8), ("gpu:7g.80gb", 8), ("gpu:7g.80gb", 3), ("gpu:1g.10gb", 3)):
            out = cl.sbatch("-o", "/dev/null", f"--gres={gres}", "-t", "5", wrap=f"sleep {seconds}").stdout
            assert out.strip().isdigit(), out
            ids.append(out.strip())
        rows = _recorded(cl, ids, "JobID,State," + SACCT_COLUMNS.split(",", 1)[1], timeout=90)
        history = tmp_path / "sacct.txt"
        with open(history, "w", encoding="utf-8") as fh:
            fh.write(_sacct_text(cl, ids))
        trace = tmp_path / "trace.jsonl"
        conv = subprocess.run([sys.executable, "-m", "slurm_gpu", "trace", "from-sacct", str(history),
                               "-o", str(trace), "--json"], capture_output=True, text=True, timeout=60)
        assert conv.returncode == 0, conv.stderr
        assert json.loads(conv.stdout)["schema"].startswith("slurm-gpu.trace.from-sacct/")
        jobs = read_trace(str(trace))
        assert sorted(j.id for j in jobs) == sorted(ids)
        sim = simulate_trace(jobs, "1x2xH100-80GB", cl.spec.scheduler_parameters)
        first = min(_epoch(r["Submit"]) for r in rows)
        real = {r["JobID"]: _epoch(r["Start"]) - first for r in rows}
        replayed = {j.id: j.start for j in sim.jobs}
    assert set(replayed) == set(real) and all(s is not None for s in replayed.values()), replayed
    first_two = sorted(real, key=lambda i: (real[i], i))[:2]
    assert first_two == sorted(replayed, key=lambda i: (replayed[i], i))[:2] == ids[:2]
    for job_id, start in real.items():
        assert abs(replayed[job_id] - start) <= 3.0, (job_id, real, replayed)
    assert min(real[i] for i in ids[2:]) >= 5  # the last two did wait for a GPU


def _sacct_text(cl, ids: List[str]) -> str:
    return cl.run(["sacct", "-P", "-X", "-a", "-j", ",".join(ids), "-o", SACCT_COLUMNS], check=True).stdout


def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S").timestamp()


def test_accounting_leaves_nothing_behind():
    with _cluster("counts") as cl:
        spec = cl.spec
        assert Path(spec.dir, "etc", "slurmdbd.conf").stat().st_mode & 0o777 == 0o600
        clusters = cl.run(["sacctmgr", "-n", "-P", "show", "cluster", "format=Cluster"], check=True).stdout
        assert spec.name in clusters.split()
        assert _running(f"--datadir={spec.dir}/db"), "MariaDB runs under the cluster's directory"
    for pattern in (spec.dir, "slurmdbd"):
        assert _running(pattern) == [], pattern


def _running(pattern: str) -> List[str]:
    """Processes whose command line matches, zombies left out (a daemon's end, not yet reaped by init)."""
    pids = subprocess.run(["pgrep", "-f", "--", pattern], capture_output=True, text=True).stdout.split()
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][:1]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive
