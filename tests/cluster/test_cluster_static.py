"""A static-layout cluster on the real Slurm daemons: the layout is made through the simulated driver, the
typed gpu gres come from ``--from-driver`` inventory, and a job of ``--gres=gpu:<type>:1`` gets exactly that
MIG device (Slurm's GPU variables, device cgroup allowing its three files and denying every other one)."""

from __future__ import annotations

import os
import re
import stat

import pytest
from conftest import slurm_available, start_cluster, stop_cluster

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

LAYOUT = "3g.40gb,2g.20gb,1g.10gb"


@pytest.fixture(scope="module")
def static_cluster():
    reason = slurm_available()
    if reason:
        pytest.skip(reason)
    cluster = start_cluster(nodes=1, gpus="H100-80GB:2", prefix="sg-test-static-", mode="static",
                            layout=LAYOUT)
    out = os.path.join(cluster.spec.dir, "out")
    os.makedirs(out, exist_ok=True)
    os.chmod(out, 0o1777)  # noqa: S103 - job output of the test users
    yield cluster
    stop_cluster(cluster)


def _gres_lines(cluster):
    with open(os.path.join(cluster.spec.dir, "etc", "gres.conf"), encoding="utf-8") as fh:
        return [x.split() for x in fh if x.startswith("NodeName=")]


def test_node_registers_with_typed_gres_of_the_layout(static_cluster):
    node = static_cluster.nodes[0]
    out = static_cluster.run(["scontrol", "-o", "show", "node", node], check=True).stdout
    assert "State=IDLE" in out
    gres = re.search(r" Gres=(\S+)", out).group(1)
    assert sorted(gres.split(",")) == ["gpu:1g.10gb:2", "gpu:2g.20gb:2", "gpu:3g.40gb:2"]  # 2 GPUs x layout
    assert "mig." not in out  # no fit features on a static node
    lines = _gres_lines(static_cluster)
    assert len(lines) == 6
    for fields in lines:  # every file is a character device the simulated driver made
        files = dict(f.split("=", 1) for f in fields)["MultipleFiles"].split(",")
        assert len(files) == 3 and all(stat.S_ISCHR(os.stat(p).st_mode) for p in files)


def test_unknown_type_is_rejected_by_slurm(static_cluster):
    proc = static_cluster.sbatch("--gres=gpu:4g.40gb:1")
    assert proc.returncode != 0
    assert "Requested node configuration is not available" in proc.stderr


@pytest.mark.parametrize("gres_type", ["2g.20gb", "1g.10gb"])
def test_job_gets_its_device_and_only_it(static_cluster, gres_type):
    lines = _gres_lines(static_cluster)
    devices = {}  # type -> list of its file tuples
    every = set()
    for fields in lines:
        kv = dict(f.split("=", 1) for f in fields)
        files = tuple(kv["MultipleFiles"].split(","))
        devices.setdefault(kv["Type"], []).append(files)
        every.update(files)
    probe = " ".join(sorted(every))
    out_path = os.path.join(static_cluster.spec.dir, "out", f"{gres_type}.out")
    # Opening a simulated device fails either way: ENXIO past the device cgroup (no driver behind the
    # number), EPERM when the cgroup denies it. The job prints each file with cat's message.
    wrap = ('echo "CVD=$CUDA_VISIBLE_DEVICES JG=$SLURM_JOB_GPUS"; '
            f'for f in {probe}; do echo "$f:$(LC_ALL=C cat "$f" 2>&1 >/dev/null | head -1)"; done')
    args = ["sbatch", "--parsable", "-o", out_path, f"--gres=gpu:{gres_type}:1", "--wrap", wrap]
    proc = static_cluster.run(args, user="sgtest1")
    assert proc.returncode == 0, proc.stderr
    info = static_cluster.wait_job(proc.stdout.strip())
    assert info["JobState"] == "COMPLETED"
    assert info["TresPerNode"] == f"gres:gpu:{gres_type}:1"
    with open(out_path, encoding="utf-8") as fh:
        text = fh.read()
    head = re.match(r"CVD=(\S+) JG=(\S+)\n", text)
    assert head, text
    assert head.group(1).isdigit() and head.group(2).isdigit()  # Slurm's own GPU variables
    verdict = {}
    for line in text.splitlines()[1:]:
        path, _, message = line.partition(":")
        verdict[path] = ("allowed" if "No such device or address" in message
                         else "denied" if "Operation not permitted" in message else message)
    allowed = {f for f, v in verdict.items() if v == "allowed"}
    assert set(verdict) == every and set(verdict.values()) == {"allowed", "denied"}, verdict
    # Exactly one device of the requested type: its parent GPU and its GI/CI capability files.
    matches = [files for files in devices[gres_type] if set(files) <= allowed]
    assert len(matches) == 1, verdict
    assert allowed == set(matches[0])  # nothing else: not the other GPU, not another instance's caps
