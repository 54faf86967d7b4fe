"""The hooks on a real local Slurm 22.05 cluster (2 nodes x 4 simulated H100): every test submits real
jobs with sbatch/srun as unprivileged users and checks what the job saw and what the node holds."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest

pytestmark = [pytest.mark.slurm]

REPO = Path(__file__).resolve().parents[2]
MIG = re.compile(r"MIG-[0-9a-f-]{36}")
SRUN_ECHO = 'srun -n4 sh -c \'echo "task$SLURM_LOCALID=$CUDA_VISIBLE_DEVICES"\''
DONE = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")


def _with_outdir(cluster):
    cluster.outdir = tempfile.mkdtemp(prefix="sg-out-", dir="/tmp")
    os.chmod(cluster.outdir, 0o1777)
    return cluster


@pytest.fixture(scope="module")
def cl(slurm_cluster):
    yield _with_outdir(slurm_cluster)
    assert_clean(slurm_cluster)


@pytest.fixture(scope="module")
def shipped():
    """A cluster with the SchedulerParameters `slurm-gpu config slurm` ships (one start per pass)."""
    from conftest import running_cluster

    from slurm_gpu.confgen.render import SCHEDULER_PARAMETERS

    with running_cluster(prefix="sg-test-shipped-", scheduler_parameters=SCHEDULER_PARAMETERS) as cluster:
        yield _with_outdir(cluster)
        assert_clean(cluster)


def sjob(cl, job_id: str):
    from slurm_gpu.slurm.parse import job_from_scontrol_text

    return job_from_scontrol_text(cl.run(["scontrol", "show", "job", "-d", job_id], check=True).stdout)


def node_dir(cl, node: str) -> Path:
    return Path(cl.spec.dir) / node


def instances(cl, node: str) -> List:
    from slurm_gpu.devices.open import open_driver

    return open_driver("sim", sim_state=str(node_dir(cl, node) / "gpus.json")).instances()


def submit(cl, *args: str, wrap: str, user: str = "sgtest1") -> str:
    out = os.path.join(cl.outdir, "%j.out")
    proc = cl.run(["sbatch", "--parsable", "-o", out, *args, "--wrap", wrap], user=user)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split(";")[0]


def output(cl, job_id: str) -> str:
    try:
        return Path(cl.outdir, f"{job_id}.out").read_text()
    except FileNotFoundError:
        return ""


def wait(cl, job_ids, timeout: float = 120) -> Dict[str, Dict[str, str]]:
    deadline = time.monotonic() + timeout
    left = set(job_ids)
    done: Dict[str, Dict[str, str]] = {}
    while left and time.monotonic() < deadline:
        for j in list(left):
            info = cl.job(j)
            if info.get("JobState") in DONE:
                done[j] = info
                left.discard(j)
        if left:
            time.sleep(0.3)
    assert not left, f"jobs not finished after {timeout} s: {sorted(left)}"
    return done


def wait_for(pred, timeout: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def drained(cl) -> Dict[str, str]:
    out = cl.run(["sinfo", "-h", "-N", "-o", "%N %t %E"], check=True).stdout
    return {p[0]: " ".join(p[1:]) for p in (line.split() for line in out.splitlines())
            if p and any(s in p[1] for s in ("drain", "drng", "down", "fail"))}


def set_sim_faults(cl, rules: Optional[str]) -> None:
    """Fault rules (``SLURM_GPU_SIM_FAULTS`` syntax; None: none) for every node's simulated driver: each
    hook run reads the configuration. The file is replaced, not rewritten in place, so that a hook starting
    meanwhile reads a whole one."""
    path = Path(cl.spec.dir) / "config.yaml"
    text = "".join(line for line in path.read_text().splitlines(True) if "sim_faults" not in line)
    if rules:
        text = text.replace("driver:\n", f"driver:\n  sim_faults: {json.dumps(rules)}\n", 1)
    tmp = path.with_name(".config.yaml.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def drain_evidence(cl, nodes) -> str:
    """What a drained node's hooks and slurmd said last: the message of a failed 'nothing drained'."""
    out = []
    for node in nodes:
        hooks = node_dir(cl, node) / "state" / "hooks.log"
        lines = hooks.read_text(errors="replace").splitlines() if hooks.exists() else []
        out += [f"{node} hooks.log: {line[:600]}" for line in lines if '"error"' in line
                or '"problems":[]' not in line][-6:]
        slurmd = node_dir(cl, node) / "slurmd.log"
        lines = slurmd.read_text(errors="replace").splitlines() if slurmd.exists() else []
        out += [f"{node} slurmd.log: {line[:300]}" for line in lines
                if any(w in line.lower() for w in ("prolog", "epilog", "error", "drain"))
                and "pmix" not in line][-8:]
    return "\n".join(out)


def assert_nothing_drained(cl) -> None:
    bad = drained(cl)
    assert bad == {}, f"{bad}\n{drain_evidence(cl, bad)}"


def assert_clean(cl) -> None:
    for node in cl.nodes:
        wait_for(lambda n=node: not instances(cl, n), 30, f"no instances left on {node}")
    assert_nothing_drained(cl)


def history(cl, node: str) -> List[dict]:
    path = node_dir(cl, node) / "state" / "history.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_one_1g_instance_in_batch_step_and_srun_tasks(cl):
    j = submit(cl, "-n4", "--gres=gpu:1g.10gb",
               wrap='echo "batch=$CUDA_VISIBLE_DEVICES"; ' + SRUN_ECHO + ';'
                    ' touch ' + cl.outdir + '/$SLURM_JOB_ID.running; sleep 3')
    wait_for(lambda: Path(cl.outdir, f"{j}.running").exists(), 60, "job to run")
    node = cl.job(j)["NodeList"]
    live = instances(cl, node)
    assert len(live) == 1 and live[0].profile_id == 19  # 1g.10gb
    info = wait(cl, [j])[j]
    assert info["JobState"] == "COMPLETED", output(cl, j)
    text = output(cl, j)
    batch = re.search(r"batch=(\S*)", text).group(1)
    assert MIG.fullmatch(batch) and batch == live[0].mig_uuid
    tasks = dict(re.findall(r"task(\d)=(\S*)", text))
    assert tasks == {str(n): batch for n in range(4)}
    wait_for(lambda: not instances(cl, node), 20, "instance destroyed")
    # Both hooks ran in children of the cluster's hook server (what slurm-gpu-hooks.service is on a node).
    log = (node_dir(cl, node) / "state" / "hooks.log").read_text()
    lines = [json.loads(line) for line in log.splitlines()]
    served = {line["hook"]: line.get("served_by") for line in lines if line.get("job_id") == j}
    # the Epilog answered slurmd once the instance was gone; its node re-plan followed ("replan")
    assert set(served) == {"prolog", "epilog", "replan"} and all(served.values()), served


def test_two_3g_instances_map_tasks_modulo(cl):
    j = submit(cl, "-n4", "--gres=gpu:3g.40gb:2",
               wrap='echo "all=$SLURM_GPU_MIG_DEVICES"; ' + SRUN_ECHO)
    assert wait(cl, [j])[j]["JobState"] == "COMPLETED"
    text = output(cl, j)
    uuids = re.search(r"all=(\S*)", text).group(1).split(",")
    assert len(uuids) == 2 and len(set(uuids)) == 2 and all(MIG.fullmatch(u) for u in uuids)
    tasks = dict(re.findall(r"task(\d)=(\S*)", text))
    assert tasks == {str(n): uuids[n % 2] for n in range(4)}


def test_two_nodes_each_get_their_instance(cl):
    j = submit(cl, "-N2", "--ntasks-per-node=1", "--gres=gpu:2g.20gb",
               wrap='srun sh -c \'echo "$SLURMD_NODENAME=$CUDA_VISIBLE_DEVICES"\'')
    assert wait(cl, [j])[j]["JobState"] == "COMPLETED"
    seen = dict(re.findall(r"(\S+)=(MIG-\S+)", output(cl, j)))
    assert set(seen) == set(cl.nodes) and len(set(seen.values())) == 2


def node_idle(cl, node: str) -> bool:
    return cl.run(["squeue", "-h", "-w", node], check=True).stdout.strip() == ""


def test_mixed_profiles_fill_a_node_exactly(cl):
    node = cl.nodes[0]
    wait_for(lambda: node_idle(cl, node), 60, f"{node} idle")
    marker = cl.outdir + "/fill"
    # 4g.40gb first: admitted in one pass with the 3g.40gb jobs, prolog order could give a GPU two 3g.40gb
    # and leave a 4g.40gb no room (a legitimate race, requeued; see test_raced_job_...).
    jobs = [submit(cl, "-w", node, "--gres=gpu:4g.40gb", wrap=f"touch {marker}.$SLURM_JOB_ID; sleep 60")
            for _ in range(4)]
    wait_for(lambda: all(Path(f"{marker}.{j}").exists() for j in jobs), 50, "4g.40gb jobs running")
    jobs += [submit(cl, "-w", node, "--gres=gpu:3g.40gb", wrap=f"touch {marker}.$SLURM_JOB_ID; sleep 60")
             for _ in range(4)]
    try:
        try:
            wait_for(lambda: all(Path(f"{marker}.{j}").exists() for j in jobs), 50, "all 8 jobs running")
        except AssertionError:
            queue = cl.run(["squeue", "-o", "%i %T %R %f %b"]).stdout
            feats = cl.run(["scontrol", "show", "node", node]).stdout
            raise AssertionError(f"not all 8 running at once:\n{queue}\n{feats}") from None
        live = instances(cl, node)
        assert sorted((i.gpu_index, i.start, i.size) for i in live) == sorted(
            [(g, 0, 4) for g in range(4)] + [(g, 4, 4) for g in range(4)])
        feats = cl.run(["scontrol", "show", "node", node], check=True).stdout
        active = re.search(r"ActiveFeatures=(\S*)", feats).group(1)
        assert "mig." not in active  # nothing more fits
    finally:
        cl.run(["scancel", *jobs])
    done = wait(cl, jobs)
    assert all(i["JobState"] == "CANCELLED" for i in done.values())
    wait_for(lambda: not instances(cl, node), 30, "node emptied")


def test_saturated_node_jobs_pend_then_start(cl):
    node = cl.nodes[1]
    wait_for(lambda: node_idle(cl, node), 60, f"{node} idle")
    jobs = [submit(cl, "-w", node, "--gres=gpu:7g.80gb", wrap="sleep 2") for _ in range(8)]
    time.sleep(2)
    states = [cl.job(j)["JobState"] for j in jobs]
    assert states.count("RUNNING") <= 4 and "PENDING" in states
    done = wait(cl, jobs, 120)
    assert all(i["JobState"] == "COMPLETED" for i in done.values())
    assert all(int(i.get("Restarts", 0)) == 0 for i in done.values())


def test_scancel_mid_run_releases(cl):
    j = submit(cl, "--gres=gpu:1g.20gb", wrap=f"touch {cl.outdir}/$SLURM_JOB_ID.running; sleep 60")
    wait_for(lambda: Path(cl.outdir, f"{j}.running").exists(), 60, "job to run")
    node = cl.job(j)["NodeList"]
    assert len(instances(cl, node)) == 1
    cl.run(["scancel", j], check=True)
    assert wait(cl, [j])[j]["JobState"] == "CANCELLED"
    wait_for(lambda: not instances(cl, node), 30, "instance destroyed after scancel")


def test_requeue_releases_and_recreates(cl):
    j = submit(cl, "--gres=gpu:2g.20gb",
               wrap=f'n=${{SLURM_RESTART_COUNT:-0}}; echo "run$n=$CUDA_VISIBLE_DEVICES"; '
                    f'touch {cl.outdir}/$SLURM_JOB_ID.r$n; sleep 4')
    wait_for(lambda: Path(cl.outdir, f"{j}.r0").exists(), 60, "first run")
    first = cl.job(j)["NodeList"]
    cl.run(["scontrol", "requeue", j], check=True)
    wait_for(lambda: cl.job(j)["JobState"] == "PENDING", 30, "requeued job pending")
    wait_for(lambda: not instances(cl, first), 30, "instance released at requeue")
    # slurmd runs no Prolog for a job whose credential it still caches (~120 s, hence Slurm's requeue
    # delay): restart at once, but on the other node.
    cl.run(["scontrol", "update", f"jobid={j}", f"excnodelist={first}", "starttime=now"], check=True)
    wait_for(lambda: Path(cl.outdir, f"{j}.r1").exists(), 90, "second run")
    info = wait(cl, [j])[j]
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1"
    assert info["NodeList"] != first
    assert MIG.search(output(cl, j).split("run1=")[1])


def test_slurmd_restart_while_jobs_run(cl):
    node = cl.nodes[0]
    wrap = f"touch {cl.outdir}/$SLURM_JOB_ID.running; sleep 6"
    jobs = [submit(cl, "-w", node, "--gres=gpu:1g.10gb", wrap=wrap)
            for _ in range(2)]
    wait_for(lambda: all(Path(cl.outdir, f"{j}.running").exists() for j in jobs), 60, "jobs running")
    pid_file = node_dir(cl, node) / "slurmd.pid"
    pid = int(pid_file.read_text())
    os.kill(pid, 15)
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 20, "slurmd stopped")
    assert len(instances(cl, node)) == 2  # running jobs keep their instances
    subprocess.run(["slurmd", "-N", node, "-f", cl.conf], env=cl.env, check=True, timeout=30)
    done = wait(cl, jobs, 90)
    assert all(i["JobState"] == "COMPLETED" for i in done.values())
    wait_for(lambda: not instances(cl, node), 30, "instances released after restart")
    assert drained(cl) == {}


def test_other_user_cannot_open_the_job_caps(cl):
    j = submit(cl, "--gres=gpu:1g.10gb", wrap=f"touch {cl.outdir}/$SLURM_JOB_ID.running; sleep 20")
    wait_for(lambda: Path(cl.outdir, f"{j}.running").exists(), 60, "job A to run")
    node = cl.job(j)["NodeList"]
    inst = instances(cl, node)[0]
    caps = node_dir(cl, node) / "sandbox" / "dev" / "nvidia-caps"
    paths = [str(caps / f"nvidia-cap{m}") for m in (inst.gi_cap_minor, inst.ci_cap_minor)]
    probe = ("import sys\nfor p in sys.argv[1:]:\n    try:\n"
             "        open(p, 'rb').close(); print(p, 'OPENED')\n"
             "    except OSError as e:\n        print(p, e.errno)\n")
    script = Path(cl.outdir, "probe.py")
    script.write_text(probe)
    cmd = f"/usr/bin/python3 {script} " + " ".join(paths)
    b = submit(cl, "-w", node, wrap=cmd, user="sgtest2")
    a_probe = submit(cl, "-w", node, wrap=cmd, user="sgtest1")
    wait(cl, [b, a_probe])
    cl.run(["scancel", j])
    wait(cl, [j])
    import errno

    assert [line.split()[-1] for line in output(cl, b).splitlines()] == [str(errno.EACCES)] * 2
    # The owner gets past the permission check (the fake device then answers ENXIO, no driver behind it).
    assert all(line.split()[-1] != str(errno.EACCES) for line in output(cl, a_probe).splitlines())


def test_forged_comment_or_constraint_gains_nothing(cl):
    j = submit(cl, "--gres=gpu:1g.10gb", "--comment=slurm-gpu:gpu:7g.80gb:4",
               wrap='echo "all=$SLURM_GPU_MIG_DEVICES"; '
                    f"touch {cl.outdir}/$SLURM_JOB_ID.running; sleep 2")
    wait_for(lambda: Path(cl.outdir, f"{j}.running").exists(), 60, "job to run")
    node = cl.job(j)["NodeList"]
    assert [i.profile_id for i in instances(cl, node)] == [19]
    assert wait(cl, [j])[j]["JobState"] == "COMPLETED"
    assert len(output(cl, j).split("all=")[1].split(",")) == 1
    for args in (["--constraint=mig.7g.80gb.1"], ["--gres=mig:8"]):
        proc = cl.run(["sbatch", "--parsable", "-o", "/dev/null", *args, "--wrap", "true"], user="sgtest1")
        assert proc.returncode != 0, args


def test_mismatched_request_is_held_not_drained(cl):
    # The recorded request says 7g.80gb but Slurm counted one slice (an admin edit, or a stale filter).
    node = cl.nodes[1]
    j = submit(cl, "-H", "-w", node, "--gres=gpu:1g.10gb", wrap="true")
    cl.run(["scontrol", "update", f"jobid={j}", "admincomment=slurm-gpu:gpu:7g.80gb:1"], check=True)
    cl.run(["scontrol", "release", j], check=True)
    info = wait_for(lambda: (lambda i: i if "slurm-gpu-refused" in i.admin_comment else None)(
        sjob(cl, j)), 60, "refusal")
    assert info.state in ("PENDING", "COMPLETING", "CANCELLED") and "allocated_mig:1" in info.admin_comment
    assert not instances(cl, node) and drained(cl) == {}
    cl.run(["scancel", j])


def test_raced_job_is_requeued_with_a_reason_not_drained(cl):
    # Three 4g.40gb on three GPUs leave 20 slices in Slurm's count but room for one 7g.80gb only;
    # two 7g.80gb submitted together both pass the feature check in one scheduling pass.
    node = cl.nodes[1]
    wait_for(lambda: node_idle(cl, node), 60, f"{node} idle")
    wrap = f"touch {cl.outdir}/$SLURM_JOB_ID.running; sleep 60"
    fillers = [submit(cl, "-w", node, "--gres=gpu:4g.40gb", wrap=wrap) for _ in range(3)]
    wait_for(lambda: all(Path(cl.outdir, f"{j}.running").exists() for j in fillers), 60, "fillers running")
    before = len([h for h in history(cl, node) if h.get("event") == "requeued"])
    racers = [submit(cl, "-w", node, "--gres=gpu:7g.80gb", wrap="sleep 60") for _ in range(2)]
    try:
        raced = wait_for(lambda: [h for h in history(cl, node) if h.get("event") == "requeued"][before:],
                         20, "a raced start")
        loser = raced[0]["job_id"]
        assert loser in racers
        info = wait_for(lambda: (lambda i: i if i.state == "PENDING" else None)(sjob(cl, loser)), 30,
                        "raced job pending")
        assert "slurm-gpu-requeued:no_placement" in info.admin_comment
        assert info.restart_count == 1
        assert len(instances(cl, node)) == 4 and drained(cl) == {}
        print(f"\nraced start: job {loser} requeued ({raced[0]['reason']})")
    finally:
        cl.run(["scancel", *fillers, *racers])
    wait(cl, fillers + racers)


@pytest.mark.slow
def test_trace_of_300_mixed_jobs(shipped):
    """The trace on the scheduler settings we ship; the fast test settings race more (see
    test_raced_job_is_requeued_with_a_reason_not_drained and tests/cluster/test_sim_vs_cluster.py)."""
    import random

    cl = shipped

    rng = random.Random(7)
    profiles = ["1g.10gb"] * 5 + ["1g.20gb"] * 2 + ["2g.20gb"] * 3 + ["3g.40gb"] * 2 + ["4g.40gb", "7g.80gb"]
    before = {n: len([h for h in history(cl, n) if h.get("event") == "requeued"]) for n in cl.nodes}
    jobs = []
    for n in range(300):
        p = rng.choice(profiles)
        count = 2 if p.startswith("1g") and rng.random() < 0.2 else 1
        secs = rng.choice([0.2, 0.5, 1, 2])
        jobs.append(submit(cl, f"--gres=gpu:{p}:{count}", wrap=f"sleep {secs}"))
        if n % 25 == 24:
            time.sleep(0.5)
    done = wait(cl, jobs, 400)
    failed = {j: i["JobState"] for j, i in done.items() if i["JobState"] != "COMPLETED"}
    raced = {n: len([h for h in history(cl, n) if h.get("event") == "requeued"]) - before[n]
             for n in cl.nodes}
    restarts = sum(int(i.get("Restarts", 0)) for i in done.values())
    print(f"\n300-job trace: failed={len(failed)} raced starts requeued={sum(raced.values())} {raced} "
          f"job restarts={restarts} drained={drained(cl)}")
    assert failed == {}
    assert drained(cl) == {}
    for node in cl.nodes:
        wait_for(lambda n=node: not instances(cl, n), 30, f"no leaked instances on {node}")
