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
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from slurm_gpu.core.errors import BadInputError, StateError
from slurm_gpu.state import task_env
from slurm_gpu.state.task_env import is_mig_uuid, read_task_env, validate_job_id

__all__ = [
    "Journal",
    "JobRecord",
    "InstanceRecord",
    "Planned",
    "Actual",
    "Problem",
    "read_task_env",
    "validate_job_id",
    "FORMAT_VERSION",
    "DEFAULT_STATE_DIR",
    "PREPARE_STARTED",
    "PREPARE_COMPLETED",
    "RELEASE_STARTED",
    "PLANNED",
    "CREATED",
    "RELEASED",
]

FORMAT_VERSION = 1
DEFAULT_STATE_DIR = "/var/lib/slurm-gpu"

PREPARE_STARTED = "PrepareStarted"
PREPARE_COMPLETED = "PrepareCompleted"
RELEASE_STARTED = "ReleaseStarted"
PHASES = (PREPARE_STARTED, PREPARE_COMPLETED, RELEASE_STARTED)

PLANNED = "planned"
CREATED = "created"
RELEASED = "released"
STATES = (PLANNED, CREATED, RELEASED)

_RECORD_NAME = re.compile(r"([0-9]{1,20}(?:_[0-9]{1,20})?)\.json\Z")

_DIR_MODE = 0o700
# state_dir and tasks/ are traversable but not listable, so a job's user can open its own task file.
_TRAVERSE_MODE = 0o711
_HISTORY_MAX_BYTES = 1 << 20


def _field_getter(obj: Any) -> Callable[..., Any]:
    """``get(key, default)`` over a mapping (a record read back) or an object's attributes."""
    if isinstance(obj, Mapping):
        return obj.get
    return lambda key, default=None: getattr(obj, key, default)


@dataclass(frozen=True)
class Planned:
    """What to create: the GPU, profile and placement chosen by the planner."""

    gpu_index: int
    gpu_uuid: str
    profile_id: int
    profile_name: str
    start: int
    size: int

    @classmethod
    def from_any(cls, obj: Any, gpu_uuid: Optional[str] = None) -> Planned:
        """From a ``Planned``, a mapping, or an object with the same attributes (``planner.PlannedInstance``
        has no ``gpu_uuid``: pass it)."""
        if isinstance(obj, Planned) and gpu_uuid is None:
            return obj
        get = _field_getter(obj)
        uuid = gpu_uuid if gpu_uuid is not None else get("gpu_uuid", "")
        return cls(
            gpu_index=get("gpu_index"),
            gpu_uuid=uuid,
            profile_id=get("profile_id"),
            profile_name=get("profile_name"),
            start=get("start"),
            size=get("size"),
        )


@dataclass(frozen=True)
class Actual:
    """What exists: the ids NVML gave the instance, its MIG UUID and its capability device minors."""

    gi_id: int
    ci_id: int
    mig_uuid: str
    gi_cap_minor: Optional[int] = None
    ci_cap_minor: Optional[int] = None

    @classmethod
    def from_any(cls, obj: Any) -> Actual:
        if isinstance(obj, Actual):
            return obj
        get = _field_getter(obj)
        return cls(
            gi_id=get("gi_id"),
            ci_id=get("ci_id"),
            mig_uuid=get("mig_uuid"),
            gi_cap_minor=get("gi_cap_minor"),
            ci_cap_minor=get("ci_cap_minor"),
        )


@dataclass(frozen=True)
class InstanceRecord:
    planned: Planned
    actual: Optional[Actual]
    state: str  # PLANNED, CREATED or RELEASED


@dataclass(frozen=True)
class JobRecord:
    """One job's record as read from (or written to) its file. ``stale``: written during another boot."""

    job_id: str
    uid: int
    gid: int
    request: str
    phase: str
    created: float  # seconds since the epoch
    updated: float
    boot_id: str
    instances: Tuple[InstanceRecord, ...]
    format_version: int = FORMAT_VERSION
    stale: bool = False

    def body(self) -> Dict[str, Any]:
        """The canonical content (everything but the checksum and the computed ``stale``)."""
        return {
            "format_version": self.format_version,
            "boot_id": self.boot_id,
            "job_id": self.job_id,
            "uid": self.uid,
            "gid": self.gid,
            "request": self.request,
            "phase": self.phase,
            "created": self.created,
            "updated": self.updated,
            "instances": [
                {
                    "planned": _planned_dict(i.planned),
                    "actual": None if i.actual is None else _actual_dict(i.actual),
                    "state": i.state,
                }
                for i in self.instances
            ],
        }

    def to_dict(self) -> Dict[str, Any]:
        body = self.body()
        body["checksum"] = checksum(body)
        return body


@dataclass(frozen=True)
class Problem:
    """A journal file that cannot be trusted as it is. ``kind``: corrupt, checksum, version, stale, name."""

    path: str
    kind: str
    reason: str
    job_id: Optional[str] = None


def _planned_dict(p: Planned) -> Dict[str, Any]:
    return {
        "gpu_index": p.gpu_index,
        "gpu_uuid": p.gpu_uuid,
        "profile_id": p.profile_id,
        "profile_name": p.profile_name,
        "start": p.start,
        "size": p.size,
    }


def _actual_dict(a: Actual) -> Dict[str, Any]:
    return {
        "gi_id": a.gi_id,
        "ci_id": a.ci_id,
        "mig_uuid": a.mig_uuid,
        "gi_cap_minor": a.gi_cap_minor,
        "ci_cap_minor": a.ci_cap_minor,
    }


def _canonical(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def checksum(body: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of the canonical JSON of ``body`` (sorted keys, no spaces, ASCII)."""
    import hashlib  # lazy: the TaskProlog imports this module and never needs it

    return "sha256:" + hashlib.sha256(_canonical(body)).hexdigest()


# --- validation of a parsed file --------------------------------------------------------------------


def _want(cond: bool, what: str) -> None:
    if not cond:
        raise ValueError(what)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _opt_int(v: Any) -> bool:
    return v is None or _is_int(v)


def _check_planned(p: Planned, where: str) -> None:
    for name in ("gpu_index", "profile_id", "start", "size"):
        _want(_is_int(getattr(p, name)) and getattr(p, name) >= 0, f"{where}.{name} must be an integer >= 0")
    _want(isinstance(p.gpu_uuid, str), f"{where}.gpu_uuid must be a string")
    _want(isinstance(p.profile_name, str) and p.profile_name != "", f"{where}.profile_name must be a name")


def _check_actual(a: Actual, where: str) -> None:
    _want(_is_int(a.gi_id) and _is_int(a.ci_id), f"{where}: gi_id and ci_id must be integers")
    uuid_ok = isinstance(a.mig_uuid, str) and is_mig_uuid(a.mig_uuid)
    _want(uuid_ok, f"{where}.mig_uuid is not a MIG UUID")
    _want(_opt_int(a.gi_cap_minor) and _opt_int(a.ci_cap_minor), f"{where}: cap minors must be int or null")


def _record_from_body(body: Mapping[str, Any]) -> JobRecord:
    """Build a record from a checksum-verified body, checking every field's type (ValueError if wrong)."""
    instances = []
    raw_instances = body.get("instances")
    _want(isinstance(raw_instances, list), "instances must be a list")
    for n, raw in enumerate(raw_instances):
        _want(isinstance(raw, dict), f"instances[{n}] must be an object")
        _want(set(raw) == {"planned", "actual", "state"}, f"instances[{n}] has keys {sorted(raw)}")
        _want(isinstance(raw["planned"], dict), f"instances[{n}].planned must be an object")
        try:
            planned = Planned(**raw["planned"])
            actual = None if raw["actual"] is None else Actual(**raw["actual"])
        except TypeError as exc:
            raise ValueError(f"instances[{n}]: {exc}") from None
        _check_planned(planned, f"instances[{n}].planned")
        if actual is not None:
            _check_actual(actual, f"instances[{n}].actual")
        state = raw["state"]
        _want(state in STATES, f"instances[{n}].state {state!r} is not one of {STATES}")
        _want((state == CREATED) <= (actual is not None), f"instances[{n}] is created but has no actual")
        instances.append(InstanceRecord(planned, actual, state))
    expected = {"format_version", "boot_id", "job_id", "uid", "gid", "request", "phase", "created", "updated",
                "instances"}
    _want(set(body) == expected, f"keys {sorted(set(body) ^ expected)} unexpected or missing")
    _want(isinstance(body["job_id"], str) and _is_job_id(body["job_id"]), "job_id is not a job id")
    _want(_is_int(body["uid"]) and _is_int(body["gid"]), "uid and gid must be integers")
    _want(isinstance(body["request"], str), "request must be a string")
    _want(body["phase"] in PHASES, f"phase {body['phase']!r} is not one of {PHASES}")
    _want(isinstance(body["boot_id"], str), "boot_id must be a string")
    for name in ("created", "updated"):
        number = isinstance(body[name], (int, float)) and not isinstance(body[name], bool)
        _want(number, f"{name} must be a number")
    return JobRecord(
        job_id=body["job_id"],
        uid=body["uid"],
        gid=body["gid"],
        request=body["request"],
        phase=body["phase"],
        created=float(body["created"]),
        updated=float(body["updated"]),
        boot_id=body["boot_id"],
        instances=tuple(instances),
        format_version=body["format_version"],
    )


def parse_record(data: bytes, job_id: Optional[str] = None) -> JobRecord:
    """Parse and verify one record file's bytes; raises ``_RecordProblem`` (a StateError) saying why not."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _RecordProblem("corrupt", f"not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise _RecordProblem("corrupt", "not a JSON object")
    version = doc.get("format_version")
    if version != FORMAT_VERSION:
        raise _RecordProblem("version", f"format_version {version!r} is not {FORMAT_VERSION}")
    stored = doc.pop("checksum", None)
    if not isinstance(stored, str):
        raise _RecordProblem("checksum", "no checksum")
    actual = checksum(doc)
    if stored != actual:
        raise _RecordProblem("checksum", f"checksum mismatch (stored {stored}, computed {actual})")
    try:
        record = _record_from_body(doc)
    except ValueError as exc:
        raise _RecordProblem("corrupt", f"malformed record: {exc}") from None
    if job_id is not None and record.job_id != job_id:
        raise _RecordProblem("corrupt", f"file of job {job_id} holds the record of job {record.job_id}")
    return record


class _RecordProblem(StateError):
    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


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
        record = parse_record(data, job_id)
        return replace(record, stale=record.boot_id != self.boot_id)

    def get(self, job_id: Union[str, int]) -> Optional[JobRecord]:
        """The job's record (``stale=True`` if from another boot), None if it has none; raises
        ``StateError`` naming the file if it is corrupt, foreign or fails its checksum."""
        job_id = validate_job_id(job_id)
        path = self._record_path(job_id)
        try:
            return self._load(path, job_id)
        except _RecordProblem as exc:
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
            except _RecordProblem as exc:
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
        return records, problems

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
        if not (_is_int(uid) and _is_int(gid) and uid >= 0 and gid >= 0):
            raise BadInputError(f"job {job_id}: bad uid/gid {uid!r}/{gid!r}", part=f"{uid}:{gid}")
        if not isinstance(request, str):
            raise BadInputError(f"job {job_id}: request must be a string", part=repr(request))
        instances = []
        for n, p in enumerate(planned):
            try:
                item = Planned.from_any(p)
                _check_planned(item, f"planned[{n}]")
            except (ValueError, AttributeError, TypeError) as exc:
                raise BadInputError(f"job {job_id}: bad planned instance {n}: {exc}", part=repr(p)) from None
            instances.append(InstanceRecord(item, None, PLANNED))
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
                phase=PREPARE_STARTED,
                created=now,
                updated=now,
                boot_id=self.boot_id,
                instances=tuple(instances),
            )
            return self._write(record)

    def _set_instance(self, record: JobRecord, index: int, item: InstanceRecord, phase: str) -> JobRecord:
        instances = list(record.instances)
        instances[index] = item
        return self._write(replace(record, instances=tuple(instances), phase=phase, updated=_now()))

    def _instance(self, record: JobRecord, index: int) -> InstanceRecord:
        if not _is_int(index) or not 0 <= index < len(record.instances):
            count = len(record.instances)
            message = f"job {record.job_id} has {count} instances, no index {index!r}"
            raise BadInputError(message, part=str(index))
        return record.instances[index]

    def record_created(self, job_id: Union[str, int], index: int, actual: Any) -> JobRecord:
        """Save that planned instance ``index`` now exists (after its GI and CI were created)."""
        job_id = validate_job_id(job_id)
        try:
            act = Actual.from_any(actual)
            _check_actual(act, "actual")
        except (ValueError, AttributeError, TypeError) as exc:
            raise BadInputError(f"job {job_id}: bad actual instance: {exc}", part=repr(actual)) from None
        with self.lock():
            record = self._require(job_id)
            item = self._instance(record, index)
            if record.phase != PREPARE_STARTED:
                raise StateError(f"job {job_id}: record_created in phase {record.phase}")
            if item.state == CREATED and item.actual == act:
                return record  # repeated after a retry: nothing changes
            if item.state != PLANNED:
                raise StateError(f"job {job_id}: instance {index} is {item.state}, not planned")
            created = InstanceRecord(item.planned, act, CREATED)
            return self._set_instance(record, index, created, PREPARE_STARTED)

    def finish_prepare(self, job_id: Union[str, int]) -> JobRecord:
        """PrepareCompleted: every instance is created."""
        job_id = validate_job_id(job_id)
        with self.lock():
            record = self._require(job_id)
            if record.phase == PREPARE_COMPLETED:
                return record
            if record.phase != PREPARE_STARTED:
                raise StateError(f"job {job_id}: finish_prepare in phase {record.phase}")
            missing = [n for n, i in enumerate(record.instances) if i.state != CREATED]
            if missing:
                raise StateError(f"job {job_id}: instances {missing} are not created")
            return self._write(replace(record, phase=PREPARE_COMPLETED, updated=_now()))

    def begin_release(self, job_id: Union[str, int]) -> Optional[JobRecord]:
        """ReleaseStarted, from any phase; None if the job has no record (nothing to release)."""
        job_id = validate_job_id(job_id)
        with self.lock():
            record = self.get(job_id)
            if record is None or record.phase == RELEASE_STARTED:
                return record
            return self._write(replace(record, phase=RELEASE_STARTED, updated=_now()))

    def record_released(self, job_id: Union[str, int], index: int) -> JobRecord:
        """Save that instance ``index`` is gone (after it was destroyed, or if it was never created)."""
        job_id = validate_job_id(job_id)
        with self.lock():
            record = self._require(job_id)
            item = self._instance(record, index)
            if record.phase != RELEASE_STARTED:
                raise StateError(f"job {job_id}: record_released in phase {record.phase}")
            if item.state == RELEASED:
                return record
            return self._set_instance(
                record, index, InstanceRecord(item.planned, item.actual, RELEASED), RELEASE_STARTED
            )

    def finish_release(self, job_id: Union[str, int]) -> bool:
        """Remove the record of a job whose instances are all released, after appending a line to
        ``history.log``; also removes its task file. False if there was no record."""
        job_id = validate_job_id(job_id)
        with self.lock():
            record = self.get(job_id)
            if record is None:
                self.remove_task_env(job_id)
                return False
            if record.phase != RELEASE_STARTED:
                raise StateError(f"job {job_id}: finish_release in phase {record.phase}")
            left = [n for n, i in enumerate(record.instances) if i.state != RELEASED]
            if left:
                raise StateError(f"job {job_id}: instances {left} are not released")
            # History first: a crash in between repeats a line rather than losing one.
            self._append_history(record)
            path = self._record_path(job_id)
            try:
                os.unlink(path)
            except OSError as exc:
                raise StateError(f"cannot remove {path}: {exc}") from exc
            from slurm_gpu.state.fsutil import fsync_dir

            fsync_dir(self.jobs_dir)
            self.remove_task_env(job_id)
            return True

    def _append_history(self, record: JobRecord) -> None:
        from slurm_gpu.state.fsutil import append_line

        line = {
            "time": _now(),
            "event": "released",
            "job_id": record.job_id,
            "uid": record.uid,
            "request": record.request,
            "boot_id": record.boot_id,
            "created": record.created,
            "instances": [
                {
                    "gpu_index": i.planned.gpu_index,
                    "profile_name": i.planned.profile_name,
                    "start": i.planned.start,
                    "mig_uuid": i.actual.mig_uuid if i.actual else None,
                }
                for i in record.instances
            ],
        }
        try:
            if os.path.getsize(self.history_path) > _HISTORY_MAX_BYTES:
                os.replace(self.history_path, self.history_path + ".1")
        except FileNotFoundError:
            pass
        append_line(self.history_path, json.dumps(line, sort_keys=True, separators=(",", ":")))

    def history(self) -> Tuple[Dict[str, Any], ...]:
        """The lines of ``history.log`` (the current file only), oldest first; unreadable lines skipped."""
        try:
            with open(self.history_path, encoding="utf-8") as f:
                lines = f.readlines()
        except FileNotFoundError:
            return ()
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return tuple(out)

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


def _is_job_id(value: str) -> bool:
    try:
        validate_job_id(value)
    except BadInputError:
        return False
    return True


def _job_sort_key(job_id: str) -> Tuple[int, int]:
    base, _, task = job_id.partition("_")
    return int(base), int(task) if task else -1


def _now() -> float:
    return round(time.time(), 3)
