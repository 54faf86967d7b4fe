"""The reconcile diff on every small case: invariants, then convergence when its actions are applied."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import List, Optional, Tuple

import pytest

from slurm_gpu.core.reconcile_plan import MUTATING, Action, diff
from slurm_gpu.core.vocab import InstanceState, Phase, Repair
from slurm_gpu.devices.api import MigInstance
from slurm_gpu.state.records import Actual, InstanceRecord, JobRecord, Planned, Problem

GPU = "GPU-0000"
STARTS = (0, 4)  # two 3g.40gb placements on an H100
_uuid_counter = itertools.count(1)


def _uuid() -> str:
    return f"MIG-{next(_uuid_counter):08x}-0000-0000-0000-000000000000"


def _planned(start: int, gpu_index: int = 0, gpu_uuid: str = GPU) -> Planned:
    return Planned(gpu_index, gpu_uuid, 9, "3g.40gb", start, 4)


def _inst(p: Planned, gi_id: int, mig_uuid: Optional[str], with_ci: bool = True) -> MigInstance:
    return MigInstance(
        gpu_index=p.gpu_index,
        gpu_uuid=p.gpu_uuid,
        gi_id=gi_id,
        ci_id=0 if with_ci else None,
        profile_id=p.profile_id,
        start=p.start,
        size=p.size,
        mig_uuid=mig_uuid if with_ci else None,
    )


def _record(job_id: str, phase: str, items: List[InstanceRecord]) -> JobRecord:
    return JobRecord(job_id, 1000, 1000, "gpu:3g.40gb", phase, 1.0, 1.0, "boot", tuple(items))


def _phase_for(states: Tuple[str, ...], releasing: bool) -> str:
    if releasing:
        return Phase.RELEASE_STARTED
    if all(s == InstanceState.CREATED for s in states):
        return Phase.PREPARE_COMPLETED
    return Phase.PREPARE_STARTED


# -- a model of applying actions (what the node agent does with the journal and the driver) --


def _apply(records, instances, actions):
    records = {r.job_id: r for r in records}
    instances = list(instances)
    for a in actions:
        if a.kind in (Repair.KEEP, Repair.REPORT):
            continue
        if a.kind == Repair.DESTROY_ORPHAN:
            instances.remove(a.instance)
            continue
        r = records[a.job_id]
        if a.kind == Repair.FINISH_RELEASE:
            assert all(i.state == InstanceState.RELEASED for i in r.instances), a
            del records[a.job_id]
            continue
        items = list(r.instances)
        item = items[a.index]
        if a.kind == Repair.ADOPT:
            assert item.state == InstanceState.PLANNED and r.phase == Phase.PREPARE_STARTED
            inst = a.instance
            actual = Actual(inst.gi_id, inst.ci_id, inst.mig_uuid)
            items[a.index] = InstanceRecord(item.planned, actual, InstanceState.CREATED)
        elif a.kind == Repair.DESTROY:
            instances.remove(a.instance)
            items[a.index] = replace(item, state=InstanceState.RELEASED)
        elif a.kind == Repair.MARK_RELEASED:
            items[a.index] = replace(item, state=InstanceState.RELEASED)
        else:
            raise AssertionError(a)
        phase = (
            r.phase if a.kind == Repair.ADOPT else Phase.RELEASE_STARTED
        )  # begin_release precedes releases
        records[a.job_id] = replace(r, instances=tuple(items), phase=phase)
    return list(records.values()), instances


def _claimed_by_running(records, running, inst) -> bool:
    for r in records:
        if r.job_id not in running:
            continue
        for item in r.instances:
            p = item.planned
            if item.actual is not None and item.actual.mig_uuid == inst.mig_uuid and inst.mig_uuid:
                return True
            same_gi = (p.gpu_uuid, p.profile_id, p.start, item.actual and item.actual.gi_id) == (
                inst.gpu_uuid,
                inst.profile_id,
                inst.start,
                inst.gi_id,
            )
            if item.actual is not None and same_gi and not inst.mig_uuid:
                return True
            if item.state == InstanceState.PLANNED and (p.gpu_uuid, p.profile_id, p.start) == (
                inst.gpu_uuid,
                inst.profile_id,
                inst.start,
            ):
                return True
    return False


def _check_invariants(records, instances, running, problems, actions: List[Action]) -> None:
    # each driver instance is named by exactly one action
    for inst in instances:
        named = [a for a in actions if a.instance is inst]
        assert len(named) == 1, (inst, actions)
    # each record instance gets at most one action
    seen = [(a.job_id, a.index) for a in actions if a.index is not None]
    assert len(seen) == len(set(seen))
    for a in actions:
        # the promise: nothing owned by a running job is touched
        if a.kind in (Repair.DESTROY, Repair.DESTROY_ORPHAN):
            assert not _claimed_by_running(records, running, a.instance), a
        if a.job_id is not None and a.job_id in running:
            assert a.kind in (Repair.KEEP, Repair.ADOPT, Repair.REPORT), a
        if a.kind == Repair.DESTROY_ORPHAN:
            assert not [p for p in problems if p.kind != "stale"]
    # finish_release only for ended jobs with nothing reported
    for r in records:
        finish = [a for a in actions if a.kind == Repair.FINISH_RELEASE and a.job_id == r.job_id]
        reported = [a for a in actions if a.kind == Repair.REPORT and a.job_id == r.job_id]
        if r.job_id in running or reported:
            assert not finish
        else:
            assert len(finish) == 1


# half: a GI without its CI (a crash inside create, or inside destroy after the CI went)
DRIVER_CASES = ("absent", "present", "half")


def _cases():
    for n_inst in (1, 2):
        for states in itertools.product(
            (InstanceState.PLANNED, InstanceState.CREATED, InstanceState.RELEASED), repeat=n_inst
        ):
            for drivers in itertools.product(DRIVER_CASES, repeat=n_inst):
                for running, releasing, orphan, problem in itertools.product((False, True), repeat=4):
                    if not releasing and InstanceState.RELEASED in states:
                        continue  # a released instance exists only in phase ReleaseStarted
                    yield states, drivers, running, releasing, orphan, problem


def _build(states, drivers, orphan, problem, releasing):
    items, instances = [], []
    for k, (state, drv) in enumerate(zip(states, drivers)):
        p = _planned(STARTS[k])
        actual = None if state == InstanceState.PLANNED else Actual(k + 1, 0, _uuid())
        items.append(InstanceRecord(p, actual, state))
        if drv != "absent":
            mig = actual.mig_uuid if actual is not None else _uuid()
            instances.append(_inst(p, k + 1, mig, with_ci=drv == "present"))
    if orphan:
        instances.append(_inst(_planned(0, gpu_index=1, gpu_uuid="GPU-1111"), 1, _uuid()))
    records = [_record("10", _phase_for(tuple(states), releasing), items)]
    problems = [Problem("/x/jobs/11.json", "checksum", "checksum mismatch", "11")] if problem else []
    return records, instances, problems


@pytest.mark.parametrize("case", list(_cases()), ids=str)
def test_every_small_case_is_safe_and_converges(case):
    states, drivers, running_flag, releasing, orphan, problem = case
    records, instances, problems = _build(states, drivers, orphan, problem, releasing)
    running = {"10"} if running_flag else set()
    actions = diff(records, instances, running, problems)
    _check_invariants(records, instances, running, problems, actions)

    after_records, after_instances = _apply(records, instances, actions)
    again = diff(after_records, after_instances, running, problems)
    assert not [a for a in again if a.kind in MUTATING], again  # one pass reaches the fixed point
    if not running_flag and not any(a.kind == Repair.REPORT for a in actions):
        assert after_records == [] and after_instances == []


def test_job_ids_given_as_integers_count_as_running():
    p = _planned(0)
    mig = _uuid()
    records = [
        _record("5", Phase.PREPARE_COMPLETED, [InstanceRecord(p, Actual(1, 0, mig), InstanceState.CREATED)])
    ]
    (action,) = diff(records, [_inst(p, 1, mig)], [5])
    assert action.kind == Repair.KEEP


def test_a_gpu_instance_left_by_an_interrupted_destroy_is_matched_by_gi_id():
    p = _planned(4)
    mig = _uuid()
    half = _inst(p, 3, None, with_ci=False)
    other_gi = _inst(p, 5, None, with_ci=False)  # same placement, another gi_id: not this record's
    records = [
        _record("8", Phase.RELEASE_STARTED, [InstanceRecord(p, Actual(3, 0, mig), InstanceState.CREATED)])
    ]
    actions = diff(records, [half], set())
    assert [(a.kind, a.instance) for a in actions] == [(Repair.DESTROY, half), (Repair.FINISH_RELEASE, None)]
    actions = diff(records, [other_gi], set())
    assert [a.kind for a in actions] == [Repair.MARK_RELEASED, Repair.FINISH_RELEASE, Repair.DESTROY_ORPHAN]
    (action,) = diff(records, [half], {"8"})
    assert action.kind == Repair.REPORT


def test_adoption_after_a_crash_between_create_and_record():
    p = _planned(4)
    inst = _inst(p, 2, _uuid())
    records = [_record("7", Phase.PREPARE_STARTED, [InstanceRecord(p, None, InstanceState.PLANNED)])]
    (action,) = diff(records, [inst], {"7"})
    assert (action.kind, action.job_id, action.index, action.instance) == (Repair.ADOPT, "7", 0, inst)
    assert "job 7 #0" in str(action) and "start=4" in str(action)


def test_an_instance_claimed_twice_is_reported_not_destroyed():
    p = _planned(0)
    inst = _inst(p, 1, _uuid())
    records = [
        _record("1", Phase.PREPARE_STARTED, [InstanceRecord(p, None, InstanceState.PLANNED)]),
        _record("2", Phase.PREPARE_STARTED, [InstanceRecord(p, None, InstanceState.PLANNED)]),
    ]
    for running in (set(), {"1"}, {"2"}):
        actions = diff(records, [inst], running)
        assert {a.kind for a in actions if a.instance is inst} == {Repair.REPORT}
        assert not [a for a in actions if a.kind == Repair.FINISH_RELEASE]


def test_a_planned_instance_does_not_take_one_matched_by_uuid():
    # job 1 created its instance at start 0; job 2's stale plan names the same placement
    p = _planned(0)
    mig = _uuid()
    inst = _inst(p, 1, mig)
    records = [
        _record("1", Phase.PREPARE_COMPLETED, [InstanceRecord(p, Actual(1, 0, mig), InstanceState.CREATED)]),
        _record("2", Phase.PREPARE_STARTED, [InstanceRecord(p, None, InstanceState.PLANNED)]),
    ]
    actions = diff(records, [inst], {"1"})
    assert [(a.kind, a.job_id) for a in actions] == [
        (Repair.KEEP, "1"),
        (Repair.MARK_RELEASED, "2"),
        (Repair.FINISH_RELEASE, "2"),
    ]


def test_gpu_uuid_wins_over_index_after_renumbering():
    # after a reboot the GPU that was index 0 is now index 1: the record still finds its instance
    p = _planned(0, gpu_index=0, gpu_uuid="GPU-aaaa")
    moved = replace(_inst(p, 1, _uuid()), gpu_index=1)
    other = replace(_inst(p, 1, _uuid()), gpu_uuid="GPU-bbbb")  # index 0 now: a different GPU
    records = [_record("3", Phase.PREPARE_STARTED, [InstanceRecord(p, None, InstanceState.PLANNED)])]
    actions = diff(records, [moved, other], {"3"})
    assert [(a.kind, a.instance) for a in actions] == [(Repair.ADOPT, moved), (Repair.DESTROY_ORPHAN, other)]


def test_stale_problems_do_not_block_orphan_removal():
    inst = _inst(_planned(0), 1, _uuid())
    stale = Problem("/x/jobs/1.json", "stale", "written during boot b", "1")
    assert [a.kind for a in diff([], [inst], set(), [stale])] == [Repair.DESTROY_ORPHAN]
    corrupt = Problem("/x/jobs/2.json", "corrupt", "not valid JSON", "2")
    (action,) = diff([], [inst], set(), [stale, corrupt])
    assert action.kind == Repair.REPORT and "1 journal file(s) are unreadable" in action.reason
