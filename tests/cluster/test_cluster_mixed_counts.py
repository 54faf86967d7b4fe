"""Count admission on a mixed-model cluster (real Slurm 22.05, hooks on, Slurm's default scheduler): one node
of H100-80GB, one of A100-40GB. A memory size or whole GPUs mean another profile on each model; job_submit.lua
gives such a request an alias type (``migp:20gb``, ``migp:whole``), both nodes publish its slots, and the
Prolog creates the profile its own model means (``slurm_gpu.core.aliases``)."""

from __future__ import annotations

import json
import os
import re
from typing import Dict, List

import pytest

from tests.conftest import running_cluster

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

DONE = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")


@pytest.fixture(scope="module")
def mixed_counts():
    with running_cluster(nodes=2, gpus="H100-80GB:2;A100-40GB:2", prefix="sg-test-mixc-", admission="counts",
                         scheduler_parameters="", publish_interval_s=1.0) as cluster:
        yield cluster


def _prologs(cluster) -> Dict[str, Dict[str, object]]:
    """The last Prolog line per job, over both nodes."""
    out: Dict[str, Dict[str, object]] = {}
    for node in cluster.nodes:
        path = os.path.join(cluster.spec.dir, node, "state", "hooks.log")
        if not os.path.exists(path):
            continue  # no hook has run there yet
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                entry = json.loads(line)
                if entry.get("hook") == "prolog":
                    out[str(entry["job_id"])] = entry
    return out


def _created(entry) -> List[str]:
    """The profiles a Prolog created, from its message ("GPU 1 1g.20gb@6, GPU 0 ...")."""
    return sorted(re.findall(r"GPU \d+ (\S+)@\d+", str(entry.get("message", ""))))


@pytest.mark.parametrize("request_,node,gres,profiles", [
    ("gpu:20gb", 0, "migp:20gb:1", ["1g.20gb"]),
    ("gpu:20gb", 1, "migp:20gb:1", ["3g.20gb"]),
    ("gpu:1", 0, "migp:whole:1", ["7g.80gb"]),
    ("gpu:1", 1, "migp:whole:1", ["7g.40gb"]),
    ("gpu:17gb:2", 1, "migp:20gb:2", ["3g.20gb", "3g.20gb"]),
    ("gpu:mem=4G", 0, "migp:5gb:1", ["1g.10gb"]),
])
def test_a_request_of_two_profiles_runs_on_either_model_as_its_profile(mixed_counts, request_, node, gres,
                                                                        profiles):
    cluster = mixed_counts
    proc = cluster.sbatch(f"--gres={request_}", "-w", cluster.nodes[node], wrap="sleep 1")
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip()
    info = cluster.wait_job(job_id, timeout=90)
    assert info["JobState"] == "COMPLETED" and info["NodeList"] == cluster.nodes[node], info
    assert info["TresPerNode"] == f"gres:{gres}"
    assert _created(_prologs(cluster)[job_id]) == profiles


def test_a_burst_of_alias_and_profile_jobs_runs_exactly(mixed_counts):
    cluster = mixed_counts
    requests = ["gpu:20gb", "gpu:1", "gpu:20gb:2", "gpu:1g.10gb", "gpu:40gb", "gpu:1g.10gb:2", "gpu:1",
                "gpu:20gb", "gpu:3g.40gb", "gpu:1g.5gb"] * 2
    ids = [cluster.sbatch("-H", f"--gres={r}", wrap="sleep 2").stdout.strip() for r in requests]
    assert all(ids), ids
    cluster.run(["scontrol", "release", ",".join(ids)], check=True)
    states = {j: cluster.wait_job(j, states=DONE, timeout=240)["JobState"] for j in ids}
    assert set(states.values()) == {"COMPLETED"}, states
    prologs = _prologs(cluster)
    assert [j for j in ids if prologs[j].get("action") != "created"] == []  # 0 requeues, 0 refusals
    assert cluster.run(["sinfo", "-h", "-R"], check=True).stdout.strip() == ""  # no drain
    for node in cluster.nodes:
        out = cluster.run(["scontrol", "show", "node", "-d", node], check=True).stdout
        used = re.search(r"GresUsed=(\S+)", out).group(1)
        assert all(int(n) == 0 for n in re.findall(r":(\d+)(?:\(|,|$)", used)), used
