"""The demo's verdict per job (slurm_gpu.testbed.demo): it fails a job for each way it could have been
given the wrong thing."""

from __future__ import annotations

from slurm_gpu.testbed.demo import Expected, check_job

U1 = "MIG-11111111-2222-3333-4444-555555555555"
U2 = "MIG-66666666-7777-8888-9999-000000000000"
HISTORY = {("7", "n1"): [{"mig_uuid": U1, "profile_name": "1g.10gb"}],
           ("8", "n1"): [{"mig_uuid": U1, "profile_name": "3g.40gb"},
                         {"mig_uuid": U2, "profile_name": "3g.40gb"}]}


def _out(*tasks: str) -> str:
    """The job's output: one ``task <i> on <node>: <CUDA_VISIBLE_DEVICES> all=<SLURM_GPU_MIG_DEVICES>``
    line per task as ``srun -l`` prints it; ``tasks`` are the parts after ``on``."""
    lines = "".join(f"{i}: task {i} on {t}\n" for i, t in enumerate(tasks))
    return "job 7 on n1: CUDA_VISIBLE_DEVICES=x\n" + lines


def test_a_job_that_got_its_instances_in_every_task_passes():
    exp = Expected("7", "1g.10gb", 1, 2, "w")
    problems, summary = check_job(exp, _out(f"n1: {U1} all={U1}", f"n1: {U1} all={U1}"), HISTORY)
    assert problems == [] and "1 x 1g.10gb" in summary and U1 in summary
    both = f"all={U1},{U2}"
    problems, _ = check_job(Expected("8", "3g.40gb", 2, 2, "w"), _out(f"n1: {U1} {both}", f"n1: {U2} {both}"),
                            HISTORY)
    assert problems == []


def test_wrong_count_profile_missing_task_or_unknown_uuid_fail():
    cases = [
        (Expected("7", "1g.10gb", 1, 2, "w"), _out(f"n1: {U1} all={U1}"), "1 task line"),
        (Expected("7", "1g.10gb", 1, 1, "w"), _out("n1:  all="), "expected 1 MIG UUID"),
        (Expected("7", "1g.10gb", 1, 1, "w"), _out(f"n1:  all={U1}"), "is not one MIG UUID"),
        (Expected("7", "3g.40gb", 1, 1, "w"), _out(f"n1: {U1} all={U1}"), "is a 1g.10gb"),
        (Expected("7", "1g.10gb", 1, 1, "w"), _out(f"n1: {U2} all={U2}"), "no instance the node released"),
        (Expected("7", "1g.10gb", 1, 1, "w"), _out(f"n2: {U1} all={U1}"), "no instance the node released"),
        (Expected("8", "3g.40gb", 1, 1, "w"), _out(f"n1: {U1} all={U1}"), "released 2 instance(s)"),
    ]
    for exp, output, why in cases:
        problems, _ = check_job(exp, output, HISTORY)
        assert any(why in p for p in problems), (why, problems)
