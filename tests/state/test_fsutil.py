from __future__ import annotations

import multiprocessing
import os
import re
import signal
import stat
import time

import pytest

from slurm_gpu.core.errors import LockTimeout, StateError
from slurm_gpu.state.fsutil import FileLock, append_line, atomic_write, boot_id


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_write_creates_file_with_mode_even_with_open_umask(tmp_path):
    target = tmp_path / "state.json"
    old = os.umask(0)
    try:
        atomic_write(target, "hello")
    finally:
        os.umask(old)
    assert target.read_bytes() == b"hello"
    assert _mode(target) == 0o600


def test_atomic_write_replaces_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "f"
    atomic_write(target, b"one", mode=0o644)
    atomic_write(target, b"two" * 1000, mode=0o400)
    assert target.read_bytes() == b"two" * 1000
    assert _mode(target) == 0o400
    assert sorted(os.listdir(tmp_path)) == ["f"]


def test_atomic_write_sets_owner_before_rename(tmp_path):
    target = tmp_path / "owned"
    atomic_write(target, "x", owner=(os.getuid(), os.getgid()))
    st = os.stat(target)
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_atomic_write_chowns_to_other_user_as_root(tmp_path):
    target = tmp_path / "theirs"
    atomic_write(target, "x", mode=0o400, owner=(65534, 65534))
    st = os.stat(target)
    assert (st.st_uid, st.st_gid, _mode(target)) == (65534, 65534, 0o400)


def test_atomic_write_failure_names_path_and_keeps_old_content(tmp_path, monkeypatch):
    missing = tmp_path / "no-such-dir" / "f"
    with pytest.raises(StateError, match="no-such-dir"):
        atomic_write(missing, "x")
    target = tmp_path / "keep"
    atomic_write(target, "old")

    def failing_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)  # a disk error in the middle of the write
    with pytest.raises(StateError, match="keep"):
        atomic_write(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["keep"]


def test_append_line_appends_with_mode(tmp_path):
    log = tmp_path / "history.log"
    append_line(log, "a")
    append_line(log, "b\n")
    assert log.read_text() == "a\nb\n"
    assert _mode(log) == 0o600


def _hold_lock(path: str, ready, seconds: float) -> None:
    with FileLock(path, timeout_s=5):
        ready.set()
        time.sleep(seconds)


def test_lock_timeout_names_path_and_holder_pid(tmp_path):
    path = str(tmp_path / "lock")
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(path, ready, 30))
    holder.start()
    try:
        assert ready.wait(10)
        t0 = time.monotonic()
        with pytest.raises(LockTimeout) as info:
            with FileLock(path, timeout_s=0.2):
                pass
        waited = time.monotonic() - t0
        assert 0.2 <= waited < 2.0
        assert info.value.path == path
        assert info.value.holder_pid == holder.pid
        assert str(holder.pid) in str(info.value) and path in str(info.value)
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.join()
    # the kernel dropped the lock of the killed holder: taking it now succeeds at once
    with FileLock(path, timeout_s=1) as lock:
        assert lock.held
        assert open(path).read().strip() == str(os.getpid())
    assert open(path).read() == ""


def test_lock_waits_for_release(tmp_path):
    path = str(tmp_path / "lock")
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(path, ready, 0.3))
    holder.start()
    assert ready.wait(10)
    t0 = time.monotonic()
    with FileLock(path, timeout_s=10):
        waited = time.monotonic() - t0
    holder.join()
    assert 0.1 < waited < 5


def test_two_lock_objects_in_one_process_exclude_each_other(tmp_path):
    path = tmp_path / "lock"
    with FileLock(path, timeout_s=1):
        with pytest.raises(LockTimeout):
            FileLock(path, timeout_s=0.05).acquire()
    lock = FileLock(path, timeout_s=1)
    lock.acquire()
    with pytest.raises(StateError):
        lock.acquire()
    lock.release()
    lock.release()  # harmless twice
    assert not lock.held


def test_boot_id_is_the_kernel_uuid_and_missing_file_raises(tmp_path):
    assert re.fullmatch(r"[0-9a-f-]{36}", boot_id())
    assert boot_id() == boot_id()
    with pytest.raises(StateError, match="boot id"):
        boot_id(str(tmp_path / "missing"))
    fake = tmp_path / "bid"
    fake.write_text("abc\n")
    assert boot_id(str(fake)) == "abc"
