"""The demo's verdict (scripts/demo.sh): for every job, what it asked for against what each task got, and
what the nodes were left with.

A job passes when every task printed ``CUDA_VISIBLE_DEVICES`` with one MIG UUID (CUDA uses one MIG device
per process: task ``L`` gets instance ``L mod n``) and ``SLURM_GPU_MIG_DEVICES`` with all ``n`` its node
gave the job, the asked number, and those are exactly the instances of the asked profile that the node's
history.log says it released for the job at its end. After the jobs, no node may hold an instance or be
drained or down. A failed job is shown with its lines from slurmctld's and the nodes' logs.

Run: ``python -m slurm_gpu.testbed.demo <cluster dir> <expected.tsv> <output dir>``; exit 0 when all pass.
``expected.tsv`` has one line per job: ``job_id<TAB>profile<TAB>instances per node<TAB>tasks<TAB>what``.
"""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
from typing import Dict, List, NamedTuple, Optional, Set, Tuple

from slurm_gpu.state.history import History
from slurm_gpu.testbed.spec import ClusterSpec, load_spec, node_names

__all__ = ["Expected", "check_job", "leftovers", "main"]

# srun -l prefixes each line with the task id; the job script prints the node beside the variables
_TASK = re.compile(r"^\s*\d+: task (\d+) on (\S+): (\S*) all=(\S*)\s*$")
_UUID = re.compile(r"^MIG-[0-9a-fA-F-]{36}$")


class Expected(NamedTuple):
    job_id: str
    profile: str
    per_node: int  # instances per node
    tasks: int
    what: str


def read_expected(path: str) -> List[Expected]:
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                job_id, profile, per_node, tasks, what = line.rstrip("\n").split("\t", 4)
                out.append(Expected(job_id, profile, int(per_node), int(tasks), what))
    return out


def released(spec: ClusterSpec) -> Dict[Tuple[str, str], List[Dict[str, object]]]:
    """Per (job id, node): the instances history.log recorded when the job's Epilog released them."""
    out: Dict[Tuple[str, str], List[Dict[str, object]]] = {}
    for node in node_names(spec):
        for event in History(os.path.join(spec.dir, node, "state", "history.log")).read():
            if event.get("event") == "released":
                out.setdefault((str(event.get("job_id")), node), []).extend(event.get("instances") or [])
    return out


def check_job(exp: Expected, output: str, history: Dict[Tuple[str, str], List[Dict[str, object]]]
              ) -> Tuple[List[str], str]:
    """(problems, summary) of one job from its output file's text and the nodes' history."""
    problems: List[str] = []
    tasks: Dict[str, Tuple[str, str, List[str]]] = {}
    for line in output.splitlines():
        m = _TASK.match(line)
        if m:
            tasks[m.group(1)] = (m.group(2), m.group(3), [u for u in m.group(4).split(",") if u])
    if len(tasks) != exp.tasks:
        problems.append(f"{len(tasks)} task line(s) in its output, expected {exp.tasks}")
    seen: Dict[str, Set[str]] = {}
    for task_id, (node, visible, uuids) in sorted(tasks.items()):
        if len(uuids) != exp.per_node or not all(_UUID.match(u) for u in uuids):
            listed = ",".join(uuids) or "(empty)"
            problems.append(f"task {task_id} on {node}: SLURM_GPU_MIG_DEVICES={listed}, "
                            f"expected {exp.per_node} MIG UUID(s)")
            continue
        if visible not in uuids:
            problems.append(f"task {task_id} on {node}: CUDA_VISIBLE_DEVICES={visible or '(empty)'} is not "
                            "one MIG UUID of the job's")
        had = history.get((exp.job_id, node), [])
        profiles = {str(i.get("mig_uuid")): str(i.get("profile_name")) for i in had}
        for u in uuids:
            if u not in profiles:
                problems.append(f"task {task_id} on {node}: {u} is no instance the node released for the job")
            elif profiles[u] != exp.profile:
                problems.append(f"task {task_id} on {node}: {u} is a {profiles[u]}, expected {exp.profile}")
        if len(had) != exp.per_node:
            problems.append(f"{node} released {len(had)} instance(s) for the job, expected {exp.per_node}")
        seen.setdefault(node, set()).update(uuids)
    placed = ", ".join(f"{n}: {' '.join(sorted(u))}" for n, u in sorted(seen.items()))
    summary = f"{len(tasks)} task(s), {exp.per_node} x {exp.profile} per node ({placed or 'none'})"
    return problems, summary


def _log_lines(spec: ClusterSpec, job_id: str, limit: int = 12) -> List[str]:
    pattern = re.compile(rf"\b(JobId|job_id|job|JOB)[= ]?{re.escape(job_id)}\b")
    out: List[str] = []
    for path in sorted(glob.glob(os.path.join(spec.dir, "log", "*.log"))):
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                name = os.path.basename(path)
                out.extend(f"{name}: {line.rstrip()}" for line in fh if pattern.search(line))
        except OSError:
            continue
    return out[-limit:]


def leftovers(spec: ClusterSpec, slurm_gpu: str) -> List[str]:
    """Instances still on a node, and nodes drained or down."""
    problems = []
    for node in node_names(spec):
        env = dict(os.environ, SLURMD_NODENAME=node, SLURM_GPU_CONFIG=os.path.join(spec.dir, "config.yaml"))
        proc = subprocess.run([slurm_gpu, "inventory", "--json"], env=env, capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0:
            problems.append(f"{node}: inventory failed: {proc.stderr.strip()}")
            continue
        left = [i for g in json.loads(proc.stdout).get("gpus", []) for i in g.get("instances", [])]
        if left:
            problems.append(f"{node}: {len(left)} instance(s) left after the jobs")
    proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], env=spec.env(), capture_output=True,
                          text=True, check=False)
    for line in proc.stdout.splitlines():
        name, _, state = line.partition(" ")
        if any(word in state.lower() for word in ("drain", "down", "fail")):
            problems.append(f"{name} is {state}")
    return problems


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3:
        print(__doc__.strip().splitlines()[-3], file=sys.stderr)
        return 2
    spec = load_spec(args[0])
    history = released(spec)
    failed = 0
    expected = read_expected(args[1])
    for exp in expected:
        try:
            with open(os.path.join(args[2], f"{exp.job_id}.out"), encoding="utf-8", errors="replace") as fh:
                output = fh.read()
        except FileNotFoundError:
            output = ""
        problems, summary = check_job(exp, output, history)
        print(f"{'PASS' if not problems else 'FAIL'} job {exp.job_id} ({exp.what}): {summary}")
        if problems:
            failed += 1
            for p in problems:
                print(f"     {p}")
            for line in _log_lines(spec, exp.job_id):
                print(f"     | {line}")
    slurm_gpu = os.path.join(os.path.dirname(sys.executable), "slurm-gpu")
    left = leftovers(spec, slurm_gpu)
    for p in left:
        print(f"FAIL {p}")
    print(f"{len(expected) - failed}/{len(expected)} jobs got exactly what they asked for; "
          f"{'nothing left behind, no node drained' if not left else f'{len(left)} problem(s) on the nodes'}")
    return 1 if failed or left else 0


if __name__ == "__main__":
    sys.exit(main())
