"""Fixtures of the container tests: one local cluster, the three runtimes, images built once per session.

- ``ctr``: a 1-node cluster (one simulated H100) whose configuration sends the per-job CDI specs to
  /var/run/cdi (where podman 4.3 looks) and names the runtimes; job scripts run the container command
  with the node's system python (``python3 -m slurm_gpu.hooks.container``), as a job's user would.
- Apptainer from the cached sid root (``roots.APPTAINER``), entered by the job's user through
  ``enter_root.py`` (user namespace + pivot_root); rootless podman (bookworm) with storage under the
  session folder; a dockerd of the session's own (data root, socket, ``--bridge=none``).
- Images: a busybox tree (``/bin/busybox`` of busybox-static) as a podman image, an OCI archive, a
  Docker image and a SIF. Each takes well under a second.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional

import pytest
from conftest import Cluster, running_cluster

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
USER, OTHER = "sgtest1", "sgtest2"
BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "cat", "ls", "echo", "sleep", "id", "env", "test", "true", "false", "kill", "trap", "grep")
SYSTEM_PYTHON = "/usr/bin/python3"
CDI_DIR = "/var/run/cdi"  # where podman 4.3 reads CDI specs: the test cluster's Prolog writes there


def need(*tools: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("container tests need root (mknod, dockerd, the test users)")
    for tool in tools:
        if not (os.access(tool, os.X_OK) if tool.startswith("/") else shutil.which(tool)):
            pytest.skip(f"{tool} is not installed (scripts/setup.sh installs it)")


def _run(args: List[str], user: Optional[str] = None, timeout: float = 120,
         **kw) -> subprocess.CompletedProcess:
    if user:
        args = ["runuser", "-u", user, "--", *args]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd="/tmp", **kw)


def _ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"{proc.args}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@dataclass
class Containers:
    """The session's cluster and runtimes, and helpers to submit container jobs."""

    cluster: Cluster
    work: str  # the session's folder (images, storage), readable by the test users
    config: str  # the node configuration the job's container command reads
    podman_globals: List[str]
    docker_globals: List[str]
    images: Dict[str, str] = field(default_factory=dict)

    @property
    def node(self) -> str:
        return self.cluster.nodes[0]

    @property
    def sandbox(self) -> str:
        return os.path.join(self.cluster.spec.dir, self.node, "sandbox")

    def container_cmd(self, runtime: str, *args: str) -> List[str]:
        """What a job step runs: the container command on the node's system python."""
        globals_ = {"podman": self.podman_globals, "docker": self.docker_globals}.get(runtime, [])
        return ["env", f"PYTHONPATH={REPO}", f"SLURM_GPU_CONFIG={self.config}", SYSTEM_PYTHON, "-m",
                "slurm_gpu.hooks.container", runtime, *globals_, *args]

    def script(self, body: str, name: str) -> str:
        path = os.path.join(self.work, f"{name}.sh")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write("#!/bin/sh\n" + body + "\n")
        os.chmod(path, 0o755)
        return path

    def submit(self, gres: Optional[str], script: str, *extra: str, user: str = USER) -> str:
        out = os.path.join(self.work, "out-%j.txt")
        args = ["sbatch", "--parsable", "-o", out, "-D", self.work, *extra]
        if gres:
            args.append(f"--gres=gpu:{gres}")
        proc = self.cluster.run([*args, script], user=user)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip().split(";")[0]

    def output(self, job_id: str) -> str:
        path = os.path.join(self.work, f"out-{job_id}.txt")
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()

    def cdi_spec(self, job_id: str) -> str:
        return os.path.join(CDI_DIR, f"slurm-gpu-job{job_id}.json")


def _busybox_tree(path: str) -> str:
    for sub in ("bin", "dev", "proc", "sys", "tmp", "etc"):
        os.makedirs(os.path.join(path, sub), exist_ok=True)
    shutil.copy2(BUSYBOX, os.path.join(path, "bin", "busybox"))
    for applet in APPLETS:
        os.symlink("busybox", os.path.join(path, "bin", applet))
    with open(os.path.join(path, "etc", "passwd"), "w", encoding="utf-8") as fh:
        fh.write("root:x:0:0::/:/bin/sh\n")
    os.chmod(os.path.join(path, "tmp"), 0o1777)
    return path


def _apptainer_wrapper(work: str) -> str:
    """``apptainer`` for the jobs: the sid root's, entered by the calling user."""
    from slurm_gpu.testbed import roots

    root = roots.ensure(roots.APPTAINER)
    helper = os.path.join(work, "enter_root.py")
    shutil.copy2(os.path.join(REPO, "tests", "containers", "enter_root.py"), helper)
    os.chmod(helper, 0o644)
    path = os.path.join(work, "apptainer")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(f"#!/bin/sh\nexec {SYSTEM_PYTHON} {helper} {root} apptainer \"$@\"\n")
    os.chmod(path, 0o755)
    return path


class Dockerd:
    """A dockerd of the session's own; its socket's group is the test user's."""

    def __init__(self, base: str):
        self.base = base
        self.sock = os.path.join(base, "docker.sock")
        self.exec_root = os.path.join(base, "exec")
        os.makedirs(base, exist_ok=True)
        self.log = open(os.path.join(base, "dockerd.log"), "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            ["dockerd", "--data-root", os.path.join(base, "data"), "--exec-root", self.exec_root,
             "-H", f"unix://{self.sock}", "--pidfile", os.path.join(base, "docker.pid"), "--bridge=none",
             "--iptables=false", "--ip-forward=false", "--ip-masq=false", "--group", USER],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not self._answers():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"dockerd did not start (log in {base})")
            time.sleep(0.1)

    def _answers(self) -> bool:
        return os.path.exists(self.sock) and _run(["/usr/bin/docker", "-H", f"unix://{self.sock}",
                                                    "version"], timeout=10).returncode == 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        for point in (os.path.join(self.exec_root, "netns", "default"),):
            subprocess.run(["umount", point], capture_output=True, check=False)


def _write_config(cluster: Cluster, work: str, apptainer: str, docker_sock: str) -> str:
    """The cluster's node configuration plus the containers section (the hooks read it too)."""
    base = os.path.join(cluster.spec.dir, "config.yaml")
    with open(base, encoding="utf-8") as fh:
        text = fh.read()
    text += ("containers:\n  cdi_dir: /var/run/cdi\n  stop_grace_s: 0.5\n"
             f"  apptainer_bin: {apptainer}\n  podman_bin: /usr/bin/podman\n  docker_bin: /usr/bin/docker\n"
             f"  docker_host: unix://{docker_sock}\n")
    with open(base, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(base, 0o644)
    return base


@pytest.fixture(scope="session")
def ctr() -> Iterator[Containers]:
    need("podman", "dockerd", "/usr/bin/docker", "debootstrap", BUSYBOX, SYSTEM_PYTHON, "newuidmap")
    t0 = time.monotonic()
    dockerd: Optional[Dockerd] = None
    with running_cluster(nodes=1, gpus="H100-80GB:1", prefix="sg-test-ctr-") as cluster:
        port_base = cluster.spec.port_base
        work = tempfile.mkdtemp(prefix="sg-ctr-", dir="/var/tmp")
        os.chmod(work, 0o777)  # noqa: S103 - the job users write their output and podman storage here
        try:
            apptainer = _apptainer_wrapper(work)
            config = _write_config(cluster, work, apptainer, os.path.join(work, "docker", "docker.sock"))
            store = os.path.join(work, "podman")
            os.makedirs(store)
            shutil.chown(store, USER)
            podman = ["--root", f"{store}/root", "--runroot", f"{store}/run"]
            dockerd = Dockerd(os.path.join(work, "docker"))
            ctx = Containers(cluster, work, config, podman, ["-H", f"unix://{dockerd.sock}"])
            _images(ctx)
            print(f"\ncontainer fixtures ready in {time.monotonic() - t0:.1f} s")
            yield ctx
        finally:
            if dockerd is not None:
                dockerd.stop()
            _stop_podman_pause(t0)
            subprocess.run(["rm", "-rf", work], check=False)
    _remove_cluster_specs(port_base)  # after the cluster stopped: no Epilog writes or removes one now


def _remove_cluster_specs(port_base: int) -> None:
    """CDI specs of this cluster's jobs that no Epilog removed (a failed test stops the cluster with jobs
    running): job ids are ``port_base * 100 + n`` (testbed.files)."""
    for name in os.listdir(CDI_DIR) if os.path.isdir(CDI_DIR) else []:
        digits = name[len("slurm-gpu-job"):-len(".json")] if name.startswith("slurm-gpu-job") else ""
        if digits.isdigit() and int(digits) // 100 == port_base:
            os.unlink(os.path.join(CDI_DIR, name))


def _stop_podman_pause(since: float) -> None:
    """Rootless podman keeps a pause process per user (its user namespace): stop the one this session's
    image builds started (outside any job; those started in a job end with it)."""
    uid = pwd.getpwnam(USER).pw_uid
    try:
        with open(f"/tmp/podman-run-{uid}/libpod/tmp/pause.pid", encoding="ascii") as fh:
            pid = int(fh.read().strip())
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            started = int(fh.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
        with open("/proc/uptime", encoding="ascii") as fh:
            age = float(fh.read().split()[0]) - started
    except (OSError, ValueError, IndexError):
        return
    if age < time.monotonic() - since + 1 and os.stat(f"/proc/{pid}").st_uid == uid:
        os.kill(pid, signal.SIGTERM)


def _images(ctx: Containers) -> None:
    tree = _busybox_tree(os.path.join(ctx.work, "rootfs"))
    tar = os.path.join(ctx.work, "busybox.tar")
    _ok(_run(["tar", "-C", tree, "-cf", tar, "."]))
    os.chmod(tar, 0o644)
    _ok(_run(["podman", *ctx.podman_globals, "import", tar, "localhost/bb:1"], user=USER))
    archive = os.path.join(ctx.work, "bb-oci.tar")
    _ok(_run(["podman", *ctx.podman_globals, "save", "--format", "oci-archive", "-o", archive,
              "localhost/bb:1"], user=USER))
    _ok(_run(["/usr/bin/docker", *ctx.docker_globals, "import", tar, "local/bb:1"]))
    sif = os.path.join(ctx.work, "bb.sif")
    apptainer = os.path.join(ctx.work, "apptainer")
    _ok(_run([apptainer, "build", sif, tree], user=USER))
    # as `apptainer pull docker://nvcr.io/...` converts an NGC image, here from the OCI archive
    sif_oci = os.path.join(ctx.work, "bb-oci.sif")
    _ok(_run([apptainer, "build", sif_oci, f"oci-archive:{archive}"], user=USER))
    ctx.images.update(podman="localhost/bb:1", oci=f"oci-archive:{archive}", docker="local/bb:1", sif=sif,
                      sif_oci=sif_oci)
