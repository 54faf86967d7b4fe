from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slurm_gpu.core.errors import BadInputError, LockTimeout, StateError
from slurm_gpu.core.vocab import InstanceState, Phase
from slurm_gpu.state.journal import Journal
from slurm_gpu.state.records import Actual, Planned, parse_record
from slurm_gpu.state.task_env import read_task_env

BOOT = "11111111-2222-3333-4444-555555555555"
P0 = Planned(gpu_index=0, gpu_uuid="GPU-aaaa", profile_id=19, profile_name="1g.10gb", start=3, size=1)
P1 = Planned(gpu_index=1, gpu_uuid="GPU-bbbb", profile_id=9, profile_name="3g.40gb", start=4, size=4)
A0 = Actual(7, 0, "MIG-0f3c7c2e-1111-2222-3333-444444444444", gi_cap_minor=66, ci_cap_minor=67)
A1 = Actual(gi_id=2, ci_id=0, mig_uuid="MIG-0f3c7c2e-5555-6666-7777-888888888888")


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def journal(tmp_path):
    return Journal(tmp_path / "state", lock_timeout_s=2, boot_id=BOOT)


def test_full_lifecycle_writes_each_phase_and_removes_the_record(journal):
    r = journal.begin_prepare("42", 1000, 1000, "gres:gpu:1g.10gb:1,gres:gpu:3g.40gb:1", [P0, P1])
    assert r.phase == Phase.PREPARE_STARTED and [i.state for i in r.instances] == [
        InstanceState.PLANNED,
        InstanceState.PLANNED,
    ]
    path = os.path.join(journal.jobs_dir, "42.json")
    assert _mode(path) == 0o600
    assert _mode(journal.jobs_dir) == 0o700
    assert _mode(journal.state_dir) == 0o711
    assert _mode(journal.tasks_dir) == 0o711
    on_disk = json.load(open(path))
    assert on_disk["checksum"].startswith("sha256:") and on_disk["boot_id"] == BOOT
    assert on_disk["instances"][0]["planned"]["gpu_uuid"] == "GPU-aaaa"

    journal.record_created("42", 0, A0)
    r = journal.record_created(42, 1, {"gi_id": 2, "ci_id": 0, "mig_uuid": A1.mig_uuid})
    assert [i.state for i in r.instances] == [InstanceState.CREATED, InstanceState.CREATED]
    assert r.instances[1].actual == A1
    r = journal.finish_prepare("42")
    assert r.phase == Phase.PREPARE_COMPLETED
    assert journal.get("42") == r
    assert r.updated >= r.created

    journal.write_task_env("42", os.getuid(), os.getgid(), [A0.mig_uuid, A1.mig_uuid])
    r = journal.begin_release("42")
    assert r.phase == Phase.RELEASE_STARTED
    journal.record_released("42", 1)
    with pytest.raises(StateError, match=r"instances \[0\] are not released"):
        journal.finish_release("42")
    assert journal.get("42").instances[1].state == InstanceState.RELEASED
    journal.record_released("42", 0)
    assert journal.finish_release("42") is True
    assert journal.get("42") is None
    assert not os.path.exists(path)
    assert read_task_env(journal.state_dir, os.getuid(), "42") is None  # the task file went with the record
    (line,) = journal.history()
    assert line["job_id"] == "42" and line["event"] == "released"
    assert [i["mig_uuid"] for i in line["instances"]] == [A0.mig_uuid, A1.mig_uuid]
    assert _mode(journal.history_path) == 0o600
    assert journal.jobs() == () and journal.problems() == ()


def test_release_after_half_finished_prepare(journal):
    journal.begin_prepare("7", 1, 1, "gpu:1g.10gb:2", [P0, P1])
    journal.record_created("7", 0, A0)
    r = journal.begin_release("7")  # the prolog died before instance 1 existed
    assert r.phase == Phase.RELEASE_STARTED and [i.state for i in r.instances] == [
        InstanceState.CREATED,
        InstanceState.PLANNED,
    ]
    with pytest.raises(StateError, match="record_created in phase ReleaseStarted"):
        journal.record_created("7", 1, A1)
    journal.record_released("7", 0)
    journal.record_released("7", 1)
    assert journal.finish_release("7")


def test_epilog_is_idempotent(journal):
    assert journal.begin_release("9") is None
    assert journal.finish_release("9") is False
    journal.begin_prepare("9", 1, 1, "x", [P0])
    first = journal.begin_release("9")
    assert journal.begin_release("9") == first
    journal.record_released("9", 0)
    assert journal.record_released("9", 0).instances[0].state == InstanceState.RELEASED
    assert journal.finish_release("9") and not journal.finish_release("9")
    assert len(journal.history()) == 1


def test_phase_order_is_enforced(journal):
    journal.begin_prepare("5", 1, 1, "x", [P0, P1])
    with pytest.raises(StateError, match="already has a journal record"):
        journal.begin_prepare("5", 1, 1, "x", [P0])
    with pytest.raises(StateError, match=r"instances \[0, 1\] are not created"):
        journal.finish_prepare("5")
    with pytest.raises(StateError, match="record_released in phase PrepareStarted"):
        journal.record_released("5", 0)
    with pytest.raises(BadInputError, match="no index 2"):
        journal.record_created("5", 2, A0)
    journal.record_created("5", 0, A0)
    assert journal.record_created("5", 0, A0).instances[0].actual == A0  # a retry changes nothing
    with pytest.raises(StateError, match="is created, not planned"):
        journal.record_created("5", 0, A1)
    with pytest.raises(StateError, match="no journal record for job 6"):
        journal.record_created("6", 0, A0)
    with pytest.raises(StateError, match="finish_release in phase PrepareStarted"):
        journal.finish_release("5")
    assert journal.get("5").phase == Phase.PREPARE_STARTED


BAD_JOB_IDS = ["../x", "1/2", "", "abc", "1_", "_1", "1.json", "-1", "1\n", " 1", True, "1" * 21]


@pytest.mark.parametrize("bad", BAD_JOB_IDS)
def test_job_ids_are_validated_before_any_path_is_built(journal, bad):
    for call in (
        lambda: journal.begin_prepare(bad, 1, 1, "x", [P0]),
        lambda: journal.get(bad),
        lambda: journal.begin_release(bad),
        lambda: journal.write_task_env(bad, 1, 1, []),
        lambda: read_task_env(journal.state_dir, os.getuid(), bad),
    ):
        with pytest.raises(BadInputError):
            call()
    assert not os.path.exists(journal.jobs_dir) or os.listdir(journal.jobs_dir) == []


def test_array_job_ids_are_accepted_and_sorted_numerically(journal):
    for job in ("100", "20_3", "20_10", "9"):
        journal.begin_prepare(job, 1, 1, "x", [P0])
    assert [r.job_id for r in journal.jobs()] == ["9", "20_3", "20_10", "100"]


def test_bad_inputs_to_begin_prepare(journal):
    with pytest.raises(BadInputError, match="uid/gid"):
        journal.begin_prepare("1", -1, 0, "x", [P0])
    with pytest.raises(BadInputError, match="planned instance 0"):
        journal.begin_prepare("1", 0, 0, "x", [{"gpu_index": 0}])
    journal.begin_prepare("1", 0, 0, "x", [P0])
    with pytest.raises(BadInputError, match="MIG UUID"):
        journal.record_created("1", 0, {"gi_id": 1, "ci_id": 0, "mig_uuid": "x"})
    with pytest.raises(BadInputError, match="gi_id"):
        journal.record_created("1", 0, {"gi_id": "1", "ci_id": 0, "mig_uuid": A0.mig_uuid})
    assert journal.get("1").instances[0].state == InstanceState.PLANNED


def test_planned_from_a_planner_object_takes_the_gpu_uuid():
    @dataclass(frozen=True)
    class PlannedInstance:  # the planner's type has no gpu_uuid
        gpu_index: int
        profile_id: int
        profile_name: str
        start: int
        size: int

    p = Planned.from_any(PlannedInstance(1, 9, "3g.40gb", 4, 4), gpu_uuid="GPU-bbbb")
    assert p == P1


def _write_raw(journal, name, data):
    os.makedirs(journal.jobs_dir, exist_ok=True)
    path = os.path.join(journal.jobs_dir, name)
    with open(path, "w" if isinstance(data, str) else "wb") as f:
        f.write(data)
    return path


def test_problems_are_reported_with_reason_and_never_deleted(journal, tmp_path):
    journal.begin_prepare("1", 1, 1, "x", [P0])  # a sound record
    other_boot = Journal(journal.state_dir, boot_id="99999999-0000-0000-0000-000000000000")
    other_boot.begin_prepare("2", 1, 1, "x", [P1])
    corrupt = _write_raw(journal, "3.json", '{"format_version": 1, "job_id": ')
    record = json.load(open(os.path.join(journal.jobs_dir, "1.json")))
    tampered = dict(record, uid=0)
    bad_sum = _write_raw(journal, "4.json", json.dumps(dict(tampered, job_id="4")))
    foreign = _write_raw(journal, "5.json", json.dumps(dict(record, format_version=2)))
    misnamed = _write_raw(journal, "notes.txt", "hello")
    leftover = _write_raw(journal, ".6.json.abcd.tmp", "{")  # a crash during an atomic write
    wrong_job = _write_raw(journal, "8.json", json.dumps(record))

    kinds = {p.path: p.kind for p in journal.problems()}
    stale_path = os.path.join(journal.jobs_dir, "2.json")
    assert kinds == {
        stale_path: "stale",
        corrupt: "corrupt",
        bad_sum: "checksum",
        foreign: "version",
        misnamed: "name",
        wrong_job: "corrupt",
    }
    reasons = {p.path: p.reason for p in journal.problems()}
    assert "99999999" in reasons[stale_path]
    assert "format_version 2" in reasons[foreign]
    assert "job 8 holds the record of job 1" in reasons[wrong_job]
    # stale records stay readable (reconcile decides), the rest are not records
    assert [(r.job_id, r.stale) for r in journal.jobs()] == [("1", False), ("2", True)]
    assert other_boot.get("2").stale is False
    with pytest.raises(StateError, match="3.json"):
        journal.get("3")
    with pytest.raises(StateError, match="checksum mismatch"):
        journal.get("4")
    for path in (corrupt, bad_sum, foreign, misnamed, leftover, wrong_job, stale_path):
        assert os.path.exists(path)

    moved = journal.quarantine(bad_sum)
    assert os.path.dirname(moved) == journal.quarantine_dir and not os.path.exists(bad_sum)
    assert _mode(journal.quarantine_dir) == 0o700
    assert json.load(open(moved))["job_id"] == "4"
    assert bad_sum not in {p.path for p in journal.problems()}
    with pytest.raises(BadInputError):
        journal.quarantine(tmp_path / "elsewhere.json")
    with pytest.raises(BadInputError):
        journal.quarantine(os.path.join(journal.jobs_dir, "..", "lock"))
    with pytest.raises(BadInputError):
        journal.quarantine(leftover)


def test_a_record_is_parsed_again_exactly_when_its_bytes_or_the_boot_differ(journal, monkeypatch):
    import slurm_gpu.state.journal as journal_module

    journal.begin_prepare("1", 1, 1, "x", [P0])
    parsed = []
    real = journal_module.parse_record
    monkeypatch.setattr(journal_module, "parse_record", lambda *a: parsed.append(a[1:]) or real(*a))
    first = journal.get("1")
    assert journal.jobs() == (first,) and journal.get("1") is first and parsed == [("1", BOOT)]
    path = os.path.join(journal.jobs_dir, "1.json")
    good = open(path, "rb").read()
    assert b'"uid": 1,' in good
    _write_raw(journal, "1.json", good.replace(b'"uid": 1,', b'"uid": 0,'))  # same size, other bytes
    with pytest.raises(StateError, match="checksum mismatch"):
        journal.get("1")
    _write_raw(journal, "1.json", good)
    assert journal.get("1") == first and not first.stale
    assert Journal(journal.state_dir, boot_id="another-boot").get("1").stale  # same bytes, other boot
    os.unlink(path)
    assert journal.jobs() == () and path not in journal_module._parsed


def test_a_stale_record_can_still_be_released(journal):
    Journal(journal.state_dir, boot_id="old-boot").begin_prepare("3", 1, 1, "x", [P0])
    assert journal.get("3").stale
    with pytest.raises(StateError, match="already has a journal record"):
        journal.begin_prepare("3", 1, 1, "x", [P0])
    r = journal.begin_release("3")
    assert r.stale and r.boot_id == "old-boot"
    journal.record_released("3", 0)
    assert journal.finish_release("3")


@settings(max_examples=40, deadline=None)
@given(
    uid=st.integers(0, 2**32 - 1),
    request=st.text(max_size=40),
    starts=st.lists(st.integers(0, 7), min_size=0, max_size=4),
)
def test_record_round_trip_and_every_byte_flip_is_caught(tmp_path_factory, uid, request, starts):
    journal = Journal(tmp_path_factory.mktemp("j"), boot_id=BOOT)
    planned = [Planned(n, f"GPU-{n}", 19, "1g.10gb", s, 1) for n, s in enumerate(starts)]
    written = journal.begin_prepare("77", uid, uid, request, planned)
    path = os.path.join(journal.jobs_dir, "77.json")
    data = open(path, "rb").read()
    assert parse_record(data, "77") == written
    for pos in range(0, len(data), max(1, len(data) // 97)):
        flipped = bytearray(data)
        flipped[pos] ^= 0x01
        try:
            parsed = parse_record(bytes(flipped), "77")
        except StateError:
            continue
        assert parsed == written  # only a change that leaves the content equal may pass


def test_task_env_file_modes_and_content(journal):
    path = journal.write_task_env("12", os.getuid(), os.getgid(), [A0.mig_uuid, A1.mig_uuid])
    assert _mode(path) == 0o400 and _mode(journal.tasks_dir) == 0o711
    assert read_task_env(journal.state_dir, os.getuid(), "12") == (A0.mig_uuid, A1.mig_uuid)
    journal.write_task_env("12", os.getuid(), os.getgid(), [A1.mig_uuid])  # replacing a 0400 file works
    assert read_task_env(journal.state_dir, os.getuid(), 12) == (A1.mig_uuid,)
    assert read_task_env(journal.state_dir, os.getuid(), "13") is None
    with pytest.raises(BadInputError, match="not a MIG UUID"):
        journal.write_task_env("12", 0, 0, ["MIG-x\nexport LD_PRELOAD=/tmp/evil.so"])
    with pytest.raises(BadInputError, match="uid/gid"):
        journal.write_task_env("12", -5, 0, [])
    assert journal.remove_task_env("12") and not journal.remove_task_env("12")
    old = "MIG-GPU-8a8e4a3b-1c4f-2a1b-9c3d-123456789abc/1/0"
    journal.write_task_env("14", 0, 0, [old])
    assert read_task_env(journal.state_dir, os.getuid(), "14") == (old,)


def _read_as(uid: int, state_dir: str, job_id: str, result, owner=None) -> None:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    path = os.path.join(state_dir, "tasks", str(owner if owner is not None else uid), job_id)
    try:
        os.stat(path)
        result.put(("probe", "exists"))
    except OSError as exc:
        result.put(("probe", type(exc).__name__))
    try:
        result.put(("ok", read_task_env(state_dir, owner if owner is not None else uid, job_id)))
    except StateError as exc:
        result.put(("error", str(exc)))
    try:
        os.listdir(os.path.join(state_dir, "tasks"))
        result.put(("listed", None))
    except PermissionError:
        result.put(("not listable", None))


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_task_env_is_readable_by_the_jobs_user_only():
    # pytest's tmp_path sits under a 0700 directory: use a parent other users may traverse
    parent = tempfile.mkdtemp(prefix="slurm-gpu-test-")
    os.chmod(parent, 0o711)
    try:
        _check_task_env_access(Journal(os.path.join(parent, "state"), boot_id=BOOT))
    finally:
        shutil.rmtree(parent)


def _check_task_env_access(journal):
    journal.write_task_env("21", 65534, 65534, [A0.mig_uuid])
    journal.write_task_env("22", 65533, 65533, [A1.mig_uuid])
    ctx = multiprocessing.get_context("fork")
    result = ctx.Queue()
    proc = ctx.Process(target=_read_as, args=(65534, journal.state_dir, "21", result))
    proc.start()
    proc.join(10)
    assert result.get(timeout=5) == ("probe", "exists")
    assert result.get(timeout=5) == ("ok", (A0.mig_uuid,))
    assert result.get(timeout=5) == ("not listable", None)
    # Another user's job: not readable, and not even probeable (the same answer as for no job at all).
    for job_id in ("22", "23"):
        proc = ctx.Process(target=_read_as, args=(65534, journal.state_dir, job_id, result, 65533))
        proc.start()
        proc.join(10)
        assert result.get(timeout=5) == ("probe", "PermissionError")
        kind, message = result.get(timeout=5)
        assert kind == "error" and "Permission denied" in message
        result.get(timeout=5)


def test_lock_is_reentrant_and_excludes_other_journals(journal):
    with journal.lock():
        with journal.lock():
            assert journal.locked
            journal.begin_prepare("1", 1, 1, "x", [P0])  # takes the lock itself: re-entrant
        assert journal.locked
        other = Journal(journal.state_dir, lock_timeout_s=0.1, boot_id=BOOT)
        with pytest.raises(LockTimeout) as info:
            other.begin_release("1")
        assert info.value.holder_pid == os.getpid()
    assert not journal.locked
    assert other.begin_release("1").phase == Phase.RELEASE_STARTED


def test_readers_create_nothing(tmp_path):
    j = Journal(tmp_path / "absent", boot_id=BOOT)
    assert j.jobs() == () and j.problems() == () and j.get("1") is None and j.history() == ()
    assert not os.path.exists(tmp_path / "absent")


def test_refuses_a_state_dir_others_can_write(tmp_path):
    bad = tmp_path / "shared"
    bad.mkdir()
    if os.geteuid() == 0:
        os.chown(bad, 65534, 65534)
        with pytest.raises(StateError, match="owned by uid 65534"):
            Journal(bad, boot_id=BOOT).begin_prepare("1", 1, 1, "x", [P0])
    os.chown(bad, os.getuid(), os.getgid())
    bad.chmod(0o777)
    Journal(bad, boot_id=BOOT).begin_prepare("1", 1, 1, "x", [P0])
    assert _mode(bad) == 0o711  # our own directory is tightened, not trusted as it was


def test_history_is_rotated_when_large(journal, monkeypatch):
    import slurm_gpu.state.history as history

    monkeypatch.setattr(history, "MAX_BYTES", 300)
    for job in range(1, 6):
        journal.begin_prepare(str(job), 1, 1, "x", [P0])
        journal.begin_release(str(job))
        journal.record_released(str(job), 0)
        journal.finish_release(str(job))
    rotated = journal.history_path + ".1"
    assert os.path.exists(rotated) and _mode(rotated) == 0o600
    current = [line["job_id"] for line in journal.history()]
    older = [json.loads(line)["job_id"] for line in open(rotated)]
    assert older + current == [str(j) for j in range(1, 6)][-len(older + current) :]
    assert current and current[-1] == "5"


def test_missing_parents_of_state_dir_are_created_traversable(tmp_path):
    old = os.umask(0o077)  # even under a strict umask users must reach tasks/
    try:
        j = Journal(tmp_path / "a" / "b" / "state", boot_id=BOOT)
        j.write_task_env("3", os.getuid(), os.getgid(), [A0.mig_uuid])
    finally:
        os.umask(old)
    for d in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "state"):
        assert _mode(d) == 0o711
    assert _mode(j.tasks_dir) == 0o711 and _mode(j.jobs_dir) == 0o700
