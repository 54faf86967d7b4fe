"""Wall time of the hooks on a simulated 8 x H100 node, as ratios to ``python3 -c pass`` measured in the
same run (so figures compare across machines).

- prolog / epilog: the whole hook process as the prolog.d/epilog.d scripts of ``slurm-gpu node install``
  start it (``<interpreter> -I -S -c <install.layout.HOOK_LAUNCHER> prolog|epilog``; the console script
  ``slurm-gpu-hook`` for comparison) with the hook server running, as a node that ran ``slurm-gpu node
  install`` has it (slurm-gpu-hooks.service): the client process, the served
  child's configuration, journal, planning, simulated driver and stand-in ``scontrol``/``squeue`` that
  answer at once (controller and driver latency excluded), under count admission (what ships), for a
  stream of 1g.10gb/2g.20gb/3g.40gb jobs filling the node then leaving;
- the same without a server (the hook imports and runs everything in its own process), a second round;
- the same through the CLI (``slurm-gpu prolog|epilog``, click loaded), a third round of the stream;
- the same use cases in-process (``NodeAgent.prepare``/``release``) without interpreter start-up;
- TaskProlog: one task's ``/usr/bin/python3 -I -S task_prolog.py`` (the form slurm.conf runs).

The hooks are compared with ``<their interpreter> -c pass``, the TaskProlog with ``/usr/bin/python3 -c
pass`` (and ``-I -S -c pass``); each sample is paired with a baseline run taken just before it. Hook
processes run in a scratch folder, so they import the package installed for the interpreter: run the
bench with a site (non-editable) install's interpreter to measure that install.

With ``--trace``, only the served rounds run, under a server whose children time their steps (the
agent's build, the job read's wait, the node read and its parts, the decision, the journal writes, the
create, the seal, the job's files, the log line): it prints each step's median over the jobs, inclusive of
the steps it calls. The wrappers add a few microseconds a step; the ratios of a traced run are not the
bench's figures.

Run: ``.venv/bin/python bench/bench_hooks.py [--jobs 24] [--trace]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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
# Answers like scontrol 24.11 under count admission (JSON job reads) for the benchmark; jobs come from a
# file of "id profile count slices". The node's counts promise exactly the instances of the job the bench
# runs now (named in the file "current": Slurm tools run with a minimal environment), nothing allocated
# yet; updates of the counts are accepted and forgotten.
case "$1 $2" in
  "--version ") echo "slurm 24.11.1" ;;
  "show job")
    line=$(grep "^$4 " "{jobs}")
    set -- $line
    printf '{{"jobs":[{{"job_id":%s,"job_state":["RUNNING"],"user_id":%s,"nodes":"bench",' "$1" "{uid}"
    printf '"admin_comment":"slurm-gpu:gpu:%s:%s","tres_per_node":"gres/migp:%s:%s",' "$2" "$3" "$2" "$3"
    printf '"gres_detail":["migp:%s(CNT:%s)"]}}]}}\\n' "$2" "$3"
    ;;
  "show node")
    line=$(grep "^$(cat {current}) " "{jobs}")
    set -- $line
    printf 'NodeName=bench Arch=x86_64\\n   Gres=migp:%s:%s\\n   GresUsed=migp:%s:0\\n' "$2" "$3" "$2"
    ;;
  *) ;;
esac
exit 0
"""


# The stream's jobs, in turn: (profile, count, slices Slurm allocates); 24 of them about fill 8 GPUs.
PROFILES = [("1g.10gb", 1, 1), ("2g.20gb", 1, 2), ("3g.40gb", 1, 4), ("1g.10gb", 2, 2)]

# The hook server, its children timing the steps named here (module, attribute, label; a class's method
# as "Class.method"); each child writes its steps to <trace dir>/<hook>-<pid>.json.
TRACED = [
    ("slurm_gpu.hooks.runtime", "build_agent", "build the agent (configuration, Slurm read started, driver)"),
    ("slurm_gpu.slurm.client", "SlurmCli.job", "wait for the job read"),
    ("slurm_gpu.node.agent", "NodeAgent._read_gpus_early", "GPUs and profile table, during the job read"),
    ("slurm_gpu.node.agent", "NodeAgent.snapshot", "node read (under the lock)"),
    ("slurm_gpu.devices.nvml", "NvmlDriver.gpus", "  GPU walks (a Prolog's early one too)"),
    ("slurm_gpu.devices.nvml", "NvmlDriver.instances", "  instances"),
    ("slurm_gpu.state.journal", "Journal.scan", "  journal scan"),
    ("slurm_gpu.node.agent", "NodeAgent._decide_locked", "decision (counts read, placement)"),
    ("slurm_gpu.state.journal", "Journal.begin_prepare", "journalled intent"),
    ("slurm_gpu.devices.nvml", "NvmlDriver.create", "create (GPU and compute instance)"),
    ("slurm_gpu.state.journal", "Journal.record_created", "journalled result"),
    ("slurm_gpu.state.journal", "Journal.write_task_env", "task file"),
    ("slurm_gpu.node.cdi", "write_spec", "CDI spec"),
    ("slurm_gpu.node.agent", "NodeAgent._seal", "device seal"),
    ("slurm_gpu.state.journal", "Journal.begin_release", "journalled release"),
    ("slurm_gpu.devices.nvml", "NvmlDriver.destroy", "destroy"),
    ("slurm_gpu.state.journal", "Journal.finish_release", "record closed"),
    ("slurm_gpu.hooks.runtime", "log_event", "log line"),
]
ANSWER = "the child until its answer (what slurmd waits for)"
DONE = "the child until its end (an Epilog re-plans after its answer)"
TRACER = f"""
import functools, importlib, json, os, sys, time
ANSWER, DONE = {ANSWER!r}, {DONE!r}
from slurm_gpu.hooks import server
steps, out = [], sys.argv[2]
for module, attr, label in json.loads(sys.argv[3]):
    owner = importlib.import_module(module)
    *path, name = attr.split(".")
    for part in path:
        owner = getattr(owner, part)
    def timed(fn, label=label):
        @functools.wraps(fn)
        def run(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                steps.append((label, time.perf_counter() - t0))
        return run
    setattr(owner, name, timed(getattr(owner, name)))
from slurm_gpu.hooks import runtime
real, served_by, t0 = server.run_hook, runtime.served_by, [0.0]
def answered(pid, answer):
    def timed_answer(code):
        steps.append((ANSWER, time.perf_counter() - t0[0]))
        answer(code)
    served_by(pid, timed_answer)
def run_hook(hook, config):
    del steps[:]
    t0[0] = time.perf_counter()
    try:
        return real(hook, config)
    finally:
        steps.append((DONE, time.perf_counter() - t0[0]))
        with open(os.path.join(out, "%s-%d.json" % (hook, os.getpid())), "w") as f:
            json.dump(steps, f)
runtime.served_by, server.run_hook = answered, run_hook
sys.exit(server.serve(sys.argv[1]))
"""


def print_trace(trace_dir, jobs):
    """Each traced step's median over the served hooks (summed within one hook, up to its answer), by
    hook; waits up to 60 s for the children still re-planning after their answer."""
    deadline = time.monotonic() + 60
    while len(list(Path(trace_dir).glob("*.json"))) < 2 * jobs and time.monotonic() < deadline:
        time.sleep(0.1)
    labels = [ANSWER, DONE] + [label for _, _, label in TRACED]
    for hook in ("prolog", "epilog"):
        per_job = []
        for path in sorted(Path(trace_dir).glob(f"{hook}-*.json")):
            sums, answered = {}, False
            for label, seconds in json.loads(path.read_text()):
                if not answered or label == DONE:  # after the answer: an Epilog's re-plan
                    sums[label] = sums.get(label, 0.0) + seconds
                answered = answered or label == ANSWER
            per_job.append(sums)
        print(f"{hook}: where a served child's time goes, medians of {len(per_job)} jobs (a step includes the"
              " steps it calls)")
        for label in labels:
            seen = [job[label] for job in per_job if label in job]
            if seen:
                print(f"  {label:62} {statistics.median(seen) * 1000:7.2f} ms")


def hook_launcher(python, cwd):
    """What ``slurm-gpu node install`` writes into prolog.d/epilog.d for the package ``python`` imports
    (asked in ``cwd``, outside the repository), without the hook's name."""
    return json.loads(subprocess.run(
        [python, "-c", "import json; from slurm_gpu.install.layout import hook_command as h; "
         "print(json.dumps(h()))"], cwd=cwd, capture_output=True, text=True, check=True).stdout)


def write_node(tmp, jobs):
    """The bench node's files in ``tmp`` but its simulated GPUs (``tmp/gpus.json``, sandbox ``tmp/sb``):
    the stand-in ``scontrol``/``squeue`` answering for ``jobs`` (job id, profile, count, slices) in
    ``tmp/bin``, and the configuration as ``slurm-gpu config`` ships it but for these paths. Returns the
    hooks' environment and the file that names the job the stand-in's node counts promise."""
    bindir = tmp / "bin"
    bindir.mkdir()
    jobs_file = tmp / "jobs.txt"
    jobs_file.write_text("".join(f"{j} {p} {c} {s}\n" for j, p, c, s in jobs))
    current = tmp / "current"
    (bindir / "scontrol").write_text(FAKE_SCONTROL.format(jobs=jobs_file, uid=os.getuid(), current=current))
    (bindir / "squeue").write_text("#!/bin/sh\nexit 0\n")  # an empty pending queue
    for tool in ("scontrol", "squeue"):
        (bindir / tool).chmod(0o755)
    config = tmp / "config.yaml"
    config.write_text(f"version: 1\ndriver:\n  kind: sim\n  sim_state: {tmp / 'gpus.json'}\n"
                      f"  sim_sandbox: {tmp / 'sb'}\nstate_dir: {tmp / 'state'}\n"
                      f"slurm:\n  bin_dir: {bindir}\nadmission:\n  mode: counts\n")
    env = {"PATH": "/usr/bin:/bin", "SLURM_GPU_CONFIG": str(config), "SLURMD_NODENAME": "bench",
           "SLURM_JOB_UID": str(os.getuid()), "SLURM_JOB_GID": str(os.getgid()),
           "SLURM_GPU_HOOK_SOCKET": str(tmp / "run" / "hooks.sock")}
    return env, current


def _child_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd, env=None, cwd=None):
    """(wall seconds, CPU seconds) of one run; CPU counts the process and what it waited for (scontrol)."""
    c0, t0 = _child_cpu(), time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, cwd=cwd)
    return time.perf_counter() - t0, _child_cpu() - c0


def paired(cmd, env, base_cmd, cwd=None):
    """((wall, cpu), (wall, cpu) of the baseline run just before)."""
    base = timed(base_cmd, cwd=cwd)
    return timed(cmd, env, cwd=cwd), base


def entry_of(python, name, fallback_module):
    """The console script ``name`` next to the interpreter ``python``, else ``python -m fallback_module``."""
    script = Path(python).with_name(name)
    return [str(script)] if script.exists() else [python, "-m", fallback_module]


def entry(name, fallback_module):
    return entry_of(sys.executable, name, fallback_module)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=24, help="jobs per round (default 24)")
    ap.add_argument("--trace", action="store_true", help="only the served rounds, timing the child's steps")
    args = ap.parse_args()

    from slurm_gpu.devices import simstate
    from slurm_gpu.devices.open import open_driver
    from slurm_gpu.node.agent import NodeAgent
    from slurm_gpu.node.context import AgentPolicy, JobContext
    from slurm_gpu.slurm.client import SlurmCli
    from slurm_gpu.state.journal import Journal

    tmp = Path(tempfile.mkdtemp(prefix="bench-hooks-"))
    state = tmp / "gpus.json"
    simstate.init_state(str(state), [("H100-80GB", 8)], sandbox=str(tmp / "sb"))
    jobs = [(1000 + n, *PROFILES[n % len(PROFILES)]) for n in range(args.jobs * 5)]
    env, current = write_node(tmp, jobs)
    bindir, sock = tmp / "bin", Path(env["SLURM_GPU_HOOK_SOCKET"])

    # Each sample is paired with a baseline run just before it: ratios stay meaningful on a busy machine.
    # The hooks run under the package's interpreter, the TaskProlog under the system one: each is
    # compared with "<that interpreter> -c pass".
    base_cmd = [sys.executable, "-c", "pass"]
    sys_python = shutil.which("python3", path="/usr/bin:/bin") or "python3"
    sys_base = [sys_python, "-c", "pass"]
    scratch = str(tmp)  # not the repository: the hooks import the installed package
    hook = hook_launcher(sys.executable, scratch)
    script = entry("slurm-gpu-hook", "slurm_gpu.hooks.entry")  # the console script, for comparison
    cli = entry("slurm-gpu", "slurm_gpu")
    package = subprocess.run([sys.executable, "-c", "import slurm_gpu; print(slurm_gpu.__file__)"],
                             cwd=scratch, capture_output=True, text=True, check=True).stdout.strip()
    # Five rounds of the same stream: served, hook entry alone, CLI, in-process, served by the script.
    n = args.jobs
    served, first, by_cli, second, scripted = (jobs[k * n: (k + 1) * n] for k in range(5))

    def run_hook(cmd, name, job, **extra):
        current.write_text(f"{job}\n")  # the job whose instances the stand-in's node counts promise
        return paired([*cmd, name], {**env, "SLURM_JOB_ID": str(job), **extra}, base_cmd, cwd=scratch)

    serve = [*script, "serve", "--socket", str(sock)]
    trace_dir = tmp / "trace"
    if args.trace:
        trace_dir.mkdir()
        serve = [sys.executable, "-c", TRACER, str(sock), str(trace_dir), json.dumps(TRACED)]
    server = subprocess.Popen(serve, env=env, cwd=scratch, stderr=subprocess.DEVNULL)
    while not sock.exists():
        assert server.poll() is None, "the hook server did not start"
        time.sleep(0.02)
    try:
        srv_pro = [run_hook(hook, "prolog", j) for j, *_ in served]
        srv_epi = [run_hook(hook, "epilog", j) for j, *_ in served]
        if args.trace:
            base = statistics.median(timed(base_cmd)[0] for _ in range(9))
            print(f"8 x H100 simulated node, {n} jobs; {sys.executable} -c pass median {base * 1000:.1f} ms")
            print_trace(trace_dir, n)
            return 0
        scr_pro = [run_hook(script, "prolog", j) for j, *_ in scripted]
        scr_epi = [run_hook(script, "epilog", j) for j, *_ in scripted]
    finally:
        server.terminate()
        server.wait()
    pro = [run_hook(hook, "prolog", j, SLURM_GPU_HOOK_SOCKET="none") for j, *_ in first]
    epi = [run_hook(hook, "epilog", j, SLURM_GPU_HOOK_SOCKET="none") for j, *_ in first]
    cli_pro = [run_hook(cli, "prolog", j) for j, *_ in by_cli]
    cli_epi = [run_hook(cli, "epilog", j) for j, *_ in by_cli]
    left = open_driver("sim", sim_state=str(state)).instances()
    assert not left, f"instances left after the epilogs: {left}"
    log = (tmp / "state" / "hooks.log").read_text()
    created = log.count('"action":"created"')
    assert created == len(served) + len(scripted) + len(first) + len(by_cli), \
        f"{created} prologs created: {log[-2000:]}"

    # In-process: the use cases alone, same stream.
    agent = NodeAgent("bench", open_driver("sim", sim_state=str(state)), Journal(str(tmp / "state")),
                      SlurmCli(str(bindir), env=env),
                      AgentPolicy(admission="counts", caps_dir=str(tmp / "sb/dev/nvidia-caps"),
                                  cgroup_root=None))
    def in_process(use_case, job, want):
        """(wall, CPU) of one use case call; CPU includes the stand-in scontrol it waited for."""
        current.write_text(f"{job}\n")
        t0, c0 = time.perf_counter(), time.process_time() + _child_cpu()
        assert use_case(JobContext(str(job), os.getuid(), os.getgid())).action == want
        return time.perf_counter() - t0, time.process_time() + _child_cpu() - c0

    ip = [in_process(agent.prepare, j, "created") for j, *_ in second]
    ie = [in_process(agent.release, j, "released") for j, *_ in second]

    tasks = tmp / "state"
    Journal(str(tasks)).write_task_env("77", os.getuid(), os.getgid(),
                                       ["MIG-11111111-2222-3333-4444-555555555555"])
    tp_cmd = [sys_python, "-I", "-S", str(REPO / "slurm_gpu/hooks/task_prolog.py"), str(tasks)]
    tp_env = {"SLURM_JOB_ID": "77", "SLURM_LOCALID": "3"}
    tp = [paired(tp_cmd, tp_env, sys_base) for _ in range(21)]
    tp_bare = [paired(tp_cmd, tp_env, [sys_python, "-I", "-S", "-c", "pass"]) for _ in range(21)]
    inproc_base = [timed(base_cmd) for _ in range(9)]

    def row(name, pairs):
        secs = statistics.median(p[0][0] for p in pairs)
        ratio = statistics.median(p[0][0] / p[1][0] for p in pairs)
        cpu = statistics.median(p[0][1] / p[1][1] for p in pairs)
        print(f"{name:42} median {secs * 1000:7.1f} ms = {ratio:5.2f} x -c pass (CPU time {cpu:5.2f} x)")

    base_ms = statistics.median(p[1][0] for p in srv_pro) * 1000
    sys_ms = statistics.median(p[1][0] for p in tp) * 1000
    print(f"8 x H100 simulated node, {args.jobs} jobs per round; {sys.executable} -c pass median "
          f"{base_ms:.1f} ms; {sys_python} -c pass median {sys_ms:.1f} ms")
    print(f"hooks: {hook[0]} -c '...' prolog|epilog (node install's form); package {package}")
    print("ratios: medians of each run over the <interpreter> -c pass run just before it")
    row("prolog hook process, hook server (shipped)", srv_pro)
    row("epilog hook process, hook server (shipped)", srv_epi)
    row("the same via the console script", scr_pro)
    row("(epilog) via the console script", scr_epi)
    row("prolog hook process, no server", pro)
    row("epilog hook process, no server", epi)
    row("prolog via the CLI (slurm-gpu prolog)", cli_pro)
    row("epilog via the CLI (slurm-gpu epilog)", cli_epi)
    med_base = (statistics.median(b[0] for b in inproc_base), statistics.median(b[1] for b in inproc_base))
    row("prepare() in-process", [(t, med_base) for t in ip])
    row("release() in-process", [(t, med_base) for t in ie])
    row("TaskProlog per task (python3 -I -S)", tp)
    row("TaskProlog vs python3 -I -S -c pass", tp_bare)
    return 0


if __name__ == "__main__":
    sys.exit(main())
