"""Wall time of the hooks on a simulated 8 x H100 node, as ratios to ``python3 -c pass`` measured in the
same run (so figures compare across machines).

- prolog / epilog: the whole hook process as Slurm starts it (interpreter, imports, configuration,
  journal, planning, simulated driver, a stand-in ``scontrol`` that answers at once: controller and
  driver latency excluded), for a stream of 1g.10gb/2g.20gb/3g.40gb jobs filling the node then leaving;
- the same use cases in-process (``NodeAgent.prepare``/``release``) without interpreter start-up;
- TaskProlog: one task's ``/usr/bin/python3 -I -S task_prolog.py`` (the form slurm.conf runs).

The hooks are compared with ``<their interpreter> -c pass``, the TaskProlog with ``/usr/bin/python3 -c
pass`` (and ``-I -S -c pass``); each sample is paired with a baseline run taken just before it.

Run: ``.venv/bin/python bench/bench_hooks.py [--jobs 24]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FAKE_SCONTROL = """#!/bin/sh
# Answers like scontrol 22.05 for the benchmark; jobs come from a file of "id profile count slices".
case "$1 $2" in
  "show job")
    line=$(grep "^$4 " "{jobs}")
    set -- $line
    printf 'JobId=%s JobName=bench\\n   UserId=u(%s) GroupId=g(%s)\\n' "$1" "{uid}" "{gid}"
    printf '   JobState=RUNNING Reason=None\\n   NodeList=bench\\n'
    printf '   AdminComment=slurm-gpu:gpu:%s:%s\\n   TresPerNode=gres:mig:%s\\n' "$2" "$3" "$4"
    ;;
  "show node") printf 'NodeName=bench\\n   AvailableFeatures=\\n   ActiveFeatures=\\n' ;;
  *) ;;
esac
exit 0
"""


def timed(cmd, env=None, repeat=1):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return times


def paired(cmd, env, base_cmd):
    """(seconds, seconds of the baseline run just before)."""
    base = timed(base_cmd)[0]
    return timed(cmd, env)[0], base


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=24, help="jobs per round (default 24)")
    args = ap.parse_args()

    from slurm_gpu.devices import simstate
    from slurm_gpu.devices.open import open_driver
    from slurm_gpu.node.agent import AgentPolicy, JobContext, NodeAgent
    from slurm_gpu.slurm.client import SlurmCli
    from slurm_gpu.state.journal import Journal

    tmp = Path(tempfile.mkdtemp(prefix="bench-hooks-"))
    state = tmp / "gpus.json"
    simstate.init_state(str(state), [("H100-80GB", 8)], sandbox=str(tmp / "sb"))
    bindir = tmp / "bin"
    bindir.mkdir()
    jobs_file = tmp / "jobs.txt"
    profiles = [("1g.10gb", 1, 1), ("2g.20gb", 1, 2), ("3g.40gb", 1, 4), ("1g.10gb", 2, 2)]
    jobs = [(1000 + n, *profiles[n % len(profiles)]) for n in range(args.jobs * 2)]
    jobs_file.write_text("".join(f"{j} {p} {c} {s}\n" for j, p, c, s in jobs))
    (bindir / "scontrol").write_text(FAKE_SCONTROL.format(jobs=jobs_file, uid=os.getuid(), gid=os.getgid()))
    (bindir / "scontrol").chmod(0o755)
    config = tmp / "config.yaml"
    config.write_text(f"version: 1\ndriver:\n  kind: sim\n  sim_state: {state}\n  sim_sandbox: {tmp / 'sb'}\n"
                      f"state_dir: {tmp / 'state'}\nslurm:\n  bin_dir: {bindir}\n")
    env = {"PATH": "/usr/bin:/bin", "SLURM_GPU_CONFIG": str(config), "SLURMD_NODENAME": "bench",
           "SLURM_JOB_UID": str(os.getuid()), "SLURM_JOB_GID": str(os.getgid())}

    # Each sample is paired with a baseline run just before it: ratios stay meaningful on a busy machine.
    # The hooks run under the package's interpreter, the TaskProlog under the system one: each is
    # compared with "<that interpreter> -c pass".
    base_cmd = [sys.executable, "-c", "pass"]
    sys_python = shutil.which("python3", path="/usr/bin:/bin") or "python3"
    sys_base = [sys_python, "-c", "pass"]
    hook = [sys.executable, "-m", "slurm_gpu.hooks.prolog"]
    unhook = [sys.executable, "-m", "slurm_gpu.hooks.epilog"]
    first, second = jobs[: args.jobs], jobs[args.jobs:]
    pro = [paired(hook, {**env, "SLURM_JOB_ID": str(j)}, base_cmd) for j, *_ in first]
    epi = [paired(unhook, {**env, "SLURM_JOB_ID": str(j)}, base_cmd) for j, *_ in first]
    left = open_driver("sim", sim_state=str(state)).instances()
    assert not left, f"instances left after the epilogs: {left}"

    # In-process: the use cases alone, same stream.
    agent = NodeAgent("bench", open_driver("sim", sim_state=str(state)), Journal(str(tmp / "state")),
                      SlurmCli(str(bindir), env=env), AgentPolicy(caps_dir=str(tmp / "sb/dev/nvidia-caps"),
                                                                  cgroup_root=None))
    ip, ie = [], []
    for j, *_ in second:
        t0 = time.perf_counter()
        assert agent.prepare(JobContext(str(j), os.getuid(), os.getgid())).action == "created"
        ip.append(time.perf_counter() - t0)
    for j, *_ in second:
        t0 = time.perf_counter()
        assert agent.release(JobContext(str(j), os.getuid(), os.getgid())).action == "released"
        ie.append(time.perf_counter() - t0)

    tasks = tmp / "state"
    Journal(str(tasks)).write_task_env("77", os.getuid(), os.getgid(),
                                       ["MIG-11111111-2222-3333-4444-555555555555"])
    tp_cmd = [sys_python, "-I", "-S", str(REPO / "slurm_gpu/hooks/task_prolog.py"), str(tasks)]
    tp_env = {"SLURM_JOB_ID": "77", "SLURM_LOCALID": "3"}
    tp = [paired(tp_cmd, tp_env, sys_base) for _ in range(21)]
    tp_bare = [paired(tp_cmd, tp_env, [sys_python, "-I", "-S", "-c", "pass"]) for _ in range(21)]
    inproc_base = [timed(base_cmd)[0] for _ in range(9)]

    def row(name, pairs):
        secs = statistics.median(p[0] for p in pairs)
        ratio = statistics.median(p[0] / p[1] for p in pairs)
        print(f"{name:40} median {secs * 1000:7.1f} ms  = {ratio:5.2f} x <interpreter> -c pass")

    base_ms = statistics.median(p[1] for p in pro) * 1000
    sys_ms = statistics.median(p[1] for p in tp) * 1000
    print(f"8 x H100 simulated node, {args.jobs} jobs per round; {sys.executable} -c pass median "
          f"{base_ms:.1f} ms; {sys_python} -c pass median {sys_ms:.1f} ms")
    row("prolog hook process", pro)
    row("epilog hook process", epi)
    med_base = statistics.median(inproc_base)
    row("prepare() in-process", [(t, med_base) for t in ip])
    row("release() in-process", [(t, med_base) for t in ie])
    row("TaskProlog per task (python3 -I -S)", tp)
    ratio = statistics.median(p[0] / p[1] for p in tp_bare)
    print(f"{'TaskProlog vs python3 -I -S -c pass':40} {ratio:5.2f} x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
