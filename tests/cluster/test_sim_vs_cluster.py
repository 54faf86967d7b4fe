"""The simulator's model of Slurm's scheduling passes checked against a real Slurm 22.05 cluster.

One node of 4 simulated H100 (32 memory slices). A burst of 8 x 4g.40gb becomes startable at one instant:
Slurm's `mig` count admits all 8, the fit features (a snapshot) say 4 more fit. With Slurm's scheduler
defaults one pass starts all 8 and the prolog requeues the 4 that find no room; with one start per pass
(what slurm-gpu ships) none races. The same trace through the simulator must give the same figures.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

from slurm_gpu.simulate.replay import replay_on_cluster, simulate_trace
from slurm_gpu.simulate.traces import TraceJob

pytestmark = [pytest.mark.slurm]

DEFAULTS = ""  # Slurm's own scheduler defaults
SHIPPED = "sched_max_job_start=1,bf_max_job_start=1,bf_interval=5"


def burst_trace():
    jobs = [TraceJob(id=str(n), submit=0.0, duration=2.0, gres="gpu:4g.40gb:1", time_limit=60.0)
            for n in range(8)]
    jobs += [TraceJob(id=str(8 + n), submit=30.0, duration=2.0, gres="gpu:7g.80gb:1", time_limit=60.0)
             for n in range(2)]
    return jobs


def _replay(parameters: str, trace, cancel_raced: bool):
    from conftest import slurm_available, start_cluster, stop_cluster

    reason = slurm_available()
    if reason:
        pytest.skip(f"real Slurm cluster: {reason}")
    cl = start_cluster(nodes=1, gpus="H100-80GB:4", prefix="sg-simcmp-", cpus=16,
                       scheduler_parameters=parameters)
    try:
        out = tempfile.mkdtemp(prefix="sg-simcmp-", dir="/tmp")
        os.chmod(out, 0o1777)  # noqa: S103 - the job's user writes its start stamp there
        state = {n: os.path.join(cl.spec.dir, n, "state") for n in cl.nodes}
        run = replay_on_cluster(cl.conf, state, trace, out, timeout=150, cancel_raced=cancel_raced,
                                release_bursts=True)
        created = []
        for d in state.values():
            log = Path(d) / "hooks.log"
            if log.exists():
                created += [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
        return run, created, cl.nodes
    finally:
        stop_cluster(cl)


def test_slurm_defaults_race_as_the_simulator_says():
    trace = burst_trace()[:8]
    run, _, _ = _replay(DEFAULTS, trace, cancel_raced=True)
    sim = simulate_trace(trace, "1x4xH100-80GB", DEFAULTS)
    sim_first = sum(1 for j in sim.jobs if j.attempts > 1)  # jobs whose first start was a misfit
    print(f"\nSlurm defaults, 8 x 4g.40gb at once: real raced={len(run.requeued)} sim misfits={sim_first}")
    assert len(run.requeued) == sim_first == 4
    raced = {e["trace_id"] for e in run.requeued}
    assert set(run.start) == {j.id for j in trace} - raced  # the others ran at once, exactly once


def test_one_start_per_pass_removes_races_on_both():
    trace = burst_trace()
    run, created, nodes = _replay(SHIPPED, trace, cancel_raced=False)
    sim = simulate_trace(trace, "1x4xH100-80GB", SHIPPED)
    print(f"\nshipped settings: real raced={len(run.requeued)} started={len(run.start)} "
          f"{run.summary(trace)}; sim {sim.result.to_dict()['misfits']} misfits")
    assert run.requeued == [] and sim.result.misfits == 0
    assert set(run.start) == {j.id for j in trace} == {j.id for j in sim.jobs if j.start is not None}
    assert all(s == "COMPLETED" for s in run.state.values())
    assert set(run.node.values()) <= set(nodes)
    # every start was admitted by the node's features: its prolog created its instance, none was refused
    prologs = [c for c in created if c.get("hook") == "prolog"]
    assert len([c for c in prologs if c.get("action") == "created"]) == len(trace)
    # the simulator orders the starts as Slurm did: the 4g.40gb jobs start four at a time, by priority
    real_order = sorted(run.start, key=run.start.get)
    assert real_order[:4] == [j.id for j in sorted(sim.jobs, key=lambda j: (j.start, j.index))][:4]
