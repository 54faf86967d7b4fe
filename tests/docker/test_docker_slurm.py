"""docker-slurm/ for real: the bookworm image (Slurm 22.05) on a private dockerd, a controller and two
compute containers with simulated H100s; a MIG job's tasks, admission, no drain, and a clean teardown.

One cluster per session (the ``docker_slurm`` fixture: a private dockerd with its data root, exec root and
socket in a temporary folder; the image from the cache or built); the tests run in file order and the last one
tears it down and checks that nothing is left.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Dict, List

import pytest
from conftest import free_port_base

# slurm too: it runs a real Slurm cluster (in containers), so quick `-m "not slurm"` runs leave it out.
pytestmark = [pytest.mark.docker, pytest.mark.slurm, pytest.mark.slow]


@dataclass
class DockerCluster:
    daemon: object  # slurm_gpu.testbed.docker.Dockerd
    compose: object  # slurm_gpu.testbed.docker.Compose
    port_base: int
    image: Dict[str, object]
    timings: Dict[str, float] = field(default_factory=dict)
    torn_down: bool = False

    def exec(self, service: str, args: List[str], user: str = "root", timeout: float = 60):
        return self.compose.exec(service, args, user=user, timeout=timeout)

    def node_states(self) -> Dict[str, str]:
        proc = self.exec("controller", ["sinfo", "-h", "-N", "-o", "%N %t"])
        return dict(line.split() for line in proc.stdout.splitlines() if len(line.split()) == 2)

    def wait_idle(self, timeout: float = 60) -> Dict[str, str]:
        deadline = time.monotonic() + timeout
        states: Dict[str, str] = {}
        while time.monotonic() < deadline:
            states = self.node_states()
            if len(states) == 2 and set(states.values()) == {"idle"}:
                return states
            time.sleep(0.5)
        raise AssertionError(f"docker-slurm nodes not idle after {timeout:.0f} s: {states}")

    def teardown(self) -> None:
        """compose down, then stop the dockerd (idempotent; the fixture deletes its folder)."""
        if self.torn_down:
            return
        self.torn_down = True
        started = time.monotonic()
        try:
            self.compose.down()
        finally:
            self.daemon.stop()
        self.timings["down_s"] = round(time.monotonic() - started, 1)


@pytest.fixture(scope="session")
def docker_slurm():
    from slurm_gpu.testbed import docker as dk

    why = dk.missing_tools()
    if why:
        pytest.skip(why)
    if dk.cached_image(dk.repo_root()) is None and shutil.which("debootstrap") is None:
        pytest.skip("no cached image, and no debootstrap to make its base (apt-get install debootstrap)")
    started = time.monotonic()
    home = tempfile.mkdtemp(prefix="sgd-", dir="/tmp")  # short: containerd's socket paths must fit
    daemon = dk.Dockerd(home).start()
    cluster = None
    try:
        repo = dk.repo_root()
        image = dk.ensure_image(daemon, repo, home)
        port_base = free_port_base(8)
        compose = dk.Compose(daemon, repo, port_base)
        cluster = DockerCluster(daemon, compose, port_base, image)
        compose.up()
        cluster.wait_idle()
        cluster.timings["up_s"] = round(time.monotonic() - started, 1)
        yield cluster
    finally:
        if cluster is not None:
            cluster.teardown()
        else:
            daemon.stop()
        daemon.remove()
        if os.path.isdir(home):
            shutil.rmtree(home, ignore_errors=True)

STATE = "/var/lib/slurm-gpu-cluster"


def test_mig_job_srun_n2_sees_its_instance_in_both_tasks(docker_slurm):
    proc = docker_slurm.exec("controller", [
        "salloc", "-n2", "--gres=gpu:1g.10gb", "srun", "-n2", "sh", "-c",
        'echo "$SLURM_PROCID $SLURM_JOB_ID $SLURMD_NODENAME $CUDA_VISIBLE_DEVICES"'], user="sgtest1")
    assert proc.returncode == 0, proc.stderr
    tasks = sorted(line.split() for line in proc.stdout.splitlines() if line.strip())
    assert [t[0] for t in tasks] == ["0", "1"], proc.stdout
    (job_id,), (node,), (uuid,) = ({t[i] for t in tasks} for i in (1, 2, 3))
    assert uuid.startswith("MIG-"), proc.stdout
    # The node's hooks created exactly that instance for this job and destroyed it when the job ended.
    service = "c" + node.rsplit("n", 1)[1]
    history = docker_slurm.exec(service, ["cat", f"{STATE}/{node}/state/history.log"]).stdout
    released = [json.loads(line) for line in history.splitlines()
                if json.loads(line).get("job_id") == job_id and json.loads(line).get("event") == "released"]
    assert [i["mig_uuid"] for r in released for i in r["instances"]] == [uuid]
    hooks = docker_slurm.exec(service, ["cat", f"{STATE}/{node}/state/hooks.log"]).stdout
    runs = {r["hook"]: r for r in map(json.loads, hooks.splitlines()) if r.get("job_id") == job_id}
    assert (runs["prolog"]["action"], runs["prolog"]["mig_uuids"], runs["prolog"]["problems"]) == (
        "created", [uuid], [])  # no Slurm devices cgroup in the container: nothing to seal, no problem
    assert runs["epilog"]["action"] == "released"
    inventory = docker_slurm.exec(service, ["slurm-gpu", "inventory", "--json",
                                            "--sim-state", f"{STATE}/{node}/gpus.json"])
    assert inventory.returncode == 0, inventory.stderr
    assert uuid not in inventory.stdout


def test_nodes_publish_migp_counts(docker_slurm):
    """Count admission, what `slurm-gpu config` ships: each compute container's re-plan loop publishes its
    node's target layout (an idle node of 4 H100s: 4 x 7g.80gb, the padding type keeping 4 x 7 in all)."""
    def published():
        proc = docker_slurm.exec("controller", ["scontrol", "show", "node", "-o"])
        gres = {}
        for line in proc.stdout.splitlines():
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            gres[fields["NodeName"]] = {t.split(":")[1]: int(t.split(":")[2])
                                        for t in fields["Gres"].split(",") if t.startswith("migp:")}
        return gres

    deadline = time.monotonic() + 20  # a loop's first publish may wait for its slurmd to register
    gres = published()
    while any(c.get("7g.80gb") != 4 for c in gres.values()) and time.monotonic() < deadline:
        time.sleep(0.5)
        gres = published()
    assert len(gres) == 2, gres
    for counts in gres.values():
        assert counts.get("7g.80gb") == 4 and sum(counts.values()) == 4 * 7, gres


def test_unknown_profile_refused_at_submit(docker_slurm):
    proc = docker_slurm.exec("controller", ["sbatch", "--gres=gpu:9g.90gb", "--wrap", "true"], user="sgtest2")
    assert proc.returncode != 0
    assert "unknown MIG profile" in proc.stderr
    assert "Submitted" not in proc.stdout


def test_no_node_drained(docker_slurm):
    proc = docker_slurm.exec("controller", ["sinfo", "-h", "-N", "-o", "%N|%t|%E"])
    rows = [line.split("|") for line in proc.stdout.splitlines()]
    assert len(rows) == 2, proc.stdout
    assert all(state == "idle" and reason == "none" for _, state, reason in rows), proc.stdout


def _our_processes(cluster) -> list:
    """Processes of this cluster: the daemon's (its folder on their command line) and the containers'
    (the port base in their environment)."""
    home = cluster.daemon.home.encode()
    port = f"SLURM_GPU_PORT_BASE={cluster.port_base}".encode()
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read()
            with open(f"/proc/{pid}/environ", "rb") as fh:
                environ = fh.read().split(b"\0")
        except OSError:
            continue
        if home in cmdline or port in environ:
            found.append((int(pid), cmdline.replace(b"\0", b" ")[:120]))
    return found


def test_teardown_leaves_nothing(docker_slurm):
    daemon = docker_slurm.daemon
    assert _our_processes(docker_slurm), "the running cluster's processes should be found"
    docker_slurm.compose.down()
    assert daemon.docker(["ps", "-aq"]).stdout.split() == []
    networks = daemon.docker(["network", "ls", "--format", "{{.Name}}"]).stdout.split()
    assert sorted(networks) == ["host", "none"]
    docker_slurm.teardown()
    assert _our_processes(docker_slurm) == []
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        mounts = [line.split()[4] for line in fh if daemon.home in line.split()[4]]
    assert mounts == []
    print(f"\ndocker-slurm: image {docker_slurm.image}, timings {docker_slurm.timings}")
