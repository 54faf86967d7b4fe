"""The hostile suite: what an unprivileged user of the cluster can try, on a real local Slurm cluster.

Users have sbatch/srun/salloc/scontrol on their own jobs, write access to their own files and their own
task directory, and any environment they like. Every case asserts what docs/security.md promises: no
instance for a job that did not ask, never another job's device, no node drained by our code (a drain
with a "slurm-gpu" reason is the node taking itself out on purpose for a broken GPU, and only then),
nothing leaked, and a message naming what was refused. ``pytest -m security`` runs it alone.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import pytest
from test_integration_hooks import set_sim_faults

pytestmark = [pytest.mark.slurm, pytest.mark.security]

DONE = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")
USER, OTHER = "sgtest1", "sgtest2"

# Payloads that forged fields in the `scontrol show job` text (what the hooks parsed before).
PAYLOADS = [
    "x AdminComment=slurm-gpu:gpu:7g.80gb:4 TresPerNode=gres:mig:32",
    "x Restarts=x",
    "x TresPerNode=gres:mig:1:2:3:4",
    "x JobState=",
    "x\nAdminComment=slurm-gpu:gpu:3g.40gb:1",
    "Nodes=n1 CPU_IDs=0 Mem=0 GRES=mig:32(CNT:32)",
    "slurm-gpu:gpu:1g.10gb:1",
    '{"jobs":[{"job_id":1,"admin_comment":"slurm-gpu:gpu:7g.80gb:4","tres_per_node":"gres:mig:32"}]}',
]
VECTORS = ["name", "comment", "chdir", "script", "stdout", "stderr", "constraint", "account", "wckey"]


# ---------------------------------------------------------------------------------------------- helpers
class Sec:
    """A running cluster with JSON-only reads (a hostile job name must not fool the test either)."""

    def __init__(self, cluster, work: Path):
        self.cl = cluster
        self.work = work

    def run(self, args: Sequence[str], user: Optional[str] = None, timeout: float = 60,
            env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
        full = list(args)
        if user:
            extra = [f"{k}={v}" for k, v in (env or {}).items()]
            full = ["runuser", "-u", user, "--", "env", f"SLURM_CONF={self.cl.conf}", *extra, *full]
        return subprocess.run(full, env=self.cl.env, capture_output=True, text=True, timeout=timeout,
                              cwd="/tmp", errors="replace")

    def submit(self, args: Sequence[str], script: Optional[str] = None, wrap: str = "true",
               user: str = USER, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
        tail = [script] if script else ["--wrap", wrap]
        return self.run(["sbatch", "--parsable", *args, *tail], user=user, env=env)

    def jobs(self) -> Dict[int, dict]:
        out = self.run(["squeue", "--json", "--states=all"]).stdout
        return {j["job_id"]: j for j in json.loads(out)["jobs"]}

    def job(self, job_id: int) -> dict:
        return self.jobs()[int(job_id)]

    def wait(self, job_ids: Sequence[int], timeout: float = 180,
             also: Tuple[str, ...] = ()) -> Dict[int, dict]:
        deadline = time.monotonic() + timeout
        while True:
            jobs = self.jobs()
            mine = {j: jobs[j] for j in job_ids}
            if all(_state(v) in DONE + also for v in mine.values()):
                return mine
            if time.monotonic() > deadline:
                left = {j: _state(v) for j, v in mine.items() if _state(v) not in DONE + also}
                raise AssertionError(f"jobs not done after {timeout} s: {left}\n{self.logs()}")
            time.sleep(0.5)

    def events(self, job_id: int) -> List[dict]:
        out = []
        for node in self.cl.nodes:
            path = Path(self.cl.spec.dir) / node / "state" / "hooks.log"
            if path.exists():
                for line in path.read_text().splitlines():
                    rec = json.loads(line)
                    if str(rec.get("job_id")) == str(job_id):
                        out.append(rec)
        return out

    def created(self, job_id: int) -> List[dict]:
        return [e for e in self.events(job_id) if e.get("action") == "created"]

    def instances(self) -> List:
        from slurm_gpu.devices.open import open_driver

        out = []
        for node in self.cl.nodes:
            driver = open_driver("sim", sim_state=str(Path(self.cl.spec.dir) / node / "gpus.json"))
            try:
                out.extend(driver.instances())
            finally:
                driver.close()
        return out

    def drains(self) -> Dict[str, str]:
        """Drained nodes and why (sinfo's own reason column, written by Slurm or by us)."""
        out = self.run(["sinfo", "-h", "-N", "-o", "%N|%t|%E"]).stdout
        found = {}
        for line in out.splitlines():
            node, state, reason = line.split("|", 2)
            if any(s in state for s in ("drain", "drng", "down", "fail")):
                found[node] = reason
        return found

    def resume(self) -> None:
        for node in self.cl.nodes:
            self.run(["scontrol", "update", f"nodename={node}", "state=resume"])

    def clean(self, timeout: float = 60) -> None:
        """Nothing leaked, nothing drained: every test ends here."""
        deadline = time.monotonic() + timeout
        while self.instances() and time.monotonic() < deadline:
            time.sleep(0.3)
        assert self.instances() == [], self.logs()
        assert self.drains() == {}, self.logs()

    def logs(self, lines: int = 15) -> str:
        """The daemons' last log lines, for an assertion message."""
        parts = []
        d = Path(self.cl.spec.dir)
        for path in [d / "log" / "slurmctld.log", *(d / n / "slurmd.log" for n in self.cl.nodes),
                     *(d / n / "state" / "hooks.log" for n in self.cl.nodes)]:
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path}\n" + "\n".join(tail))
        return "\n".join(parts)

    def reconcile(self) -> subprocess.CompletedProcess:
        """``slurm-gpu reconcile`` on every node, as the site's timer would run it."""
        import sys

        config = str(Path(self.cl.spec.dir) / "config.yaml")
        for node in self.cl.nodes:
            proc = self.run([sys.executable, "-m", "slurm_gpu", "--config", config, "reconcile",
                             "--node", node])
            if proc.returncode != 0:
                return proc
        return proc

    def set_faults(self, rules: Optional[str]) -> None:
        set_sim_faults(self.cl, rules)


def _state(job: dict) -> str:
    value = job["job_state"]
    return value[0] if isinstance(value, list) else value


def _admin(job: dict) -> str:
    return job.get("admin_comment") or ""


def _own(path: Path, user: str = USER) -> Path:
    import pwd

    pw = pwd.getpwnam(user)
    os.chown(path, pw.pw_uid, pw.pw_gid)
    return path


@pytest.fixture(scope="module")
def sec(tmp_path_factory):
    from conftest import running_cluster

    work = Path("/tmp") / f"sg-sec-{os.getpid()}"
    work.mkdir(mode=0o755, exist_ok=True)
    os.chmod(work, 0o1777)
    try:
        with running_cluster(prefix="sg-test-sec-") as cluster:
            s = Sec(cluster, work)
            yield s
            s.set_faults(None)
            s.resume()
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ------------------------------------------------------------------ 1. forged fields in user attributes
def _forged(sec: Sec, vector: str, payload: str, gres: Optional[str], n: int) -> subprocess.CompletedProcess:
    d = sec.work / f"v{n}"
    d.mkdir(mode=0o755)
    _own(d)
    args = ["-o", str(d / "out")]
    script = None
    if vector == "name":
        args += ["-J", payload]
    elif vector == "comment":
        args += ["--comment", payload]
    elif vector == "chdir":
        wd = d / payload.replace("/", "_")
        wd.mkdir()
        _own(wd)
        args += ["--chdir", str(wd)]
    elif vector == "script":
        path = d / (payload.replace("/", "_") + ".sh")
        path.write_text("#!/bin/sh\nenv\n")
        path.chmod(0o755)
        script = str(_own(path))
    elif vector == "stdout":
        args = ["-o", str(d / payload.replace("/", "_"))]
    elif vector == "stderr":
        args += ["-e", str(d / payload.replace("/", "_"))]
    else:
        args += [f"--{vector}", payload]
    if gres:
        args += [f"--gres={gres}"]
    return sec.submit(args, script=script, wrap="env")


FORGED = [(v, p) for v in VECTORS for p in PAYLOADS]
FORGED_WITH_GRES = [(v, p) for v in ("name", "comment", "chdir") for p in PAYLOADS]


@pytest.fixture(scope="module")
def forged_runs(sec):
    """Every forged-field job submitted at once; returns case -> (submission, job or None)."""
    cases = [(v, p, None) for v, p in FORGED] + [(v, p, "gpu:1g.10gb") for v, p in FORGED_WITH_GRES]
    subs = {c: _forged(sec, c[0], c[1], c[2], n) for n, c in enumerate(cases)}
    ids = [int(s.stdout.strip()) for s in subs.values() if s.returncode == 0]
    jobs = sec.wait(ids)
    yield {c: (s, jobs.get(int(s.stdout.strip())) if s.returncode == 0 else None) for c, s in subs.items()}
    sec.clean()


@pytest.mark.parametrize("vector,payload", FORGED,
                         ids=[f"{v}-{n % len(PAYLOADS)}" for n, (v, _) in enumerate(FORGED)])
def test_a_forged_field_gets_no_instance_and_drains_nothing(sec, forged_runs, vector, payload):
    sub, job = forged_runs[(vector, payload, None)]
    if job is None:  # Slurm itself refused the value: nothing ran, and it said why
        assert sub.stderr.strip(), sub
        return
    assert _state(job) == "COMPLETED", (job, sec.events(job["job_id"]))
    assert sec.created(job["job_id"]) == []
    assert [e["action"] for e in sec.events(job["job_id"]) if e["hook"] == "prolog"] == ["none"]
    assert sec.drains() == {}


@pytest.mark.parametrize("vector,payload", FORGED_WITH_GRES,
                         ids=[f"{v}-{n % len(PAYLOADS)}" for n, (v, _) in enumerate(FORGED_WITH_GRES)])
def test_a_forged_field_never_changes_what_a_mig_job_gets(sec, forged_runs, vector, payload):
    sub, job = forged_runs[(vector, payload, "gpu:1g.10gb")]
    assert job is not None, sub.stderr
    assert _state(job) == "COMPLETED" and _admin(job).startswith("slurm-gpu:gpu:1g.10gb:1")
    (made,) = sec.created(job["job_id"])
    assert len(made["mig_uuids"]) == 1 and "1g.10gb@" in made["message"]


# ------------------------------------------------------------------ 2. every request form at submit
OK = "ok"
SUBMIT_FORMS: List[Tuple[List[str], str, str]] = [
    # (sbatch options, OK or "refused", the recorded request / a piece of the message)
    (["--gres=gpu:1g.10gb"], OK, "gpu:1g.10gb:1"),
    (["--gres=gpu:3g.40gb:2"], OK, "gpu:3g.40gb:2"),
    (["--gres=gres:gpu:2g.20gb:3"], OK, "gpu:2g.20gb:3"),
    (["--gres=gpu:7g.80gb:4"], OK, "gpu:7g.80gb:4"),
    (["--gres=gpu:20gb"], OK, "gpu:1g.20gb:1"),
    (["--gres=gpu:20gb:2"], OK, "gpu:1g.20gb:2"),
    (["--gres=gpu:1"], OK, "gpu:7g.80gb:1"),
    (["--gres=gpu:4"], OK, "gpu:7g.80gb:4"),
    (["--gres=gpu:1g.10gb:1,gpu:1g.10gb:1"], OK, "gpu:1g.10gb:2"),
    (["--gres=gpu:1g.10gb+me"], OK, "gpu:1g.10gb+me:1"),
    (["--gres=gpu:1g.20gb:2"], OK, "gpu:1g.20gb:2"),
    (["--gres=gpu:4g.40gb"], OK, "gpu:4g.40gb:1"),
    (["--gres=gpu:mem=40G"], OK, "gpu:3g.40gb:1"),
    (["--gpus-per-node=1g.10gb:1"], OK, "gpu:1g.10gb:1"),
    (["--gres=gpu:1g.10gb", "-N2"], OK, "gpu:1g.10gb:1"),
    (["--gres=gpu:1g.10gb", "--array=0-1"], OK, "gpu:1g.10gb:1"),
    (["--gres=gpu:1g.10gb", "--constraint=mig"], "refused", "Invalid feature"),
    (["--gres=gpu:1g.10gb:0"], "refused", "at least 1"),
    (["--gres=gpu:1g.10gb:9"], "refused", "at most"),
    (["--gres=gpu:7g.80gb:5"], "refused", "at most"),
    (["--gres=gpu:3g.40gb:99999999999999999999"], "refused", "Invalid generic resource"),
    (["--gres=gpu:1g.10gb:-1"], "refused", "Invalid generic resource"),
    (["--gres=gpu:1g.10gb:1x"], "refused", "Invalid generic resource"),
    (["--gres=gpu:9g.90gb"], "refused", "unknown MIG profile"),
    (["--gres=gpu:0gb"], "refused", "at least 1gb"),
    (["--gres=gpu:0m"], "refused", "at least 1gb"),
    (["--gres=gpu:1k"], "refused", "at least 1gb"),
    (["--gres=gpu:1023m"], "refused", "at least 1gb"),
    (["--gres=gpu:100000gb"], "refused", "no MIG profile"),
    (["--gres=gpu:a100:1"], "refused", "unknown gpu type"),
    (["--gres=gpu:nvidia_h100_80gb_hbm3_3g.40gb"], "refused", "unknown gpu type"),
    (["--gres=gpu:banana"], "refused", "unknown gpu type"),
    (["--gres=gpu:1g.10gb,gpu:2g.20gb"], "refused", "one MIG profile per job"),
    (["--gres=gpu:1g.10gb:1:2"], "refused", "Invalid generic resource"),
    (["--gres=mig:4"], "refused", "managed by slurm-gpu"),
    (["--gres=gres:mig:32"], "refused", "managed by slurm-gpu"),
    (["--gres=gpu:1g.10gb", "--constraint=mig.7g.80gb.4"], "refused", "managed by slurm-gpu"),
    (["--constraint=mig.1g.10gb.1"], "refused", "managed by slurm-gpu"),
    (["--constraint=a|mig.1g.10gb.1"], "refused", "managed by slurm-gpu"),
    (["--gpus=1"], "refused", "instead of --gpus"),
    (["--gpus=1g.10gb:1"], "refused", "instead of --gpus"),
    (["--gpus-per-task=1", "-n1"], "refused", "instead of --gpus"),
    (["--gpus-per-task=1g.10gb:1", "-n1"], "refused", "instead of --gpus"),
    (["--gpus-per-socket=1g.10gb:1", "--sockets-per-node=1"], "refused", "instead of --gpus"),
    (["--gres=gpu:1g.10gb", "--mem-per-gpu=1G"], "refused", "--mem-per-gpu"),
    (["--gres=gpu:1g.10gb", "--cpus-per-gpu=1"], "refused", "--cpus-per-gpu"),
    (["--gres=gpu:1g.10gb", "--ntasks-per-gpu=1"], "refused", "--ntasks-per-gpu"),
]


def _form_id(case) -> str:
    return " ".join(case[0]).replace("--", "")[:60]


@pytest.mark.parametrize("args,expect,detail", SUBMIT_FORMS, ids=[_form_id(c) for c in SUBMIT_FORMS])
def test_every_request_form_works_or_is_refused_by_name(sec, args, expect, detail):
    sub = sec.submit(["-H", "-o", "/dev/null", *args])
    if expect == OK:
        assert sub.returncode == 0, sub.stderr
        job_id = int(sub.stdout.strip().split(";")[0])
        try:
            assert _admin(sec.job(job_id)) == f"slurm-gpu:{detail}"
        finally:
            sec.run(["scancel", str(job_id)])
    else:
        assert sub.returncode != 0, sub.stdout
        assert detail in sub.stderr, sub.stderr


def test_a_busy_cluster_makes_mig_jobs_pend_instead_of_refusing_them(sec):
    fill = [int(sec.submit(["-o", "/dev/null", "-w", n, "--gres=gpu:7g.80gb:4"], wrap="sleep 6").stdout)
            for n in sec.cl.nodes]
    deadline = time.monotonic() + 30
    while not all(sec.created(j) for j in fill):
        assert time.monotonic() < deadline, sec.logs()
        time.sleep(0.2)
    late = [sec.submit(["-o", "/dev/null", f"--gres={g}"]) for g in ("gpu:1g.10gb", "gpu:7g.80gb:4")]
    assert all(sub.returncode == 0 for sub in late), [sub.stderr for sub in late]
    ids = [int(sub.stdout.strip()) for sub in late]
    assert all(_state(sec.job(j)) == "PENDING" for j in ids)
    jobs = sec.wait(fill + ids, timeout=120)
    assert all(_state(j) == "COMPLETED" for j in jobs.values()) and all(sec.created(j) for j in ids)
    sec.clean()


def test_srun_without_an_allocation_is_refused_and_salloc_works(sec):
    sub = sec.run(["srun", "--gres=gpu:1g.10gb", "true"], user=USER)
    assert sub.returncode != 0 and "salloc --gres=gpu:<profile>" in sub.stderr
    got = sec.run(["salloc", "--gres=gpu:1g.10gb", "srun", "sh", "-c", "echo $CUDA_VISIBLE_DEVICES"],
                  user=USER)
    assert got.returncode == 0 and got.stdout.strip().startswith("MIG-"), got.stderr
    sec.clean()


def test_heterogeneous_components_each_see_their_own_instance(sec):
    script = sec.work / "het.sh"
    script.write_text("#!/bin/sh\n"
                      "srun --het-group=0,1 sh -c 'echo $SLURMD_NODENAME=$CUDA_VISIBLE_DEVICES'\n")
    script.chmod(0o755)
    out = sec.work / "het.out"
    sub = sec.submit(["-o", str(out), "-n1", "-w", sec.cl.nodes[0], "--gres=gpu:1g.10gb", ":",
                      "-n1", "-w", sec.cl.nodes[1], "--gres=gpu:2g.20gb"], script=str(script))
    assert sub.returncode == 0, sub.stderr
    leader = int(sub.stdout.strip().split(";")[0])
    sec.wait([leader, leader + 1])
    seen = dict(line.split("=", 1) for line in out.read_text().split())
    made = {e["node"]: e["mig_uuids"] for j in (leader, leader + 1) for e in sec.created(j)}
    assert seen == {node: uuids[0] for node, uuids in made.items()} and len(set(seen.values())) == 2
    sec.clean()


# ------------------------------------------------------------------ 3. what users change on pending jobs
MODIFY = [
    ("features=", "Invalid feature specification"),
    ("features=foo", "Invalid feature specification"),
    ("features=mig.7g.80gb.4", "Invalid feature specification"),
    ("gres=", "Invalid generic resource"),
    ("gres=gpu:7g.80gb:4", "Invalid generic resource"),
    ("gres=gpu:1g.10gb+me", "Invalid generic resource"),
    ("gres=mig:32", "Invalid generic resource"),
    ("admincomment=slurm-gpu:gpu:7g.80gb:4", "denied"),
    ("comment=AdminComment=slurm-gpu:gpu:7g.80gb:4", None),
    ("name=x AdminComment=slurm-gpu:gpu:7g.80gb:4 TresPerNode=gres:mig:32", None),
    ("dependency=", None),
    ("partition=gpu", None),
    ("numnodes=1", None),
    ("starttime=now", None),
]


@pytest.mark.parametrize("change,refusal", MODIFY, ids=[m[0][:40] for m in MODIFY])
def test_pending_mig_job_updates_are_refused_or_harmless(sec, change, refusal):
    sub = sec.submit(["-H", "-o", "/dev/null", "--gres=gpu:2g.20gb"])
    job_id = int(sub.stdout.strip())
    key, _, value = change.partition("=")
    upd = sec.run(["scontrol", "update", f"jobid={job_id}", f"{key}={value}"], user=USER)
    if refusal:
        assert upd.returncode != 0 and refusal in upd.stderr, upd.stderr
    sec.run(["scontrol", "release", str(job_id)], user=USER)
    (job,) = sec.wait([job_id]).values()
    assert _state(job) == "COMPLETED", (job, sec.events(job_id))
    (made,) = sec.created(job_id)
    assert len(made["mig_uuids"]) == 1 and "2g.20gb@" in made["message"]
    sec.clean()


@pytest.mark.parametrize("change", ["gres=gpu:1g.10gb", "features=mig.1g.10gb.1", "gres=mig:1"])
def test_a_mig_request_cannot_be_added_later(sec, change):
    sub = sec.submit(["-H", "-o", "/dev/null"])
    job_id = int(sub.stdout.strip())
    key, _, value = change.partition("=")
    upd = sec.run(["scontrol", "update", f"jobid={job_id}", f"{key}={value}"], user=USER)
    assert upd.returncode != 0, upd.stdout
    sec.run(["scancel", str(job_id)])


def test_a_requeued_job_cannot_be_restarted_early_without_its_instance(sec):
    sec.set_faults("nvmlDeviceCreateGpuInstanceWithPlacement=INSUFFICIENT_RESOURCES")  # a lost race
    try:
        job_id = int(sec.submit(["-o", "/dev/null", "--gres=gpu:1g.10gb"]).stdout.strip())
        deadline = time.monotonic() + 60
        while "slurm-gpu-requeued" not in _admin(sec.job(job_id)):
            assert time.monotonic() < deadline, sec.logs()
            time.sleep(0.3)
    finally:
        sec.set_faults(None)
    upd = sec.run(["scontrol", "update", f"jobid={job_id}", "starttime=now"], user=USER)
    assert upd.returncode != 0 and "Invalid time specified" in upd.stderr, upd.stderr
    assert _state(sec.job(job_id)) in ("PENDING", "COMPLETING") and sec.drains() == {}
    sec.run(["scancel", str(job_id)])
    sec.clean()


def test_a_job_its_user_requeued_cannot_be_restarted_early_either(sec):
    job_id = int(sec.submit(["-o", "/dev/null", "--gres=gpu:1g.10gb"], wrap="sleep 30").stdout.strip())
    deadline = time.monotonic() + 30
    while not sec.created(job_id):
        assert time.monotonic() < deadline, sec.logs()
        time.sleep(0.2)
    req = sec.run(["scontrol", "requeue", str(job_id)], user=USER)
    assert req.returncode == 0, req.stderr
    upd = sec.run(["scontrol", "update", f"jobid={job_id}", "starttime=now"], user=USER)
    assert upd.returncode != 0 and "Invalid time specified" in upd.stderr, upd.stderr
    sec.run(["scancel", str(job_id)])
    sec.wait([job_id])
    sec.clean()


# ------------------------------------------------------------------ 4. device isolation between jobs
OPEN_CAPS = r"""
import errno, os, sys, time
paths = sys.argv[2:]
seen = {}
end = time.time() + float(sys.argv[1])
while True:
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY)
            os.close(fd)
            seen.setdefault(p, set()).add("OPENED")
        except OSError as e:
            seen.setdefault(p, set()).add(errno.errorcode[e.errno])
    if time.time() > end:
        break
    time.sleep(0.01)
for p in paths:
    print(p, ",".join(sorted(seen[p])))
"""


def _caps(sec: Sec, node: str) -> List[str]:
    base = Path(sec.cl.spec.dir) / node / "sandbox" / "dev"
    minors = [3 + 135 * g + 9 * gi + k for g in range(4) for gi in range(1, 8) for k in (0, 1)]
    return [str(base / "nvidia-caps" / f"nvidia-cap{m}") for m in minors] + \
        [str(base / f"nvidia{g}") for g in range(4)]


def _probe(sec: Sec, user: str, node: str, seconds: float, paths: Sequence[str], gres: Optional[str] = None,
           env: Optional[Dict[str, str]] = None) -> int:
    script = sec.work / "open_caps.py"
    script.write_text(OPEN_CAPS)
    out = sec.work / f"probe-{user}-{time.monotonic_ns()}"
    args = ["-o", str(out), "-w", node] + ([f"--gres={gres}"] if gres else [])
    cmd = f"python3 {script} {seconds} " + " ".join(paths)
    sub = sec.submit(args, wrap=cmd, user=user, env=env)
    assert sub.returncode == 0, sub.stderr
    job_id = int(sub.stdout.strip())
    sec.out = getattr(sec, "out", {})
    sec.out[job_id] = out
    return job_id


def _probed(sec: Sec, job_id: int) -> Dict[str, set]:
    text = sec.out[job_id].read_text()
    return {p: set(v.split(",")) for p, v in (line.rsplit(" ", 1) for line in text.splitlines()
                                               if line.startswith("/"))}


def _running(sec: Sec, ids: Sequence[int], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not all(_state(sec.job(j)) == "RUNNING" for j in ids):
        assert time.monotonic() < deadline, sec.logs()
        time.sleep(0.2)


def _own_files(sec: Sec, node: str, job_id: int) -> set:
    """The device files a running job may use: its instances' caps and their parent GPUs."""
    base = Path(sec.cl.spec.dir) / node / "sandbox" / "dev"
    (made,) = sec.created(job_id)
    minors = {g.index: g.minor for g in _gpus(sec, node)}
    files = set()
    for inst in sec.instances():
        if inst.mig_uuid in made["mig_uuids"]:
            files |= {str(base / "nvidia-caps" / f"nvidia-cap{inst.gi_cap_minor}"),
                      str(base / "nvidia-caps" / f"nvidia-cap{inst.ci_cap_minor}"),
                      str(base / f"nvidia{minors[inst.gpu_index]}")}
    assert len(files) >= 3
    return files


def _gpus(sec: Sec, node: str) -> List:
    from slurm_gpu.devices.open import open_driver

    driver = open_driver("sim", sim_state=str(Path(sec.cl.spec.dir) / node / "gpus.json"))
    try:
        return driver.gpus()
    finally:
        driver.close()


PASSED_CHECKS = {"ENXIO", "OPENED"}  # ENXIO: every permission check passed, the (simulated) device said no


def test_no_other_job_can_open_an_instance_even_while_it_is_created(sec):
    node = sec.cl.nodes[0]
    paths = _caps(sec, node)
    # Watchers: another user, and a GPU-less job of the same user, polling every device file...
    watch_other = _probe(sec, OTHER, node, 12, paths)
    watch_same = _probe(sec, USER, node, 12, paths)
    _running(sec, [watch_other, watch_same])
    time.sleep(1)
    # ...while jobs of USER are created on the same node, each probing its own files and the others'.
    owners = [_probe(sec, USER, node, 4, paths, gres=g)
              for g in ("gpu:1g.10gb", "gpu:2g.20gb:2", "gpu:3g.40gb")]
    deadline = time.monotonic() + 60
    while not all(sec.created(j) for j in owners):
        assert time.monotonic() < deadline, sec.logs()
        time.sleep(0.2)
    own = {j: _own_files(sec, node, j) for j in owners}
    sec.wait(owners + [watch_other, watch_same], timeout=120)
    for watcher in (watch_other, watch_same):
        seen = _probed(sec, watcher)
        assert not any(v & PASSED_CHECKS for v in seen.values()), seen
    # The same user's files pass the file-mode check: the job's cgroup is what refused them.
    assert any("EPERM" in _probed(sec, watch_same)[f] for f in own[owners[0]])
    for j in owners:
        seen = _probed(sec, j)
        passed = {p for p, v in seen.items() if v & PASSED_CHECKS}
        assert passed == own[j] and not any("OPENED" in v for v in seen.values()), (j, passed, own[j])
    sec.clean()


def test_a_forged_het_variable_names_another_job_whose_devices_stay_closed(sec):
    node = sec.cl.nodes[1]
    victim = _probe(sec, USER, node, 60, [str(Path(sec.cl.spec.dir))], gres="gpu:1g.10gb")
    deadline = time.monotonic() + 30
    while not sec.created(victim):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    stolen = _own_files(sec, node, victim)
    forged = {"SLURM_JOB_ID_HET_GROUP_0": str(victim), "SLURM_JOB_NODELIST_HET_GROUP_0": node}
    thief = _probe(sec, USER, node, 1, sorted(stolen), env=forged)
    sec.wait([thief], timeout=60)
    seen = _probed(sec, thief)
    assert all(v == {"EPERM"} for v in seen.values()), seen
    sec.run(["scancel", str(victim)])
    sec.wait([victim])
    sec.clean()


# ------------------------------------------------------------------ 5. TaskProlog environment
TASK_ENV = [
    {"SLURM_LOCALID": "-1"},
    {"SLURM_LOCALID": "99999999999999999999"},
    {"SLURM_LOCALID": "x"},
    {"SLURMD_NODENAME": "../../../etc"},
    {"SLURM_JOB_ID_HET_GROUP_0": "../1"},
    {"SLURM_JOB_ID_HET_GROUP_0": "1;export X=1"},
    {"SLURM_GPU_MIG_DEVICES": "MIG-x\nexport LD_PRELOAD=/tmp/x.so"},
    {"CUDA_VISIBLE_DEVICES": "MIG-forged"},
    {"PYTHONPATH": "/tmp/evil", "PYTHONSTARTUP": "/tmp/evil.py"},
    {"LD_PRELOAD": "/nonexistent.so"},
]


@pytest.mark.parametrize("env", TASK_ENV, ids=[",".join(e) for e in TASK_ENV])
def test_hostile_task_environment_changes_nothing_but_the_users_own_task(sec, env):
    out = sec.work / f"task-{time.monotonic_ns()}"
    sub = sec.submit(["-o", str(out), "--gres=gpu:1g.10gb", "--export=ALL"], user=USER, env=env,
                     wrap="echo CVD=$CUDA_VISIBLE_DEVICES; echo X=$X")
    job_id = int(sub.stdout.strip())
    (job,) = sec.wait([job_id]).values()
    assert _state(job) == "COMPLETED", sec.events(job_id)
    (made,) = sec.created(job_id)
    lines = out.read_text().splitlines()
    assert f"CVD={made['mig_uuids'][0]}" in lines and "X=" in lines
    sec.clean()


# ------------------------------------------------------------------ 6. files planted in state directories
def _task_dir(sec: Sec, node: str, user: str = USER) -> Path:
    import pwd

    return Path(sec.cl.spec.dir) / node / "state" / "tasks" / str(pwd.getpwnam(user).pw_uid)


@pytest.mark.parametrize("plant", ["directory", "symlink", "file", "fifo"])
def test_a_planted_task_file_spoils_only_the_users_own_job(sec, plant):
    node = sec.cl.nodes[0]
    sub = sec.submit(["-H", "-o", "/dev/null", "-w", node, "--gres=gpu:1g.10gb"], wrap="sleep 1")
    job_id = int(sub.stdout.strip())
    tasks = _task_dir(sec, node)
    if not tasks.exists():  # the user's directory appears with their first MIG job on the node
        first = int(sec.submit(["-o", "/dev/null", "-w", node, "--gres=gpu:1g.10gb"]).stdout.strip())
        sec.wait([first])
    target = tasks / str(job_id)
    code = {"directory": f"os.mkdir({str(target)!r})",
            "symlink": f"os.symlink('/etc/passwd', {str(target)!r})",
            "file": f"open({str(target)!r}, 'w').write('MIG-forged-uuid\\n')",
            "fifo": f"os.mkfifo({str(target)!r})"}[plant]
    planted = sec.run(["python3", "-c", f"import os; os.chmod({str(tasks)!r}, 0o700); {code}"], user=USER)
    assert planted.returncode == 0, planted.stderr
    passwd = Path("/etc/passwd").read_bytes()
    sec.run(["scontrol", "release", str(job_id)], user=USER)
    if plant == "directory":
        deadline = time.monotonic() + 60
        while "slurm-gpu-refused" not in _admin(sec.job(job_id)):
            assert time.monotonic() < deadline, sec.logs()
            time.sleep(0.3)
    else:
        (job,) = sec.wait([job_id]).values()
        assert _state(job) == "COMPLETED" and sec.created(job_id)
    assert Path("/etc/passwd").read_bytes() == passwd
    assert stat.S_IMODE(os.stat(tasks).st_mode) == 0o500 or plant == "directory"
    if plant == "directory":  # the prolog could not leave the file: that job is held, nothing else
        sec.run(["scancel", str(job_id)])
        shutil.rmtree(target, ignore_errors=True)
    sec.clean()


def test_state_directories_admit_no_other_user(sec):
    state = Path(sec.cl.spec.dir) / sec.cl.nodes[0] / "state"
    for sub in ("jobs", "lock", "history.log"):
        probe = sec.run(["python3", "-c", f"import os; os.listdir({str(state / sub)!r})" if sub == "jobs"
                         else f"open({str(state / sub)!r}, 'a')"], user=OTHER)
        assert probe.returncode != 0 and "Permission denied" in probe.stderr


# ------------------------------------------------------------------ 7. bursts and slow drivers on one node
@pytest.fixture(scope="module")
def slow():
    """One node with 8 simulated H100: for bursts and slow drivers."""
    from conftest import running_cluster

    work = Path("/tmp") / f"sg-slow-{os.getpid()}"
    work.mkdir(mode=0o1777, exist_ok=True)
    os.chmod(work, 0o1777)
    try:
        with running_cluster(prefix="sg-test-slow-", nodes=1, gpus="H100-80GB:8", cpus=32) as cluster:
            yield Sec(cluster, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _release_all(s: Sec, ids: Sequence[int]) -> None:
    s.run(["scontrol", "release", ",".join(str(j) for j in ids)], user=USER)


def test_a_burst_with_a_slow_driver_drains_nothing_and_every_job_gets_its_device(slow):
    slow.set_faults("nvmlDeviceCreateGpuInstanceWithPlacement=delay:2")
    try:
        ids = [int(slow.submit(["-H", "-o", str(slow.work / f"b{n}"), "--gres=gpu:1g.10gb"],
                               wrap="echo $CUDA_VISIBLE_DEVICES").stdout.strip()) for n in range(24)]
        _release_all(slow, ids)
        jobs = slow.wait(ids, timeout=240)
    finally:
        slow.set_faults(None)
    assert all(_state(j) == "COMPLETED" for j in jobs.values()), slow.logs()
    uuids = [(slow.work / f"b{n}").read_text().strip() for n in range(24)]
    assert all(u.startswith("MIG-") for u in uuids)
    made = [e for j in ids for e in slow.created(j)]
    assert len(made) == 24 and min(e["seconds"] for e in made) >= 2  # the slow driver was in force
    slow.clean()


def test_a_slow_eight_instance_prolog_starves_no_epilog(slow):
    slow.set_faults("nvmlDeviceCreateGpuInstanceWithPlacement=delay:4.5")
    try:
        small = [int(slow.submit(["-o", "/dev/null", "--gres=gpu:1g.10gb"], wrap="true").stdout.strip())
                 for _ in range(3)]
        time.sleep(1)
        big = int(slow.submit(["-o", "/dev/null", "--gres=gpu:1g.10gb:8"], wrap="true").stdout.strip())
        more = [int(slow.submit(["-o", "/dev/null", "--gres=gpu:2g.20gb"], wrap="true").stdout.strip())
                for _ in range(3)]
        jobs = slow.wait(small + [big] + more, timeout=300)
    finally:
        slow.set_faults(None)
    assert all(_state(j) == "COMPLETED" for j in jobs.values()), slow.logs()
    assert all(slow.created(j) for j in jobs)
    slow.clean()


def test_an_epilog_waiting_for_busy_instances_starves_no_other_hook(slow):
    slow.set_faults("nvmlGpuInstanceDestroy=IN_USE")
    try:
        busy = int(slow.submit(["-o", "/dev/null", "--gres=gpu:3g.40gb:4"], wrap="true").stdout.strip())
        others = [int(slow.submit(["-o", "/dev/null", "--gres=gpu:1g.10gb"], wrap="sleep 1").stdout.strip())
                  for _ in range(4)]
        jobs = slow.wait([busy] + others, timeout=180)
    finally:
        slow.set_faults(None)
    assert all(_state(j) == "COMPLETED" for j in jobs.values()), slow.logs()
    assert slow.drains() == {}
    # The busy job's instances stayed for reconcile; once they are free it removes them.
    rec = slow.reconcile()
    assert rec.returncode == 0, rec.stderr + rec.stdout
    slow.clean()


# ------------------------------------------------------------------ 8. faults at every NVML call of the hooks
NVML_CALLS = ["nvmlInit", "nvmlDeviceGetCount", "nvmlDeviceGetHandleByIndex", "nvmlDeviceGetMigMode",
              "nvmlDeviceGetGpuInstances", "nvmlDeviceGetGpuInstanceProfileInfo",
              "nvmlDeviceCreateGpuInstanceWithPlacement", "nvmlGpuInstanceCreateComputeInstance",
              "nvmlDeviceGetMigDeviceHandleByIndex", "nvmlDeviceGetUUID", "nvmlGpuInstanceDestroy",
              "nvmlComputeInstanceDestroy"]
NVML_ERRORS = ["UNKNOWN", "GPU_IS_LOST", "INSUFFICIENT_RESOURCES"]
FAULTS = [(f, e) for f in NVML_CALLS for e in NVML_ERRORS]


@pytest.mark.parametrize("function,error", FAULTS, ids=[f"{f}={e}" for f, e in FAULTS])
def test_a_driver_fault_at_any_call_gives_a_reason_and_leaks_nothing(slow, function, error):
    slow.set_faults(f"{function}={error}")
    try:
        job_id = int(slow.submit(["-o", "/dev/null", "--gres=gpu:1g.10gb"], wrap="true").stdout.strip())
        deadline = time.monotonic() + 60
        while True:
            job = slow.job(job_id)
            events = slow.events(job_id)
            if _state(job) in DONE or "slurm-gpu-" in _admin(job) or slow.drains():
                break
            assert time.monotonic() < deadline, slow.logs()
            time.sleep(0.3)
        time.sleep(1)  # the epilog of a requeued or finished job
        drains = slow.drains()
    finally:
        slow.set_faults(None)
    # A drain is ours, on purpose, naming the GPU failure: never Slurm's bare "Prolog/Epilog error".
    assert all(reason.startswith("slurm-gpu") for reason in drains.values()), (drains, slow.logs())
    if error == "INSUFFICIENT_RESOURCES" and "Create" in function:
        assert drains == {}  # a lost race for slices, not a broken GPU: the job retries elsewhere
    job = slow.job(job_id)
    if _state(job) == "COMPLETED":  # the fault hit a call it could do without, or only the epilog
        assert [e for e in events if e.get("action") == "created"]
    else:
        assert "slurm-gpu-" in _admin(job) or drains, (job, events)
    slow.run(["scancel", str(job_id)])
    slow.wait([job_id])
    slow.resume()
    rec = slow.reconcile()
    assert rec.returncode == 0, rec.stderr + rec.stdout
    slow.clean()

