"""A process running the prepare/release phases is SIGKILLed between every pair of steps and at random
moments; after each kill the journal must load, show no partial file, and account for every MIG
instance the (simulated) driver holds, so that reconcile can finish the job's release completely.

The child uses the real ``Journal`` and the real ``NvmlDriver`` over the simulated NVML's state file.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time

import pytest

from slurm_gpu.core import reconcile_plan as rp
from slurm_gpu.core.vocab import Repair
from slurm_gpu.devices.open import open_driver
from slurm_gpu.devices.simstate import init_state
from slurm_gpu.state.journal import Journal
from slurm_gpu.state.records import Planned, parse_record

JOB = "4242"
BOOT = "b0075eed-0000-4000-8000-000000000000"
# two 3g.40gb (profile id 9) on one H100: the placements at slices 0 and 4
PLAN = [Planned(0, "", 9, "3g.40gb", 0, 4), Planned(0, "", 9, "3g.40gb", 4, 4)]
STEPS = 12  # the steps of _sequence, each one atomic on disk
RANDOM_TRIALS = int(os.environ.get("SLURM_GPU_CRASH_TRIALS", "40"))


def _sequence(state_dir: str, sim_state: str, kill_after: int, ready) -> None:
    """Prolog then epilog of one job, as the node agent runs them; SIGKILL itself after step
    ``kill_after`` (0 .. STEPS - 1; any other value: no kill)."""
    journal = Journal(state_dir, lock_timeout_s=10, boot_id=BOOT)
    driver = open_driver("sim", sim_state=sim_state)
    gpu_uuid = driver.gpus()[0].uuid
    planned = [Planned.from_any(p, gpu_uuid) for p in PLAN]
    step = 0

    def done() -> None:
        nonlocal step
        if step == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        step += 1

    ready.set()
    with journal.lock():
        journal.begin_prepare(JOB, 1000, 1000, "gres:gpu:3g.40gb:2", planned)
        done()
        made = []
        for n, p in enumerate(planned):
            inst = driver.create(p.gpu_index, p.profile_id, p.start)
            made.append(inst)
            done()
            journal.record_created(JOB, n, inst)
            done()
        journal.finish_prepare(JOB)
        done()
    with journal.lock():
        journal.begin_release(JOB)
        done()
        for n, inst in enumerate(made):
            driver.destroy(inst.gpu_index, inst.gi_id)
            done()
            journal.record_released(JOB, n)
            done()
        journal.finish_release(JOB)
        done()
    os._exit(0)


@pytest.fixture
def node(tmp_path):
    sim_state = str(tmp_path / "sim" / "state.json")
    init_state(sim_state, [("H100-80GB", 1)])
    return str(tmp_path / "state"), sim_state


def _run_child(state_dir: str, sim_state: str, kill_after: int, delay_s: float = -1.0) -> int:
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    child = ctx.Process(target=_sequence, args=(state_dir, sim_state, kill_after, ready))
    child.start()
    if delay_s >= 0:
        assert ready.wait(30)
        time.sleep(delay_s)
        try:
            os.kill(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    child.join(60)
    assert child.exitcode is not None
    return child.exitcode


def _check_and_recover(state_dir: str, sim_state: str) -> str:
    """The checks after a kill; then reconcile as for an ended job, which must clean up everything."""
    journal = Journal(state_dir, lock_timeout_s=5, boot_id=BOOT)
    # no partial file is ever visible: each name that is not a hidden temporary file parses
    if os.path.isdir(journal.jobs_dir):
        for name in os.listdir(journal.jobs_dir):
            if not name.startswith("."):
                with open(os.path.join(journal.jobs_dir, name), "rb") as f:
                    parse_record(f.read(), name[: -len(".json")])
    assert journal.problems() == ()
    records = journal.jobs()
    assert [r.job_id for r in records] in ([], [JOB])
    driver = open_driver("sim", sim_state=sim_state)
    live = driver.instances()

    # every instance is accounted for by the record: claimed as planned (maybe created) or created
    while_running = rp.diff(records, live, {JOB})
    for inst in live:
        (action,) = [a for a in while_running if a.instance == inst]
        assert action.job_id == JOB and action.kind in (Repair.KEEP, Repair.ADOPT, Repair.REPORT), action
        if action.kind == Repair.REPORT:
            assert inst.mig_uuid is None  # only a GI whose CI was not made yet
    assert not [a for a in while_running if a.kind in rp.MUTATING - {Repair.ADOPT}]

    # the job has ended: applying the diff releases everything and closes the record
    actions = rp.diff(records, live, set())
    assert not [a for a in actions if a.kind in (Repair.DESTROY_ORPHAN, Repair.REPORT)], actions
    with journal.lock():
        for a in actions:
            if a.kind in (Repair.DESTROY, Repair.MARK_RELEASED):
                journal.begin_release(a.job_id)
                if a.instance is not None:
                    driver.destroy(a.instance.gpu_index, a.instance.gi_id)
                journal.record_released(a.job_id, a.index)
            elif a.kind == Repair.FINISH_RELEASE:
                journal.begin_release(a.job_id)
                assert journal.finish_release(a.job_id)
    assert driver.instances() == []
    assert journal.jobs() == () and journal.problems() == ()
    kinds = ",".join(sorted({a.kind for a in actions}))
    return kinds or "clean"


@pytest.mark.parametrize("kill_after", range(-1, STEPS))
def test_kill_between_every_pair_of_steps(node, kill_after):
    state_dir, sim_state = node
    code = _run_child(state_dir, sim_state, kill_after)
    assert code == (0 if kill_after == -1 else -signal.SIGKILL)
    kinds = _check_and_recover(state_dir, sim_state)
    # after the last step there is nothing left to do; before it, reconcile had work
    assert (kinds == "clean") == (kill_after in (-1, STEPS - 1)), kinds


@pytest.mark.slow
def test_kill_at_random_moments(node):
    state_dir, sim_state = node
    # how long one undisturbed run takes, measured here: kills are spread over that span
    t0 = time.monotonic()
    assert _run_child(state_dir, sim_state, kill_after=STEPS + 1) == 0
    span = time.monotonic() - t0
    rng = random.Random(20240611)
    seen = set()
    deadline = time.monotonic() + 60
    for _ in range(RANDOM_TRIALS):
        if time.monotonic() > deadline:
            break
        _run_child(state_dir, sim_state, kill_after=STEPS + 1, delay_s=rng.uniform(0, span))
        seen.add(_check_and_recover(state_dir, sim_state))
    # the kills landed in more than one phase (not all before the start or after the end)
    assert len(seen) >= 2, seen


def _churn(state_dir: str, seconds: float) -> None:
    journal = Journal(state_dir, boot_id=BOOT)
    planned = [Planned.from_any(p, "GPU-x") for p in PLAN]
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        job = str(1000 + n % 3)
        journal.begin_prepare(job, 1, 1, "x", planned)
        for k in range(2):
            journal.record_created(job, k, {"gi_id": k + 1, "ci_id": 0, "mig_uuid": f"MIG-{n}-{k}"})
        journal.finish_prepare(job)
        journal.begin_release(job)
        for k in range(2):
            journal.record_released(job, k)
        journal.finish_release(job)
        n += 1
    os._exit(0)


def test_readers_without_the_lock_never_see_a_partial_record(tmp_path):
    state_dir = str(tmp_path / "state")
    Journal(state_dir, boot_id=BOOT).begin_prepare("1", 1, 1, "x", [])  # creates the directories
    ctx = multiprocessing.get_context("fork")
    writer = ctx.Process(target=_churn, args=(state_dir, 1.5))
    writer.start()
    reader = Journal(state_dir, boot_id=BOOT)
    reads = 0
    phases = set()
    while writer.is_alive():
        assert reader.problems() == ()
        for r in reader.jobs():
            phases.add(r.phase)
        reads += 1
    writer.join()
    assert writer.exitcode == 0
    assert reads > 10 and len(phases) >= 2, (reads, phases)
