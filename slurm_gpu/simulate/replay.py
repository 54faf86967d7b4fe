"""Replay a small trace on a real Slurm cluster and through the simulator, and compare what each admitted.

Used by tests/cluster/test_sim_vs_cluster.py to check the simulator's model of Slurm's scheduling passes
(how many jobs one pass starts, when the next pass runs) against slurmctld: each job's script records when
and where it started; raced starts are the ``requeued`` events the prolog appends to each node's
``history.log``.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Sequence, Set

from slurm_gpu.core.errors import BadInputError, SlurmError
from slurm_gpu.simulate.traces import TraceJob, parse_job_gres

if TYPE_CHECKING:  # pragma: no cover
    from slurm_gpu.simulate.engine import Simulation

__all__ = ["contention_trace", "ClusterRun", "replay_on_cluster", "simulate_trace", "scheduler_config"]

_DONE = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED")


def contention_trace(jobs: int = 48, seed: int = 5, burst: int = 8, gap: float = 4.0,
                     durations: Sequence[float] = (3.0, 4.0, 6.0)) -> List[TraceJob]:
    """Bursts of ``burst`` jobs of one H100 profile, ``gap`` seconds apart, submitted at one instant each:
    with 1 node of 4 GPUs (32 memory slices) the count admits more than the geometry holds."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible trace, not a secret
    profiles = ["1g.10gb", "1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb", "1g.20gb"]
    out: List[TraceJob] = []
    for n in range(jobs):
        if n % burst == 0:
            profile = rng.choice(profiles)
        submit = gap * (n // burst)
        out.append(TraceJob(id=str(n), submit=submit, duration=rng.choice(list(durations)),
                            gres=f"gpu:{profile}:1", time_limit=60.0))
    return out


@dataclass
class ClusterRun:
    """What the real cluster did: per trace job its start (s after the first submission) and node."""

    start: Dict[str, float] = field(default_factory=dict)
    node: Dict[str, str] = field(default_factory=dict)
    state: Dict[str, str] = field(default_factory=dict)
    requeued: List[dict] = field(default_factory=list)  # history.log events, with the trace id added
    submit_wall: Dict[str, float] = field(default_factory=dict)
    end: Dict[str, float] = field(default_factory=dict)

    def summary(self, trace: Sequence[TraceJob]) -> Dict[str, object]:
        waits = [self.start[j.id] - self.submit_wall[j.id] for j in trace if j.id in self.start]
        ends = [self.end[j] for j in self.end]
        return {
            "jobs": len(trace),
            "started": len(self.start),
            "misfits": len(self.requeued),
            "mean_wait_s": round(sum(waits) / len(waits), 1) if waits else None,
            "max_wait_s": round(max(waits), 1) if waits else None,
            "makespan_s": round(max(ends), 1) if ends else None,
        }


def _history(state_dir: str) -> List[Dict[str, Any]]:
    from slurm_gpu.state.history import History

    return list(History(os.path.join(state_dir, "history.log")).read())


def replay_on_cluster(conf: str, state_dirs: Dict[str, str], trace: Sequence[TraceJob], outdir: str,
                      user: str = "sgtest1", scale: float = 1.0, timeout: float = 300.0,
                      cancel_raced: bool = False, release_bursts: bool = False) -> ClusterRun:
    """Submit every job at ``submit * scale`` seconds (real time) with sbatch, as ``user``; wait for all.

    ``state_dirs``: node -> its slurm-gpu state dir (for the requeue events). ``cancel_raced``: cancel a
    job the prolog requeued instead of waiting out Slurm's requeue delay (then it counts as not started).
    ``release_bursts``: jobs with one submit time are submitted while the nodes are drained and become
    startable by one ``scontrol update ... state=resume``, so that they are pending at one instant as in
    the trace (sbatch takes ~50 ms a job, and a scheduling pass could otherwise split the burst).
    """
    replay = _Replay(conf, state_dirs, outdir, user, scale)
    replay.submit(sorted(trace, key=lambda j: j.submit), release_bursts)
    replay.wait(timeout, cancel_raced)
    return replay.collect()


class _Replay:
    def __init__(self, conf: str, state_dirs: Dict[str, str], outdir: str, user: str, scale: float):
        self.conf, self.state_dirs, self.outdir, self.user, self.scale = conf, state_dirs, outdir, user, scale
        self.env = dict(os.environ, SLURM_CONF=conf)
        self.before = {n: len(_history(d)) for n, d in state_dirs.items()}
        self.run = ClusterRun()
        self.ids: Dict[str, str] = {}  # slurm job id -> trace id
        self.t0 = time.time()

    def _set_nodes(self, state: str) -> None:
        nodes = ",".join(sorted(self.state_dirs))
        subprocess.run(["scontrol", "update", f"nodename={nodes}", f"state={state}",
                        *(["reason=slurm-gpu_replay"] if state == "drain" else [])],
                       env=self.env, capture_output=True, timeout=30, check=True)

    def _sleep_until(self, submit: float) -> None:
        delay = self.t0 + submit * self.scale - time.time()
        if delay > 0:
            time.sleep(delay)

    def _sbatch(self, job: TraceJob) -> str:
        profile, count = parse_job_gres(job.gres)
        out, scale = self.outdir, self.scale
        wrap = (f"echo $(date +%s.%N) $SLURMD_NODENAME > {out}/$SLURM_JOB_ID.start; "
                f"sleep {job.duration * scale:g}; date +%s.%N > {out}/$SLURM_JOB_ID.end")
        limit = max(1, int(-(-(job.limit * scale) // 60)))
        args = ["runuser", "-u", self.user, "--", "env", f"SLURM_CONF={self.conf}", "sbatch", "--parsable",
                "-o", "/dev/null", "-t", str(limit), f"--gres=gpu:{profile}:{count}", "-J", f"t{job.id}",
                "--wrap", wrap]
        proc = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=30, cwd="/tmp")
        if proc.returncode != 0:
            raise SlurmError(f"sbatch of trace job {job.id} failed: {proc.stderr.strip()}")
        return proc.stdout.strip().split(";")[0]

    def submit(self, ordered: Sequence[TraceJob], release_bursts: bool) -> None:
        held: List[str] = []
        for n, job in enumerate(ordered):
            if not held:
                self._sleep_until(job.submit)
                if release_bursts:
                    self._set_nodes("drain")
            jid = self._sbatch(job)
            self.ids[jid] = job.id
            held.append(jid)
            last_of_burst = n + 1 == len(ordered) or ordered[n + 1].submit != job.submit
            if not release_bursts or last_of_burst:
                if release_bursts:
                    self._sleep_until(job.submit)
                    self._set_nodes("resume")
                for j in held:
                    self.run.submit_wall[self.ids[j]] = time.time() - self.t0
                held = []

    def _cancel_raced(self, seen: Set[str]) -> None:
        for node, d in self.state_dirs.items():
            for ev in _history(d)[self.before[node]:]:
                raced = ev.get("job_id")
                if ev.get("event") == "requeued" and raced in self.ids and raced not in seen:
                    seen.add(raced)
                    subprocess.run(["scancel", raced], env=self.env, capture_output=True, timeout=30)

    def wait(self, timeout: float, cancel_raced: bool) -> None:
        deadline = time.monotonic() + timeout
        left = set(self.ids)
        seen: Set[str] = set()
        while left and time.monotonic() < deadline:
            if cancel_raced:
                self._cancel_raced(seen)
            proc = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i %T", "-j", ",".join(sorted(left))],
                                  env=self.env, capture_output=True, text=True, timeout=30)
            for line in proc.stdout.splitlines():
                jid, _, state = line.partition(" ")
                if state in _DONE:
                    self.run.state[self.ids[jid]] = state
                    left.discard(jid)
            if left:
                time.sleep(0.5)
        if left:
            subprocess.run(["scancel", *sorted(left)], env=self.env, capture_output=True, timeout=30)
            raise SlurmError(f"trace jobs not finished after {timeout:.0f} s: "
                             f"{sorted(self.ids[j] for j in left)}")

    def collect(self) -> ClusterRun:
        run, t0 = self.run, self.t0
        for jid, tid in self.ids.items():
            try:
                with open(os.path.join(self.outdir, f"{jid}.start"), encoding="utf-8") as fh:
                    stamp, node = fh.read().split()
                run.start[tid] = float(stamp) - t0
                run.node[tid] = node
                with open(os.path.join(self.outdir, f"{jid}.end"), encoding="utf-8") as fh:
                    run.end[tid] = float(fh.read().strip()) - t0
            except (OSError, ValueError):
                continue
        for node, d in self.state_dirs.items():
            for ev in _history(d)[self.before[node]:]:
                if ev.get("event") == "requeued" and ev.get("job_id") in self.ids:
                    run.requeued.append(dict(ev, trace_id=self.ids[ev["job_id"]], at=ev.get("time", t0) - t0))
        return run


def scheduler_config(parameters: str) -> Dict[str, float]:
    """SchedulerParameters text -> the simulator's settings (Slurm's defaults for what is not given);
    :class:`BadInputError` for settings the simulator cannot model."""
    opts = dict(p.split("=", 1) for p in parameters.split(",") if "=" in p)
    limit = int(opts.get("sched_max_job_start", 0))
    if int(opts.get("bf_max_job_start", 0)) != limit:
        # a setting the model lacks, not something Slurm answered: bad input, naming the parameters
        raise BadInputError("the simulator models one start limit for both schedulers", part=parameters)
    return {"max_starts": limit, "bf_interval": float(opts.get("bf_interval", 30)),
            "pass_interval": float(opts.get("batch_sched_delay", 3))}


def simulate_trace(trace: Sequence[TraceJob], cluster: str, parameters: str,
                   requeue_delay: float = 121.0, policy: str = "features",
                   publish_interval: float = 5.0) -> Simulation:
    """The simulator's replay of ``trace`` under ``parameters`` with ``policy`` (``features``: fit
    features; ``default``: count admission, its targets re-planned every ``publish_interval`` s): the
    Simulation after running (its ``result`` holds the summary, its ``jobs`` what happened to each job)."""
    from slurm_gpu.simulate.cluster import parse_cluster
    from slurm_gpu.simulate.engine import SimConfig, Simulation
    from slurm_gpu.simulate.policies import make_policy

    cfg = scheduler_config(parameters)
    sim = Simulation(trace, parse_cluster(cluster), make_policy(policy, publish_interval=publish_interval),
                     SimConfig(bf_interval=cfg["bf_interval"], max_starts=int(cfg["max_starts"]),
                               pass_interval=cfg["pass_interval"], requeue_delay=requeue_delay))
    sim.run()  # sets sim.result
    return sim
