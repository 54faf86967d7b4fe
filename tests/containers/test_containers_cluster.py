"""Containers on the job's MIG instance, on a real local Slurm cluster with real Apptainer, podman, dockerd.

Evidence of docs/containers.md: each runtime's container sees its MIG UUID in CUDA_VISIBLE_DEVICES and
NVIDIA_VISIBLE_DEVICES, its own two capability files and no other job's, cannot open another job's
instance on the same GPU even with the node's device folder bound in (the job's devices cgroup, or
Docker's own device cgroup), and its exit code reaches Slurm; scancel leaves no container, process,
mount, instance or CDI spec; the tasks of ``srun -n2`` on a 2-instance job see different instances; the
CDI spec validates against the CDI schema and podman starts a container from it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from typing import Dict, List

import pytest
from ctr_fixtures import USER, Containers, ctr  # noqa: F401 - the session fixture

pytestmark = [pytest.mark.slurm, pytest.mark.containers, pytest.mark.slow]

RUNTIMES = ("apptainer", "podman", "docker")
PODMAN_RUN = ["--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
PROBE = """#!/bin/sh
echo "CVD=$CUDA_VISIBLE_DEVICES NVD=$NVIDIA_VISIBLE_DEVICES"
echo "CAPS=$(ls /dev/nvidia-caps | tr '\\n' ' ')"
echo "GPUS=$(ls /dev | grep '^nvidia[0-9]' | tr '\\n' ' ')"
for f in /dev/nvidia-caps/*; do cat "$f" 2>&1; done
for f in "$@"; do cat "$f" 2>&1; done
echo "ID=$(id -u):$(id -g) PWD=$(pwd)"
exit 7
"""
HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA_DIR = os.path.join(HERE, "..", "fixtures", "cdi")


def run_args(ctr: Containers, runtime: str, *tail: str, binds: List[str] = (),  # noqa: F811
             image: str = "") -> List[str]:
    """The container command of a job step: ``runtime``'s run/exec of the test image, then ``tail``."""
    if runtime == "apptainer":
        opts = ["exec", "--unsquash", *[x for b in binds for x in ("--bind", b)], image or ctr.images["sif"]]
    else:
        opts = ["run", *(PODMAN_RUN if runtime == "podman" else ["--network", "none"])]
        opts += [x for b in binds for x in ("-v", b)] + [image or ctr.images[runtime]]
    return ctr.container_cmd(runtime, *opts, "--", *tail)


def sh(args: List[str]) -> str:
    return " ".join("'" + a.replace("'", "'\\''") + "'" for a in args)


def wait(ctr: Containers, job_ids: List[str], states=("COMPLETED", "FAILED", "CANCELLED"),  # noqa: F811
         timeout: float = 120) -> Dict[str, Dict[str, str]]:
    return {j: ctr.cluster.wait_job(j, states=states, timeout=timeout) for j in job_ids}


def spec_of(ctr: Containers, job_id: str) -> dict:  # noqa: F811
    with open(ctr.cdi_spec(job_id), encoding="utf-8") as fh:
        return json.load(fh)


def cap_minors(spec: dict) -> List[int]:
    return [n["minor"] for d in spec["devices"] for n in d["containerEdits"]["deviceNodes"]
            if "nvidia-caps" in n["path"]]


def released(ctr: Containers, job_ids: List[str], timeout: float = 30) -> None:  # noqa: F811
    """Until the Epilog has destroyed the jobs' instances and removed their CDI specs."""
    deadline = time.monotonic() + timeout
    while any(os.path.exists(ctr.cdi_spec(j)) for j in job_ids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [j for j in job_ids if os.path.exists(ctr.cdi_spec(j))], "CDI spec left after the job"


@pytest.fixture(scope="module")
def other_job(ctr):  # noqa: F811
    """A running 1g.10gb job of the same user on the same GPU: the instance nobody else may open."""
    job = ctr.submit("1g.10gb", ctr.script("sleep 300", "other"))
    ctr.cluster.wait_job(job, states=("RUNNING",), timeout=60)
    deadline = time.monotonic() + 10
    while not os.path.exists(ctr.cdi_spec(job)) and time.monotonic() < deadline:
        time.sleep(0.1)
    yield job, spec_of(ctr, job)
    ctr.cluster.run(["scancel", job])
    wait(ctr, [job])


@pytest.fixture(scope="module")
def probes(ctr, other_job):  # noqa: F811
    """One job per runtime, all at once, each probing its devices from inside its container."""
    other, spec = other_job
    with open(os.path.join(ctr.work, "probe.sh"), "w", encoding="utf-8") as fh:
        fh.write(PROBE)
    os.chmod(os.path.join(ctr.work, "probe.sh"), 0o755)
    theirs = [f"/sb/nvidia-caps/nvidia-cap{m}" for m in sorted(set(cap_minors(spec)))]
    sandbox_dev = os.path.join(ctr.sandbox, "dev")
    jobs = {}
    for runtime in RUNTIMES:
        step = run_args(ctr, runtime, "sh", f"{ctr.work}/probe.sh", *theirs, binds=[f"{sandbox_dev}:/sb"])
        body = f'echo "HOST_CVD=$CUDA_VISIBLE_DEVICES"\nsrun {sh(step)}'
        jobs[runtime] = ctr.submit("1g.10gb", ctr.script(body, f"probe-{runtime}"))
    infos = wait(ctr, list(jobs.values()))
    released(ctr, list(jobs.values()))
    return {rt: (infos[j], ctr.output(j), other) for rt, j in jobs.items()}


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_container_sees_exactly_its_instance_and_its_exit_code_reaches_slurm(probes, runtime):
    info, out, _ = probes[runtime]
    host = [ln.split("=", 1)[1] for ln in out.splitlines() if ln.startswith("HOST_CVD=")][0]
    assert host.startswith("MIG-"), out
    assert f"CVD={host} NVD={host}" in out, out
    caps = [ln for ln in out.splitlines() if ln.startswith("CAPS=")][0].split("=", 1)[1].split()
    assert len(caps) == 2, out  # its GPU-instance and compute-instance access files, nothing else
    assert "GPUS=nvidia0 " in out, out
    for cap in caps:  # allowed: the simulated device has no driver behind it
        assert f"/dev/nvidia-caps/{cap}': No such device or address" in out, out
    # the other job's instance through the node's device folder: denied by the job's devices cgroup
    # (podman), Docker's device cgroup, or Apptainer's nodev bind (and the cgroup behind it)
    denied = ("Permission denied", "Operation not permitted") if runtime == "apptainer" else (
        "Operation not permitted",)
    theirs = [ln for ln in out.splitlines() if "/sb/nvidia-caps/" in ln]
    assert len(theirs) == 2 and all(ln.endswith(denied) for ln in theirs), out
    uid_line = [ln for ln in out.splitlines() if ln.startswith("ID=")][0]
    assert uid_line.startswith("ID=1001:1001 PWD=/var/tmp/sg-ctr-"), out  # the job's user and folder
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "7:0", (info, out)


def test_other_jobs_caps_are_not_in_any_container(probes, ctr):  # noqa: F811
    _, _, other = probes["podman"]
    theirs = {f"nvidia-cap{m}" for m in cap_minors(spec_of(ctr, other))}
    for runtime in RUNTIMES:
        caps = [ln for ln in probes[runtime][1].splitlines() if ln.startswith("CAPS=")][0]
        assert not theirs & set(caps.split("=", 1)[1].split()), (runtime, caps)


def test_cdi_spec_validates_and_podman_runs_from_it(ctr, other_job):  # noqa: F811
    jsonschema = pytest.importorskip("jsonschema")
    job, spec = other_job
    with open(os.path.join(SCHEMA_DIR, "schema.json"), encoding="utf-8") as fh:
        schema = json.load(fh)
    with open(os.path.join(SCHEMA_DIR, "defs.json"), encoding="utf-8") as fh:
        defs = json.load(fh)
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT7

    defs_resource = Resource.from_contents(defs, default_specification=DRAFT7)
    registry = Registry().with_resource("defs.json", defs_resource)
    jsonschema.Draft7Validator(schema, registry=registry).validate(spec)
    st = os.stat(ctr.cdi_spec(job))
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, 1001, 0o640)
    uuid = spec["devices"][0]["name"]
    assert [d["name"] for d in spec["devices"]] == [uuid, f"job{job}-0"]
    # podman starts a container from the spec by its CDI name (as root: rootless runc binds a device
    # from its container path, which the simulator's sandbox lacks; on a node the paths are the same)
    proc = subprocess.run(["podman", "--root", f"{ctr.work}/podman-root/root", "--runroot",
                           f"{ctr.work}/podman-root/run", "run", "--rm", *PODMAN_RUN,
                           "--device", f"slurm-gpu.io/mig={uuid}", f"oci-archive:{ctr.work}/bb-oci.tar",
                           "sh", "-c", "echo CDI=$CUDA_VISIBLE_DEVICES; ls /dev/nvidia-caps; ls /dev"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    caps = {f"nvidia-cap{m}" for m in cap_minors(spec)}
    assert f"CDI={uuid}" in proc.stdout and set(proc.stdout.split()) >= caps | {"nvidia0"}, proc.stdout
    assert len([w for w in proc.stdout.split() if w.startswith("nvidia-cap") and w[10:].isdigit()]) == 2


def test_dry_run_json_in_a_job(ctr):  # noqa: F811
    dry = ctr.container_cmd("podman", "run", ctr.images["podman"], "--", "true")
    dry.insert(dry.index("podman"), "--json")
    jid = ctr.submit("1g.10gb", ctr.script(f'echo "HOST_CVD=$CUDA_VISIBLE_DEVICES"\n{sh(dry)}', "dry"))
    info = wait(ctr, [jid])[jid]
    out = ctr.output(jid)
    assert info["JobState"] == "COMPLETED", out
    doc = json.loads(out[out.index("{"):])
    assert doc["schema"] == "slurm-gpu.container/v1" and doc["job_id"] == jid
    assert f"HOST_CVD={doc['mig_uuid']}" in out
    assert doc["cdi_name"] is None  # the sandbox's nodes go by --device (see above)
    assert doc["devices"][0] == "/dev/nvidia0" and len(doc["devices"]) == 3
    assert "--userns=keep-id" in doc["argv"] and doc["argv"][-2:] == [ctr.images["podman"], "true"]


def test_two_instances_srun_n2_each_task_its_own(ctr):  # noqa: F811
    # images from the OCI archive: podman runs it as it is, Apptainer from the SIF made of it
    step_p = run_args(ctr, "podman", "sh", "-c", "echo PODMAN=$CUDA_VISIBLE_DEVICES", image=ctr.images["oci"])
    step_a = run_args(ctr, "apptainer", "sh", "-c", "echo APPTAINER=$CUDA_VISIBLE_DEVICES",
                      image=ctr.images["sif_oci"])
    body = f'echo "ALL=$SLURM_GPU_MIG_DEVICES"\nsrun -n2 {sh(step_p)}\nsrun -n2 {sh(step_a)}'
    jid = ctr.submit("1g.10gb:2", ctr.script(body, "two"), "-n2")
    info = wait(ctr, [jid])[jid]
    out = ctr.output(jid)
    assert info["JobState"] == "COMPLETED", out
    every = set([ln for ln in out.splitlines() if ln.startswith("ALL=")][0].split("=", 1)[1].split(","))
    assert len(every) == 2
    for key in ("PODMAN", "APPTAINER"):
        seen = [ln.split("=", 1)[1] for ln in out.splitlines() if ln.startswith(key + "=")]
        assert len(seen) == 2 and set(seen) == every, out


def test_refuses_outside_a_mig_job(ctr):  # noqa: F811
    step = run_args(ctr, "podman", "true")
    jid = ctr.submit(None, ctr.script(f"srun {sh(step)}", "nomig"))
    info = wait(ctr, [jid])[jid]
    out = ctr.output(jid)
    assert info["ExitCode"] == "3:0", (info, out)
    assert "has no MIG instance" in out and "--gres=gpu:<profile>" in out, out


def _user_processes(but_job: str) -> List[str]:
    """The test user's processes outside job ``but_job``."""
    proc = subprocess.run(["ps", "-u", USER, "-o", "pid=,args="], capture_output=True, text=True)
    out = []
    for line in proc.stdout.splitlines():
        try:
            with open(f"/proc/{line.split()[0]}/cgroup", encoding="utf-8") as fh:
                if f"/job_{but_job}/" in fh.read():
                    continue
        except (OSError, IndexError):
            continue
        out.append(line)
    return out


def test_scancel_stops_every_container_and_leaves_nothing(ctr, other_job):  # noqa: F811
    before = set(_user_processes(other_job[0]))
    jobs = {}
    for runtime in RUNTIMES:
        marker = os.path.join(ctr.work, f"up-{runtime}")
        step = run_args(ctr, runtime, "sh", "-c", f"echo up > {marker}; exec sleep 300")
        jobs[runtime] = (ctr.submit("1g.10gb", ctr.script(f"srun {sh(step)}", f"cancel-{runtime}")), marker)
    deadline = time.monotonic() + 60
    while not all(os.path.exists(m) for _, m in jobs.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert all(os.path.exists(m) for _, m in jobs.values()), {r: ctr.output(j) for r, (j, _) in jobs.items()}
    ids = [j for j, _ in jobs.values()]
    ctr.cluster.run(["scancel", *ids], check=True)
    infos = wait(ctr, ids, timeout=60)
    assert all(i["JobState"] == "CANCELLED" for i in infos.values()), infos
    released(ctr, ids)
    podman = subprocess.run(["runuser", "-u", USER, "--", "podman", *ctr.podman_globals, "ps", "-a",
                             "--format", "{{.Names}}"], capture_output=True, text=True, cwd="/tmp")
    docker = subprocess.run(["/usr/bin/docker", *ctr.docker_globals, "ps", "-a", "--format", "{{.Names}}"],
                            capture_output=True, text=True)
    for jid in ids:
        assert f"slurm-gpu-{jid}-" not in podman.stdout + docker.stdout, (podman.stdout, docker.stdout)
    left = set(_user_processes(other_job[0])) - before
    assert not left, left  # no runtime, conmon, squashfuse or container process
    with open("/proc/mounts", encoding="utf-8") as fh:
        mounts = fh.read()
    ours = [m for m in mounts.splitlines() if (ctr.work in m or "apptainer" in m)
            and not m.split()[1].endswith("/docker/data")]  # dockerd's own data root stays
    assert ours == [], ours
    from slurm_gpu.devices.open import open_driver

    driver = open_driver("sim", sim_state=os.path.join(ctr.cluster.spec.dir, ctr.node, "gpus.json"))
    try:
        assert len(driver.instances()) == 1  # the other job's only
    finally:
        driver.close()


def _container_command_pid(job_id: str) -> int:
    """The task's ``slurm-gpu container`` process (the test user's, in the job)."""
    for line in _user_processes(""):
        pid = int(line.split()[0])
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                env = fh.read().split(b"\0")
        except OSError:
            continue
        if "slurm_gpu.hooks.container" in line and f"SLURM_JOB_ID={job_id}".encode() in env:
            return pid
    raise AssertionError(f"no container command of job {job_id}: {_user_processes('')}")


def test_epilog_removes_a_docker_container_its_command_could_not(ctr):  # noqa: F811
    marker = os.path.join(ctr.work, "up-docker-killed")
    step = run_args(ctr, "docker", "sh", "-c", f"echo up > {marker}; exec sleep 300")
    jid = ctr.submit("1g.10gb", ctr.script(f"srun {sh(step)}", "docker-killed"))
    deadline = time.monotonic() + 60
    while not os.path.exists(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert os.path.exists(marker), ctr.output(jid)
    # as when KillWait runs out first: the command dies, dockerd's container (outside the job) does not
    os.kill(_container_command_pid(jid), signal.SIGKILL)
    info = wait(ctr, [jid])[jid]
    assert info["JobState"] in ("FAILED", "COMPLETED"), info
    released(ctr, [jid])
    docker = subprocess.run(["/usr/bin/docker", *ctr.docker_globals, "ps", "-a", "--format", "{{.Names}}"],
                            capture_output=True, text=True)
    assert f"slurm-gpu-{jid}-" not in docker.stdout, docker.stdout
