"""The node journal: which job owns which MIG instance, written so that it can be trusted after a crash.

One file per job (``<state_dir>/jobs/<job_id>.json``), replaced atomically at every step and checked on
every read (format version, sha256 checksum over the canonical body, boot id). A job moves through
phases, each saved before the driver is touched for the next step::

    begin_prepare  -> PrepareStarted    (instances 'planned', written BEFORE any driver call)
    record_created -> PrepareStarted    (one instance now 'created', with its gi_id/ci_id/MIG UUID)
    finish_prepare -> PrepareCompleted
    begin_release  -> ReleaseStarted    (from any phase: an epilog after a half-finished prolog too)
    record_released-> ReleaseStarted    (one instance now 'released', written AFTER it was destroyed)
    finish_release -> record removed, one line appended to history.log

So after a crash at any point every instance the driver may hold is named by a record, either as
'planned' (maybe created, look for it at its planned placement) or 'created'. ``with journal.lock():``
is the node-wide lock serialising every change of the node's GPUs; the mutating methods take it
themselves too (it is re-entrant within one ``Journal``).

Files that cannot be trusted are reported by ``problems()`` with their path and reason and never
deleted; ``quarantine(path)`` moves one aside on explicit request.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from dataclasses import replace
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from slurm_gpu.core.errors import BadInputError, StateError
from slurm_gpu.core.vocab import InstanceState, Phase
from slurm_gpu.state import task_env
from slurm_gpu.state.history import History, released_event
from slurm_gpu.state.records import (
    Actual,
    InstanceRecord,
    JobRecord,
    Planned,
    Problem,
    RecordProblem,
    check_actual,
    check_planned,
    is_int,
    parse_record,
)
from slurm_gpu.state.task_env import validate_job_id

__all__ = ["Journal", "DEFAULT_STATE_DIR"]

DEFAULT_STATE_DIR = "/var/lib/slurm-gpu"

_RECORD_NAME = re.compile(r"([0-9]{1,20}(?:_[0-9]{1,20})?)\.json\Z")

# Records this process parsed, by file, with the bytes and the boot they were checked against: the same
# bytes are the same record. Parsing and verifying one takes about 0.1 ms and every node read meets every
# record; the hook server's spare child reads the journal while it waits, so a hook parses only what
# changed since (``hooks.server``).
_parsed: Dict[str, Tuple[bytes, str, JobRecord]] = {}

_DIR_MODE = 0o700
# state_dir and tasks/ are traversable but not listable, so a job's user can open its own task file.
_TRAVERSE_MODE = 0o711


# --- the journal ------------------------------------------------------------------------------------


class Journal:
    """Per-job records under ``state_dir`` and the node-wide lock. Nothing is created until first needed.

    Layout (modes): ``state_dir`` 0711, ``lock`` 0600, ``jobs/`` 0700 with ``<job_id>.json`` 0600,
    ``history.log`` 0600, ``quarantine/`` 0700, ``tasks/`` 0711 with ``<job_id>`` 0400 owned by the job's
    user.
    """

    def __init__(
        self,
        state_dir: Union[str, os.PathLike] = DEFAULT_STATE_DIR,
        lock_timeout_s: float = 30.0,
        boot_id: Optional[str] = None,
    ):
        self.state_dir = os.path.abspath(os.fspath(state_dir))
        self.lock_timeout_s = lock_timeout_s
        self.jobs_dir = os.path.join(self.state_dir, "jobs")
        self.tasks_dir = os.path.join(self.state_dir, "tasks")
        self.quarantine_dir = os.path.join(self.state_dir, "quarantine")
        self.lock_path = os.path.join(self.state_dir, "lock")
        self.history_path = os.path.join(self.state_dir, "history.log")
        self.history_log = History(self.history_path)
        self._boot_id = boot_id
        self._lock: Any = None
        self._lock_depth = 0
        self._dirs_ready = False

    def __repr__(self) -> str:
        return f"Journal({self.state_dir!r})"

    @property
    def boot_id(self) -> str:
        if self._boot_id is None:
            from slurm_gpu.state.fsutil import boot_id

            self._boot_id = boot_id()
        return self._boot_id

    # -- directories and lock --

    def _ensure_dirs(self) -> None:
        if self._dirs_ready:
            return
        _make_dir(self.state_dir, _TRAVERSE_MODE, check_owner=True)
        _make_dir(self.jobs_dir, _DIR_MODE)
        _make_dir(self.tasks_dir, _TRAVERSE_MODE)
        self._dirs_ready = True

    @contextlib.contextmanager
    def lock(self) -> Iterator[Journal]:
        """THE node-wide lock: hold it around every change of the node's GPUs. Re-entrant per object;
        raises ``LockTimeout`` (naming the holder's pid) after ``lock_timeout_s``."""
        if self._lock_depth == 0:
            from slurm_gpu.state.fsutil import FileLock

            self._ensure_dirs()
            lock = FileLock(self.lock_path, self.lock_timeout_s)
            lock.acquire()
            self._lock = lock
        self._lock_depth += 1
        try:
            yield self
        finally:
            self._lock_depth -= 1
            if self._lock_depth == 0:
                lock, self._lock = self._lock, None
                lock.release()

    @property
    def locked(self) -> bool:
        return self._lock_depth > 0

    # -- reading --

    def _record_path(self, job_id: str) -> str:
        return os.path.join(self.jobs_dir, f"{job_id}.json")

    def _load(self, path: str, job_id: Optional[str]) -> JobRecord:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise StateError(f"cannot read journal file {path}: {exc}") from exc
        boot_id = self.boot_id
        hit = _parsed.get(path)
        if hit is not None and hit[0] == data and hit[1] == boot_id:
            return hit[2]
        record = parse_record(data, job_id, boot_id)
        _parsed[path] = (data, boot_id, record)
        return record

    def get(self, job_id: Union[str, int]) -> Optional[JobRecord]:
        """The job's record (``stale=True`` if from another boot), None if it has none; raises
        ``StateError`` naming the file if it is corrupt, foreign or fails its checksum."""
        job_id = validate_job_id(job_id)
        path = self._record_path(job_id)
        try:
            return self._load(path, job_id)
        except RecordProblem as exc:
            raise StateError(f"journal file {path}: {exc.reason}") from None
        except StateError:
            if not os.path.lexists(path):
                return None
            raise

    def _scan(self) -> Tuple[List[JobRecord], List[Problem]]:
        records: List[JobRecord] = []
        problems: List[Problem] = []
        try:
            names = sorted(os.listdir(self.jobs_dir))
        except FileNotFoundError:
            return records, problems
        except OSError as exc:
            raise StateError(f"cannot list {self.jobs_dir}: {exc}") from exc
        for name in names:
            path = os.path.join(self.jobs_dir, name)
            if name.startswith("."):
                continue  # temporary file of an atomic write (left by a crash): never a record
            m = _RECORD_NAME.match(name)
            if not m:
                problems.append(Problem(path, "name", "not a journal record name"))
                continue
            try:
                record = self._load(path, m.group(1))
            except RecordProblem as exc:
                problems.append(Problem(path, exc.kind, exc.reason, m.group(1)))
                continue
            except StateError as exc:
                if not os.path.lexists(path):
                    continue
                problems.append(Problem(path, "corrupt", str(exc), m.group(1)))
                continue
            records.append(record)
            if record.stale:
                reason = f"written during boot {record.boot_id}, not this one"
                problems.append(Problem(path, "stale", reason, record.job_id))
        records.sort(key=lambda r: _job_sort_key(r.job_id))
        listed = {os.path.join(self.jobs_dir, name) for name in names}
        for path in list(_parsed):  # a copy: entries are removed on the way
            if path not in listed and os.path.dirname(path) == self.jobs_dir:
                _parsed.pop(path, None)  # the file is gone: so is what this process remembers of it
        return records, problems

    def scan(self) -> Tuple[Tuple[JobRecord, ...], Tuple[Problem, ...]]:
        """``jobs()`` and ``problems()`` from one read of the journal directory."""
        records, problems = self._scan()
        return tuple(records), tuple(problems)

    def jobs(self) -> Tuple[JobRecord, ...]:
        """Every record that passes its checks, by job id; stale ones (``stale=True``) included."""
        return tuple(self._scan()[0])

    def problems(self) -> Tuple[Problem, ...]:
        """Files that are corrupt, fail their checksum, have a foreign format version or an unexpected
        name, and records of another boot. Reported only: nothing is deleted."""
        return tuple(self._scan()[1])

    # -- phases --

    def _write(self, record: JobRecord) -> JobRecord:
        from slurm_gpu.state.fsutil import atomic_write

        data = json.dumps(record.to_dict(), sort_keys=True, indent=1) + "\n"
        atomic_write(self._record_path(record.job_id), data, mode=0o600)
        return record

    def _require(self, job_id: str) -> JobRecord:
        record = self.get(job_id)
        if record is None:
            raise StateError(f"no journal record for job {job_id}")
        return record

    def begin_prepare(
        self,
        job_id: Union[str, int],
        uid: int,
        gid: int,
        request: str,
        planned: Sequence[Any],
    ) -> JobRecord:
        """Save the intent (PrepareStarted, every instance 'planned') BEFORE any driver call.

        Raises ``StateError`` if the job already has a record: the caller decides whether to reuse or
        roll back that earlier attempt (``begin_release``...).
        """
        job_id = validate_job_id(job_id)
        if not (is_int(uid) and is_int(gid) and uid >= 0 and gid >= 0):
            raise BadInputError(f"job {job_id}: bad uid/gid {uid!r}/{gid!r}", part=f"{uid}:{gid}")
        if not isinstance(request, str):
            raise BadInputError(f"job {job_id}: request must be a string", part=repr(request))
        instances = []
        for n, p in enumerate(planned):
            try:
                item = Planned.from_any(p)
                check_planned(item, f"planned[{n}]")
            except (ValueError, AttributeError, TypeError) as exc:
                raise BadInputError(f"job {job_id}: bad planned instance {n}: {exc}", part=repr(p)) from None
            instances.append(InstanceRecord(item, None, InstanceState.PLANNED))
        with self.lock():
            existing = self.get(job_id)
            if existing is not None:
                raise StateError(f"job {job_id} already has a journal record in phase {existing.phase}")
            now = _now()
            record = JobRecord(
                job_id=job_id,
                uid=uid,
                gid=gid,
                request=request,
                phase=Phase.PREPARE_STARTED,
                created=now,
                updated=now,
                boot_id=self.boot_id,
                instances=tuple(instances),
            )
            return self._write(record)

    def _set_instance(self, record: JobRecord, index: int, item: InstanceRecord, phase: Phase) -> JobRecord:
        instances = list(record.instances)
        instances[index] = item
        return self._write(replace(record, instances=tuple(instances), phase=phase, updated=_now()))

    def _instance(self, record: JobRecord, index: int) -> InstanceRecord:
        if not is_int(index) or not 0 <= index < len(record.instances):
            count = len(record.instances)
            message = f"job {record.job_id} has {count} instances, no index {index!r}"
            raise BadInputError(message, part=str(index))
        return record.instances[index]

    def record_created(self, job_id: Union[str, int], index: int, actual: Any,
                       complete: bool = False) -> JobRecord:
        """Save that planned instance ``index`` now exists (after its GI and CI were created); with
        ``complete``, the last one: PrepareCompleted in the same write (``finish_prepare``'s check)."""
        job_id = validate_job_id(job_id)
        try:
            act = Actual.from_any(actual)
            check_actual(act, "actual")
        except (ValueError, AttributeError, TypeError) as exc:
            raise BadInputError(f"job {job_id}: bad actual instance: {exc}", part=repr(actual)) from None
        with self.lock():
            record = self._require(job_id)
            item = self._instance(record, index)
            if record.phase != Phase.PREPARE_STARTED:
                raise StateError(f"job {job_id}: record_created in phase {record.phase}")
            if item.state == InstanceState.CREATED and item.actual == act:
                return record  # repeated after a retry: nothing changes
            if item.state != InstanceState.PLANNED:
                raise StateError(f"job {job_id}: instance {index} is {item.state}, not planned")
            created = InstanceRecord(item.planned, act, InstanceState.CREATED)
            phase = Phase.PREPARE_STARTED
            if complete:
                _require_created(job_id, record.instances, but=index)
                phase = Phase.PREPARE_COMPLETED
            return self._set_instance(record, index, created, phase)

    def finish_prepare(self, job_id: Union[str, int]) -> JobRecord:
        """PrepareCompleted: every instance is created."""
        job_id = validate_job_id(job_id)
        with self.lock():
            record = self._require(job_id)
            if record.phase == Phase.PREPARE_COMPLETED:
                return record
            if record.phase != Phase.PREPARE_STARTED:
                raise StateError(f"job {job_id}: finish_prepare in phase {record.phase}")
            _require_created(job_id, record.instances)
            return self._write(replace(record, phase=Phase.PREPARE_COMPLETED, updated=_now()))

    def begin_release(self, job_id: Union[str, int]) -> Optional[JobRecord]:
        """ReleaseStarted, from any phase; None if the job has no record (nothing to release)."""
        job_id = validate_job_id(job_id)
        with self.lock():
            record = self.get(job_id)
            if record is None or record.phase == Phase.RELEASE_STARTED:
                return record
            return self._write(replace(record, phase=Phase.RELEASE_STARTED, updated=_now()))

    def record_released(self, job_id: Union[str, int], index: int) -> JobRecord:
        """Save that instance ``index`` is gone (after it was destroyed, or if it was never created)."""
        job_id = validate_job_id(job_id)
        with self.lock():
            record = self._require(job_id)
            item = self._instance(record, index)
            if record.phase != Phase.RELEASE_STARTED:
                raise StateError(f"job {job_id}: record_released in phase {record.phase}")
            if item.state == InstanceState.RELEASED:
                return record
            released = InstanceRecord(item.planned, item.actual, InstanceState.RELEASED)
            return self._set_instance(record, index, released, Phase.RELEASE_STARTED)

    def finish_release(self, job_id: Union[str, int]) -> bool:
        """Remove the record of a job whose instances are all released, after appending a line to
        ``history.log``; also removes its task file. False if there was no record."""
        job_id = validate_job_id(job_id)
        with self.lock():
            record = self.get(job_id)
            if record is None:
                self.remove_task_env(job_id)
                return False
            if record.phase != Phase.RELEASE_STARTED:
                raise StateError(f"job {job_id}: finish_release in phase {record.phase}")
            left = [n for n, i in enumerate(record.instances) if i.state != InstanceState.RELEASED]
            if left:
                raise StateError(f"job {job_id}: instances {left} are not released")
            # History first: a crash in between repeats a line rather than losing one.
            self._append_history(record)
            path = self._record_path(job_id)
            try:
                os.unlink(path)
            except OSError as exc:
                raise StateError(f"cannot remove {path}: {exc}") from exc
            _parsed.pop(path, None)
            from slurm_gpu.state.fsutil import fsync_dir

            fsync_dir(self.jobs_dir)
            self.remove_task_env(job_id)
            return True

    def _append_history(self, record: JobRecord) -> None:
        self.history_log.append(released_event(record))

    def log_event(self, event: str, job_id: str, node: str, reason: str, detail: str) -> None:
        """Count a requeue or cancellation in the history; counting never fails a hook."""
        try:
            self.history_log.append({"event": event, "job_id": job_id, "node": node, "reason": reason,
                                     "detail": detail})
        except (OSError, StateError):
            pass

    def history(self) -> Tuple[Dict[str, Any], ...]:
        """The lines of ``history.log`` (the current file only), oldest first; unreadable lines skipped."""
        return self.history_log.read()

    def quarantine(self, path: Union[str, os.PathLike]) -> str:
        """Move one journal file (as named by ``problems()``) into ``quarantine/``; returns its new path."""
        path = os.path.abspath(os.fspath(path))
        if os.path.dirname(path) != self.jobs_dir or os.path.basename(path).startswith("."):
            raise BadInputError(f"{path} is not a file of {self.jobs_dir}", part=path)
        with self.lock():
            if not os.path.isfile(path) or os.path.islink(path):
                raise BadInputError(f"{path} is not a regular file", part=path)
            _make_dir(self.quarantine_dir, _DIR_MODE)
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
            target = os.path.join(self.quarantine_dir, f"{os.path.basename(path)}.{stamp}")
            n = 0
            while os.path.lexists(target):
                n += 1
                target = os.path.join(self.quarantine_dir, f"{os.path.basename(path)}.{stamp}.{n}")
            os.rename(path, target)
            from slurm_gpu.state.fsutil import fsync_dir

            fsync_dir(self.jobs_dir)
            fsync_dir(self.quarantine_dir)
            return target

    # -- task files for the TaskProlog --

    def task_env_path(self, uid: int, job_id: Union[str, int]) -> str:
        return task_env.task_env_path(self.state_dir, uid, job_id)

    def write_task_env(self, job_id: Union[str, int], uid: int, gid: int, mig_uuids: Sequence[str]) -> str:
        """Leave the job's MIG UUIDs for its tasks (``task_env.write_task_env``)."""
        self._ensure_dirs()
        return task_env.write_task_env(self.state_dir, job_id, uid, gid, mig_uuids)

    def remove_task_env(self, job_id: Union[str, int]) -> bool:
        return task_env.remove_task_env(self.state_dir, job_id)


def _require_created(job_id: str, instances: Sequence[InstanceRecord], but: Optional[int] = None) -> None:
    """StateError unless every instance (but the one at ``but``) is created: a prepare may complete."""
    missing = [n for n, i in enumerate(instances) if n != but and i.state != InstanceState.CREATED]
    if missing:
        raise StateError(f"job {job_id}: instances {missing} are not created")


def _make_dir(path: str, mode: int, check_owner: bool = False) -> None:
    """Create ``path`` with exactly ``mode``; an existing one we own is set to ``mode``. Refuses a
    directory another user owns (``check_owner``) or that others may write, since root trusts it."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        pass
    except FileNotFoundError:
        # A missing parent (state_dir: /var/lib/slurm-gpu/{node}): created traversable like state_dir.
        parent = os.path.dirname(path)
        if parent == path:
            raise StateError(f"cannot create {path}") from None
        _make_dir(parent, _TRAVERSE_MODE)
        _make_dir(path, mode, check_owner)
        return
    except OSError as exc:
        raise StateError(f"cannot create {path}: {exc}") from exc
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise StateError(f"cannot stat {path}: {exc}") from exc
    import stat as _stat

    if not _stat.S_ISDIR(st.st_mode):
        raise StateError(f"{path} is not a directory")
    if st.st_uid != os.geteuid():
        if check_owner or st.st_mode & 0o022:
            raise StateError(f"{path} is owned by uid {st.st_uid}, not {os.geteuid()}: refusing to trust it")
        return
    if _stat.S_IMODE(st.st_mode) != mode:
        try:
            os.chmod(path, mode)
        except OSError as exc:
            raise StateError(f"cannot chmod {path}: {exc}") from exc


def _job_sort_key(job_id: str) -> Tuple[int, int]:
    base, _, task = job_id.partition("_")
    return int(base), int(task) if task else -1


def _now() -> float:
    return round(time.time(), 3)
