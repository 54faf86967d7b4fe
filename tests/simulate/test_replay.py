"""The simulator side of the sim-vs-cluster comparison (the cluster side needs Slurm: tests/cluster)."""

import pytest

from slurm_gpu.core.errors import BadInputError
from slurm_gpu.simulate.replay import contention_trace, scheduler_config, simulate_trace
from slurm_gpu.simulate.traces import TraceJob

SHIPPED = "sched_max_job_start=1,bf_max_job_start=1,bf_interval=5"


def test_scheduler_config_reads_the_shipped_parameters_and_refuses_two_limits():
    assert scheduler_config(SHIPPED) == {"max_starts": 1, "bf_interval": 5.0, "pass_interval": 3.0}
    assert scheduler_config("") == {"max_starts": 0, "bf_interval": 30.0, "pass_interval": 3.0}
    with pytest.raises(BadInputError) as info:
        scheduler_config("sched_max_job_start=1")
    assert info.value.part == "sched_max_job_start=1"


def test_simulate_trace_keeps_the_result_and_the_jobs():
    burst = [TraceJob(str(n), 0.0, 2.0, "gpu:4g.40gb:1", time_limit=60.0) for n in range(8)]
    raced = simulate_trace(burst, "1x4xH100-80GB", "")  # Slurm's defaults: one pass starts all 8
    assert raced.result is not None and raced.result.misfits == 4
    assert sum(1 for j in raced.jobs if j.attempts > 1) == 4
    shipped = simulate_trace(contention_trace(), "1x4xH100-80GB", SHIPPED)
    assert shipped.result is not None and shipped.result.misfits == 0
    assert all(j.start is not None for j in shipped.jobs)
