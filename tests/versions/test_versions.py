"""The core of the suite on Slurm 24.11 (Debian trixie) and 26.05 (sid), each in a cached Debian root.

One 2-node cluster per version for the session (``slurm_gpu.testbed.rooted``): the real slurmctld and
slurmd of that version, its munged, job_submit.lua, and our Prolog, Epilog and TaskProlog on the root's
python3. Everything a test decides on is read from that version's JSON (``scontrol show job
--json=v0.0.42``) through the Slurm adapter's own parser, and the adapter itself runs inside the root.
22.05 (the host) runs the whole suite in tests/cluster/.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

import pytest
from conftest import free_port_base

pytestmark = [pytest.mark.slurm, pytest.mark.versions, pytest.mark.slow]

VERSIONS = ("24.11", "26.05")
# counts is what `slurm-gpu config` ships (a `slurm-gpu publish --watch` per node, inside the root);
# features is the selectable alternative: the core subset runs under both
ADMISSIONS = ("counts", "features")
PROFILE = "1g.10gb"  # H100-80GB
DONE = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")
TIMES: Dict[str, float] = {}  # version -> seconds to build (cold) or mount (warm) the root and start


def _unavailable() -> Optional[str]:
    if os.geteuid() != 0:
        return "needs root (chroot, mounts, slurmd)"
    for tool in ("debootstrap", "chroot", "mount", "runuser"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (scripts/setup.sh)"
    return None


@dataclass
class VCluster:
    spec: object  # ClusterSpec
    nodes: List[str]
    out: str  # a directory every user may write, seen at the same path inside and outside the root

    @property
    def version(self) -> str:
        return self.spec.slurm

    @property
    def counts(self) -> bool:
        return self.spec.admission == "counts"

    def run(self, args: List[str], user: Optional[str] = None, timeout: float = 30,
            check: bool = False) -> subprocess.CompletedProcess:
        from slurm_gpu.testbed import rooted

        proc = subprocess.run(rooted.command(self.spec, args, user=user), capture_output=True, text=True,
                              timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"{args} failed: {proc.returncode} {proc.stderr}")
        return proc

    def sbatch(self, *args: str, wrap: str = "true", user: str = "sgtest1") -> subprocess.CompletedProcess:
        return self.run(["sbatch", "--parsable", "-o", f"{self.out}/%j.out", *args, "--wrap", wrap],
                        user=user)

    def submit(self, *args: str, wrap: str = "true") -> str:
        proc = self.sbatch(*args, wrap=wrap)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip().split(";")[0]

    def job(self, job_id: str):
        """The job as the adapter's parser reads this version's JSON."""
        from slurm_gpu.slurm.parse import job_by_id

        out = self.run(["scontrol", "show", "job", "--json=v0.0.42", job_id], check=True).stdout
        return job_by_id(json.loads(out), int(job_id))

    def wait(self, job_id: str, states=DONE, timeout: float = 60):
        deadline = time.monotonic() + timeout
        info = None
        while time.monotonic() < deadline:
            info = self.job(job_id)
            # RUNNING+CONFIGURING: the Prolog still runs (PrologFlags=Alloc); COMPLETED+COMPLETING: an
            # Epilog still runs, and the job's nodes are only those still completing (one of a -N2 job's)
            if info.state in states and not {"CONFIGURING", "COMPLETING"} & set(info.flags):
                return info
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} not in {states} after {timeout} s: {info}")

    def output(self, job_id: str) -> str:
        with open(f"{self.out}/{job_id}.out", encoding="utf-8") as fh:
            return fh.read()

    def instances(self, node: str):
        """The node's instances, read without the node lock: a read that races a hook's create or destroy
        fails as NVML's would (an instance gone between two calls) and is read again."""
        from slurm_gpu.core.errors import DriverError
        from slurm_gpu.devices.open import open_driver

        for attempt in range(20):
            driver = open_driver("sim", sim_state=os.path.join(self.spec.dir, node, "gpus.json"))
            try:
                return driver.instances()
            except DriverError:
                if attempt == 19:
                    raise
                time.sleep(0.05)
            finally:
                driver.close()
        raise AssertionError("unreachable")

    def wait_instances(self, node: str, count: int, timeout: float = 15):
        """The node's instances once ``count`` are complete (GPU and compute instance): the job is RUNNING
        while its Prolog still creates them."""
        deadline = time.monotonic() + timeout
        made = self.instances(node)
        while time.monotonic() < deadline:
            if len(made) == count and all(i.mig_uuid for i in made):
                return made
            time.sleep(0.1)
            made = self.instances(node)
        raise AssertionError(f"{node}: {made}, not {count} complete instances after {timeout} s")

    def all_instances(self):
        return [i for node in self.nodes for i in self.instances(node)]

    def wait_no_instances(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.all_instances():
            time.sleep(0.2)
        assert self.all_instances() == []

    def node_states(self) -> Dict[str, str]:
        from slurm_gpu.testbed import local

        return local.node_states(self.spec)

    def wait_idle(self, timeout: float = 30) -> None:
        from slurm_gpu.testbed import local

        local.wait_idle(self.spec, timeout)

    def in_root_python(self, code: str) -> str:
        """``code`` on the root's python3 with the package, as the hooks run it."""
        from slurm_gpu.testbed import rooted

        proc = subprocess.run(["chroot", rooted.root_path(self.spec), "/usr/bin/env",
                               f"PYTHONPATH={rooted.LIB_DIR}", f"SLURM_CONF={self.spec.conf}",
                               "PYTHONDONTWRITEBYTECODE=1", "/usr/bin/python3", "-c", code],
                              capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout


@pytest.fixture(scope="session", params=[(v, a) for v in VERSIONS for a in ADMISSIONS],
                ids=lambda p: f"{p[0]}-{p[1]}")
def vcluster(request):
    version, admission = request.param
    reason = _unavailable()
    if reason:
        pytest.skip(f"Slurm {version} in a Debian root: {reason}")
    from slurm_gpu.testbed import local, rooted
    from slurm_gpu.testbed.spec import ClusterSpec, node_names

    directory = tempfile.mkdtemp(prefix=f"sg-v{version.replace('.', '')}{admission[0]}-", dir="/var/tmp")
    os.chmod(directory, 0o755)
    spec = ClusterSpec(dir=directory, nodes=2, gpus="H100-80GB:2", port_base=free_port_base(4),
                       slurm=version, admission=admission)
    start = time.monotonic()
    try:
        local.up(spec, timeout=60)
        TIMES[f"{version}-{admission}"] = time.monotonic() - start
        out = os.path.join(directory, "out")
        os.makedirs(out, exist_ok=True)
        os.chmod(out, 0o1777)  # noqa: S103 - job output of the test users
        yield VCluster(spec=spec, nodes=node_names(spec), out=out)
    finally:
        local.down(spec)
        left = {**local.processes(spec), **_naming(spec.conf)}
        mounts = _mounts_below(directory)
        if not os.environ.get("SLURM_GPU_KEEP_CLUSTER"):
            rooted.remove(spec)
    assert not left and not mounts, f"left behind: processes {left}, mounts {mounts}"


def _naming(conf: str) -> Dict[str, int]:
    """Every process whose command line names this cluster's slurm.conf, whatever it is called."""
    found = {}
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        if entry.isdigit() and os.fsencode(conf) in argv:
            found[argv[0].decode(errors="replace") + ":" + entry] = int(entry)
    return found


def _mounts_below(directory: str) -> List[str]:
    real = os.path.realpath(directory)
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        return [p for p in (line.split()[4] for line in fh) if p == real or p.startswith(real + "/")]


def _mig_uuids(text: str) -> List[str]:
    return [w for line in text.splitlines() for w in line.split() if w.startswith("MIG-")]


def test_cluster_runs_that_version(vcluster):
    out = vcluster.run(["sinfo", "--version"], check=True).stdout
    assert out.split()[1].startswith(vcluster.version), out
    assert vcluster.node_states() == {n: "idle" for n in vcluster.nodes}
    took = TIMES[f"{vcluster.version}-{vcluster.spec.admission}"]
    print(f"Slurm {vcluster.version} ({vcluster.spec.admission}): cluster idle after {took:.1f} s")


def test_admission_accepts_a_profile_and_refuses_unknown_and_forged(vcluster):
    ok = vcluster.submit("--hold", f"--gres=gpu:{PROFILE}")
    info = vcluster.job(ok)
    assert info.admin_comment == f"slurm-gpu:gpu:{PROFILE}:1"
    assert info.tres_per_node == _rewritten(vcluster), info
    if not vcluster.counts:
        assert info.mig_slices_per_node() == 1  # 'gres/mig:1' from 24.11 on
        assert info.features == f"mig.{PROFILE}.1"
    vcluster.run(["scancel", ok], check=True)
    for args in (["--gres=gpu:9g.99gb"], ["--gres=mig:4"], [f"--constraint=mig.{PROFILE}.1"],
                 [f"--gres=gpu:{PROFILE}", "--gpus-per-node=1"]):
        bad = vcluster.sbatch(*args)
        assert bad.returncode != 0, (args, bad.stdout)
        assert "slurm-gpu" in bad.stderr or "gres" in bad.stderr.lower(), (args, bad.stderr)
    unknown = vcluster.sbatch("--gres=gpu:9g.99gb")
    assert "slurm-gpu" in unknown.stderr and "9g.99gb" in unknown.stderr


def _rewritten(vcluster) -> str:
    """What job_submit.lua leaves of ``--gres=gpu:<PROFILE>`` in the job (``gres/`` from 24.11 on)."""
    return f"gres/migp:{PROFILE}:1" if vcluster.counts else "gres/mig:1"


def test_gpus_per_node_is_rewritten_alone(vcluster):
    """From 24.11 --gpus-per-node lands in tres_per_node like --gres: the rewrite leaves only the mig gres
    (26.05 refuses a job carrying both --gres=gpu and --gpus-per-node)."""
    job = vcluster.submit("--hold", f"--gpus-per-node={PROFILE}:1")
    info = vcluster.job(job)
    assert info.admin_comment == f"slurm-gpu:gpu:{PROFILE}:1", info
    assert info.tres_per_node == _rewritten(vcluster), info
    vcluster.run(["scancel", job], check=True)


def test_batch_and_srun_steps_get_the_instance_made_and_destroyed(vcluster):
    job = vcluster.submit("-n2", f"--gres=gpu:{PROFILE}",
                          wrap='echo batch $CUDA_VISIBLE_DEVICES; '
                               'srun -n2 sh -c "echo step \\$SLURM_PROCID \\$CUDA_VISIBLE_DEVICES"; sleep 2')
    info = vcluster.wait(job, states=("RUNNING",) + DONE)
    node = info.nodes[0]
    made = vcluster.wait_instances(node, 1)
    assert made[0].size == 1
    info = vcluster.wait(job)
    assert info.state == "COMPLETED", info
    out = vcluster.output(job)
    uuids = _mig_uuids(out)
    assert len(uuids) == 3 and set(uuids) == {made[0].mig_uuid}, out
    assert sorted(line.split()[1] for line in out.splitlines() if line.startswith("step")) == ["0", "1"]
    vcluster.wait_no_instances()


@pytest.mark.parametrize("tool", ["salloc", "srun"])
def test_interactive_allocations_get_the_instance_in_every_task(vcluster, tool):
    """``salloc --gres=gpu:<profile> srun ...`` and ``srun --gres=gpu:<profile> ...`` (an allocation srun
    makes itself): both run their tasks on the job's instance here (22.05 refuses the second)."""
    echo = ["sh", "-c", "echo task $SLURM_PROCID $CUDA_VISIBLE_DEVICES"]
    args = ([tool, "-n2", f"--gres=gpu:{PROFILE}", "srun", "-n2", *echo] if tool == "salloc"
            else [tool, "-n2", f"--gres=gpu:{PROFILE}", *echo])
    proc = vcluster.run(args, user="sgtest1", timeout=90)
    assert proc.returncode == 0, proc.stderr
    tasks = dict(line.split()[1:3] for line in proc.stdout.splitlines() if line.startswith("task"))
    assert set(tasks) == {"0", "1"} and len(set(tasks.values())) == 1, proc.stdout
    assert _mig_uuids(proc.stdout), proc.stdout
    vcluster.wait_no_instances()


def test_a_reconfigure_keeps_the_daemons_known_to_the_cluster(vcluster):
    """24.11 and later re-execute slurmctld and slurmd on ``scontrol reconfigure``, under Debian's names
    (slurmctld-wlm, slurmd-wlm): the cluster still finds them, so ``down`` stops them."""
    from slurm_gpu.testbed import local

    vcluster.run(["scontrol", "reconfigure"], check=True)
    deadline = time.monotonic() + 30
    while True:
        found = local.processes(vcluster.spec)
        daemons = {k for k in found if not k.startswith("slurmstepd")}
        pids = {found[k] for k in daemons}
        if daemons == {"slurmctld", *(f"slurmd:{n}" for n in vcluster.nodes)} and \
                set(_naming(vcluster.spec.conf).values()) <= pids | {found.get("slurmstepd", 0)}:
            break
        assert time.monotonic() < deadline, (found, _naming(vcluster.spec.conf))
        time.sleep(0.5)
    assert vcluster.run(["sinfo", "-h", "-o", "%t"], check=True).stdout.strip()


def test_two_instances_one_per_task(vcluster):
    job = vcluster.submit("-n2", f"--gres=gpu:{PROFILE}:2",
                          wrap='srun -n2 sh -c "echo task \\$SLURM_LOCALID \\$CUDA_VISIBLE_DEVICES"')
    assert vcluster.wait(job).state == "COMPLETED"
    tasks = dict(line.split()[1:3] for line in vcluster.output(job).splitlines() if line.startswith("task"))
    assert set(tasks) == {"0", "1"} and len(set(tasks.values())) == 2, tasks
    assert all(u.startswith("MIG-") for u in tasks.values())
    vcluster.wait_no_instances()


def test_multi_node_job_gets_an_instance_on_each_node(vcluster):
    job = vcluster.submit("-N2", "-n2", f"--gres=gpu:{PROFILE}",
                          wrap='srun -N2 -n2 sh -c "echo node \\$SLURMD_NODENAME \\$CUDA_VISIBLE_DEVICES"')
    info = vcluster.wait(job)
    assert info.state == "COMPLETED" and set(info.nodes) == set(vcluster.nodes)
    seen = dict(line.split()[1:3] for line in vcluster.output(job).splitlines() if line.startswith("node"))
    assert set(seen) == set(vcluster.nodes) and all(u.startswith("MIG-") for u in seen.values()), seen
    vcluster.wait_no_instances()


def test_a_job_naming_its_node_runs_there(vcluster):
    """``--nodelist`` with a profile the idle node does not publish (it offers 7g.80gb): under count
    admission job_submit.lua holds the job and the node releases it once it publishes the slot."""
    node = vcluster.nodes[1]
    job = vcluster.submit(f"--nodelist={node}", f"--gres=gpu:{PROFILE}", wrap="echo $CUDA_VISIBLE_DEVICES")
    info = vcluster.wait(job)
    assert info.state == "COMPLETED" and info.nodes == (node,), info
    assert len(_mig_uuids(vcluster.output(job))) == 1
    assert "awaits" not in info.admin_comment, info
    vcluster.wait_no_instances()


def test_scancel_destroys_the_instance(vcluster):
    job = vcluster.submit(f"--gres=gpu:{PROFILE}", wrap="sleep 60")
    info = vcluster.wait(job, states=("RUNNING",))
    vcluster.wait_instances(info.nodes[0], 1)
    vcluster.run(["scancel", job], user="sgtest1", check=True)
    assert vcluster.wait(job).state == "CANCELLED"
    vcluster.wait_no_instances()
    vcluster.wait_idle()


def test_requeue_destroys_and_the_job_waits_again(vcluster):
    job = vcluster.submit("--requeue", f"--gres=gpu:{PROFILE}", wrap="sleep 60")
    vcluster.wait_instances(vcluster.wait(job, states=("RUNNING",)).nodes[0], 1)
    vcluster.run(["scontrol", "requeue", job], check=True)
    info = vcluster.wait(job, states=("PENDING",))
    assert info.restart_count == 1, info
    assert info.admin_comment.startswith(f"slurm-gpu:gpu:{PROFILE}:1"), info
    vcluster.wait_no_instances()
    vcluster.run(["scancel", job], check=True)
    vcluster.wait_idle()


def _created(vcluster) -> Dict[str, List[str]]:
    """job id -> the MIG UUIDs its Prolog created, from every node's hooks.log."""
    made: Dict[str, List[str]] = {}
    for node in vcluster.nodes:
        path = os.path.join(vcluster.spec.dir, node, "state", "hooks.log")
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                rec = json.loads(line)
                if rec.get("hook") == "prolog" and rec.get("action") == "created":
                    made[rec["job_id"]] = rec["mig_uuids"]
    return made


@pytest.mark.parametrize("vcluster", [(v, "counts") for v in VERSIONS], indirect=True,
                         ids=lambda p: f"{p[0]}-{p[1]}")
def test_count_admission_burst_of_mixed_profiles_fits_exactly(vcluster):
    """More mixed-profile demand than the 4 GPUs hold, released at once with Slurm's default scheduler
    settings (what count admission ships): every job runs with its instances, none is requeued, no node
    drains, nothing is left."""
    asks = [("1g.10gb", 1)] * 4 + [("2g.20gb", 2)] * 2 + [("3g.40gb", 1)] * 3 + [
        ("4g.40gb", 1), ("7g.80gb", 1), ("7g.80gb", 2)]
    jobs = {vcluster.submit("--hold", f"--gres=gpu:{p}:{n}", wrap="sleep 2"): n for p, n in asks}
    vcluster.run(["scontrol", "release", ",".join(jobs)], check=True)
    for job in jobs:
        info = vcluster.wait(job, timeout=120)
        assert info.state == "COMPLETED" and info.restart_count == 0, info
    made = _created(vcluster)
    assert {j: len(made.get(j, [])) for j in jobs} == jobs, made
    vcluster.wait_no_instances()
    vcluster.wait_idle()


def test_slurmd_restart_keeps_the_job_and_its_instance(vcluster):
    from slurm_gpu.testbed import rooted

    job = vcluster.submit(f"--gres=gpu:{PROFILE}", wrap="sleep 6; echo $CUDA_VISIBLE_DEVICES")
    node = vcluster.wait(job, states=("RUNNING",)).nodes[0]
    before = vcluster.wait_instances(node, 1)
    pid_file = os.path.join(vcluster.spec.dir, node, "slurmd.pid")
    with open(pid_file, encoding="ascii") as fh:
        os.kill(int(fh.read().strip()), signal.SIGTERM)
    deadline = time.monotonic() + 10
    while os.path.exists(pid_file) and time.monotonic() < deadline:
        time.sleep(0.1)
    subprocess.run(rooted.command(vcluster.spec, ["slurmd", "-N", node, "-f", vcluster.spec.conf]),
                   check=True, timeout=30)
    assert vcluster.instances(node) == before
    info = vcluster.wait(job)
    assert info.state == "COMPLETED", info
    assert _mig_uuids(vcluster.output(job)) == [before[0].mig_uuid]
    vcluster.wait_no_instances()
    vcluster.wait_idle()


def test_forged_job_name_changes_nothing(vcluster):
    forged = "x AdminComment=slurm-gpu:gpu:7g.80gb:1 TresPerNode=gres/mig:7 Features=mig.7g.80gb.1"
    job = vcluster.submit(f"--job-name={forged}", f"--gres=gpu:{PROFILE}", wrap="sleep 3")
    info = vcluster.wait(job, states=("RUNNING",))
    assert info.admin_comment == f"slurm-gpu:gpu:{PROFILE}:1"
    made = vcluster.wait_instances(info.nodes[0], 1)
    assert [i.size for i in made] == [1], made  # one 1-slice instance, not the 7g the name claims
    assert vcluster.wait(job).state == "COMPLETED"
    vcluster.wait_no_instances()


def test_adapter_reads_this_version_from_json_inside_the_root(vcluster):
    job = vcluster.submit(f"--gres=gpu:{PROFILE}", wrap="sleep 4")
    node = vcluster.wait(job, states=("RUNNING",)).nodes[0]
    vcluster.wait_instances(node, 1)
    code = (
        "import json\n"
        "from slurm_gpu.slurm.client import SlurmCli\n"
        "s = SlurmCli()\n"
        f"j = s.job({job})\n"
        f"avail, active = s.node_features({node!r})\n"
        f"gres, used = s.node_gres({node!r})\n"
        "typed = lambda terms: {g.type: g.count for g in terms if g.name == 'migp'}\n"
        f"print(json.dumps({{'version': s.version(), 'state': j.state, 'nodes': j.nodes, 'uid': j.user_id,"
        f" 'request': [j.request().profile, j.request().count], 'slices': j.mig_slices_per_node({node!r}),"
        f" 'active': s.active_jobs_on({node!r}), 'avail': avail, 'act': active,"
        f" 'gres': typed(gres), 'used': typed(used)}}))\n"
    )
    got = json.loads(vcluster.in_root_python(code))
    import pwd

    assert ".".join(f"{x:02d}" for x in got["version"]) == vcluster.version
    assert got["state"] == "RUNNING" and got["nodes"] == [node]
    assert got["uid"] == pwd.getpwnam("sgtest1").pw_uid
    assert got["request"] == [PROFILE, 1]
    assert got["active"] == {job: "RUNNING"}
    if vcluster.counts:
        # the node's migp counts as `scontrol show node -d` prints them on this version: the running
        # job's slot allocated, the padding type keeping the total
        assert got["used"].get(PROFILE) == 1 and got["gres"].get(PROFILE, 0) >= 1, got
        assert sum(got["gres"].values()) == 2 * 7, got  # 2 H100s, 7 instances each at most
    else:
        assert got["slices"] == 1
        assert f"mig.{PROFILE}.1" in got["avail"] and set(got["act"]) <= set(got["avail"])
    vcluster.wait(job)
    vcluster.wait_no_instances()


def test_adapter_writes_on_this_version(vcluster):
    """What the hooks write through the adapter: requeue, hold and cancel with our marker kept next to the
    record, and a drain, run inside the root against that version's controller."""
    # one job per node: each takes a whole node (two 7g.80gb), so no --nodelist is needed (count admission
    # refuses a nodelist whose nodes publish none of the profile at submit time, docs/admission.md)
    whole = "--gres=gpu:7g.80gb:2"
    running = vcluster.submit(whole, wrap="sleep 60")
    other = vcluster.submit(whole, wrap="sleep 60")
    on = {job: vcluster.wait(job, states=("RUNNING",)).nodes[0] for job in (running, other)}
    assert set(on.values()) == set(vcluster.nodes), on
    for job in (running, other):
        vcluster.wait_instances(on[job], 2)
    node = on[other]
    code = (
        "from slurm_gpu.slurm.client import SlurmCli\n"
        "s = SlurmCli()\n"
        f"s.requeue({running}, 'raced', s.job({running}).admin_comment)\n"
        f"s.hold({other}, 'held test', s.job({other}).admin_comment)\n"
        f"s.drain({node!r}, 'adapter test')\n"
    )
    try:
        vcluster.in_root_python(code)
        requeued = vcluster.wait(running, states=("PENDING",))
        held = vcluster.wait(other, states=("PENDING",))
        assert requeued.admin_comment == "slurm-gpu:gpu:7g.80gb:2 slurm-gpu-requeued:raced", requeued
        assert held.admin_comment == "slurm-gpu:gpu:7g.80gb:2 slurm-gpu-refused:held_test", held
        assert requeued.restart_count == 1 and "Held" in held.reason, (requeued, held)
        assert vcluster.node_states()[node].startswith("dr"), vcluster.node_states()  # drain, drng
        cancel = f"s.cancel({running}, 'gone', s.job({running}).admin_comment)\n"
        vcluster.in_root_python("from slurm_gpu.slurm.client import SlurmCli\ns = SlurmCli()\n" + cancel)
        cancelled = vcluster.wait(running)
        assert cancelled.state == "CANCELLED"
        assert cancelled.admin_comment == "slurm-gpu:gpu:7g.80gb:2 slurm-gpu-refused:gone", cancelled
    finally:
        vcluster.run(["scancel", running, other])
        vcluster.run(["scontrol", "update", f"nodename={node}", "state=resume"], check=True)
    vcluster.wait_no_instances()
    vcluster.wait_idle()
