"""Shared fixtures. ``slurm_cluster``: one real local Slurm cluster per test session (root + Debian Slurm).

Each session picks its own directory under /var/tmp and a free port range, so sessions run side by side.
Tests that use it carry ``@pytest.mark.slurm``; without root or Slurm they are skipped.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional

import pytest


def slurm_available() -> Optional[str]:
    """None when a real cluster can be started here, else why not."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("slurmctld", "slurmd", "sbatch", "munge"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (see docs/cluster.md)"
    return None


def _ports_free(base: int, count: int) -> bool:
    for port in range(base, base + count):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_port_base(count: int, env: str = "SLURM_GPU_TEST_PORT_BASE") -> int:
    """A port base with ``count`` free ports after it (env override for CI)."""
    if os.environ.get(env):
        return int(os.environ[env])
    rng = random.Random(os.getpid() ^ time.time_ns())
    for _ in range(200):
        base = rng.randrange(20000, 30000, 20)
        if _ports_free(base, count):
            return base
    raise RuntimeError("no free port range for a test cluster")


@dataclass
class Cluster:
    """A running local cluster and helpers to talk to it."""

    spec: object  # slurm_gpu.testbed.spec.ClusterSpec
    nodes: List[str]

    @property
    def env(self) -> Dict[str, str]:
        return self.spec.env()

    @property
    def conf(self) -> str:
        return self.spec.conf

    def run(self, args: List[str], user: Optional[str] = None, check: bool = False,
            timeout: float = 30) -> subprocess.CompletedProcess:
        if user:
            args = ["runuser", "-u", user, "--", "env", f"SLURM_CONF={self.conf}", *args]
        proc = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=timeout,
                              cwd="/tmp")
        if check and proc.returncode != 0:
            raise AssertionError(f"{args} failed: {proc.returncode} {proc.stderr}")
        return proc

    def sbatch(self, *args: str, user: str = "sgtest1", wrap: str = "true") -> subprocess.CompletedProcess:
        return self.run(["sbatch", "--parsable", "-o", "/dev/null", *args, "--wrap", wrap], user=user)

    def job(self, job_id: str) -> Dict[str, str]:
        """``scontrol show job`` as key -> value (values up to the next key)."""
        out = self.run(["scontrol", "-o", "show", "job", job_id], check=True).stdout
        fields: Dict[str, str] = {}
        for token in out.split():
            key, sep, value = token.partition("=")
            if sep:
                fields[key] = value
        return fields

    def wait_job(self, job_id: str, states=("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"),
                 timeout: float = 60) -> Dict[str, str]:
        deadline = time.monotonic() + timeout
        info: Dict[str, str] = {}
        while time.monotonic() < deadline:
            info = self.job(job_id)
            if info.get("JobState") in states:
                return info
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} not in {states} after {timeout} s: {info.get('JobState')} "
                             f"{info.get('Reason')}")


def start_cluster(nodes: int = 2, gpus: str = "H100-80GB:4", prefix: str = "sg-test-", **fields) -> Cluster:
    """Start a cluster in a fresh directory on a free port range; ``fields`` are further ClusterSpec
    fields (``mode="static", layout=...``, ``hooks=False``)."""
    from slurm_gpu.testbed import local
    from slurm_gpu.testbed.spec import ClusterSpec, node_names

    # These clusters test feature admission unless a test asks for counts (the default that ships, with its
    # own clusters: tests/cluster/test_cluster_counts.py, the accounting tests, bench_burst, the demo).
    fields.setdefault("admission", "features")
    directory = tempfile.mkdtemp(prefix=prefix, dir="/var/tmp")
    os.chmod(directory, 0o755)
    spec = ClusterSpec(dir=directory, nodes=nodes, gpus=gpus, port_base=free_port_base(nodes + 3),
                       **fields)
    try:
        local.up(spec)
    except BaseException:
        local.down(spec)
        raise
    return Cluster(spec=spec, nodes=node_names(spec))


def stop_cluster(cluster: Cluster, remove: bool = True) -> None:
    from slurm_gpu.testbed import local

    local.down(cluster.spec)
    if remove and not os.environ.get("SLURM_GPU_KEEP_CLUSTER"):
        shutil.rmtree(cluster.spec.dir, ignore_errors=True)


@contextlib.contextmanager
def running_cluster(**fields) -> Iterator[Cluster]:
    """``start_cluster(**fields)`` for a fixture: skips where no real cluster can run, always stops it."""
    reason = slurm_available()
    if reason:
        pytest.skip(f"real Slurm cluster: {reason}")
    cluster = start_cluster(**fields)
    try:
        yield cluster
    finally:
        stop_cluster(cluster)


@pytest.fixture(scope="session")
def slurm_cluster():
    """A 2-node cluster (4 simulated H100 each) shared by the session; stopped at its end."""
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture
def holder():
    """A live process standing for another client that holds a GPU (hwloc, DCGM, a monitor)."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()
