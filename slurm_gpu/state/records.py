"""A job's journal record: its fields, its canonical checksummed form, and the checks a file must pass.

Pure data and parsing (no file access): ``Journal`` (``state.journal``) reads and writes the files.
A record's phase and instance states are ``core.vocab.Phase`` and ``InstanceState``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from slurm_gpu.core.errors import StateError
from slurm_gpu.core.vocab import InstanceState, Phase
from slurm_gpu.state.fsutil import checksum
from slurm_gpu.state.task_env import is_job_id, is_mig_uuid

__all__ = ["FORMAT_VERSION", "Planned", "Actual", "InstanceRecord", "JobRecord", "Problem", "RecordProblem",
           "checksum", "parse_record", "check_planned", "check_actual", "is_int"]

FORMAT_VERSION = 1


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
    state: InstanceState


@dataclass(frozen=True)
class JobRecord:
    """One job's record as read from (or written to) its file. ``stale``: written during another boot."""

    job_id: str
    uid: int
    gid: int
    request: str
    phase: Phase
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
            "phase": str(self.phase),
            "created": self.created,
            "updated": self.updated,
            "instances": [
                {
                    "planned": _planned_dict(i.planned),
                    "actual": None if i.actual is None else _actual_dict(i.actual),
                    "state": str(i.state),
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


# --- validation of a parsed file --------------------------------------------------------------------


_INSTANCE_KEYS = frozenset({"planned", "actual", "state"})
_RECORD_KEYS = frozenset({"format_version", "boot_id", "job_id", "uid", "gid", "request", "phase", "created",
                          "updated", "instances"})


def _want(cond: bool, what: str, *args: Any) -> None:
    """ValueError(``what.format(*args)``) unless ``cond``: the message is formatted only when it is needed
    (every record of the journal is checked on each hook's node read)."""
    if not cond:
        raise ValueError(what.format(*args))


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _opt_int(v: Any) -> bool:
    return v is None or is_int(v)


def check_planned(p: Planned, where: str) -> None:
    for name in ("gpu_index", "profile_id", "start", "size"):
        value = getattr(p, name)
        _want(is_int(value) and value >= 0, "{}.{} must be an integer >= 0", where, name)
    _want(isinstance(p.gpu_uuid, str), "{}.gpu_uuid must be a string", where)
    _want(isinstance(p.profile_name, str) and p.profile_name != "", "{}.profile_name must be a name", where)


def check_actual(a: Actual, where: str) -> None:
    _want(is_int(a.gi_id) and is_int(a.ci_id), "{}: gi_id and ci_id must be integers", where)
    uuid_ok = isinstance(a.mig_uuid, str) and is_mig_uuid(a.mig_uuid)
    _want(uuid_ok, "{}.mig_uuid is not a MIG UUID", where)
    _want(_opt_int(a.gi_cap_minor) and _opt_int(a.ci_cap_minor), "{}: cap minors must be int or null", where)


def _record_from_body(body: Mapping[str, Any], boot_id: Optional[str]) -> JobRecord:
    """Build a record from a checksum-verified body, checking every field's type (ValueError if wrong);
    stale if ``boot_id`` (this boot's) is given and differs."""
    instances = []
    raw_instances = body.get("instances")
    if not isinstance(raw_instances, list):
        raise ValueError("instances must be a list")
    for n, raw in enumerate(raw_instances):
        _want(isinstance(raw, dict), "instances[{}] must be an object", n)
        if raw.keys() != _INSTANCE_KEYS:
            raise ValueError(f"instances[{n}] has keys {sorted(raw)}")
        _want(isinstance(raw["planned"], dict), "instances[{}].planned must be an object", n)
        try:
            planned = Planned(**raw["planned"])
            actual = None if raw["actual"] is None else Actual(**raw["actual"])
        except TypeError as exc:
            raise ValueError(f"instances[{n}]: {exc}") from None
        check_planned(planned, f"instances[{n}].planned")
        if actual is not None:
            check_actual(actual, f"instances[{n}].actual")
        try:
            state = InstanceState(raw["state"])
        except ValueError:
            raise ValueError(f"instances[{n}].state {raw['state']!r} is not one of "
                             f"{[str(v) for v in InstanceState]}") from None
        _want((state == InstanceState.CREATED) <= (actual is not None),
              "instances[{}] is created but has no actual", n)
        instances.append(InstanceRecord(planned, actual, state))
    if body.keys() != _RECORD_KEYS:
        raise ValueError(f"keys {sorted(set(body) ^ _RECORD_KEYS)} unexpected or missing")
    _want(is_job_id(body["job_id"]), "job_id is not a job id")
    _want(is_int(body["uid"]) and is_int(body["gid"]), "uid and gid must be integers")
    _want(isinstance(body["request"], str), "request must be a string")
    try:
        phase = Phase(body["phase"])
    except ValueError:
        raise ValueError(f"phase {body['phase']!r} is not one of {[str(v) for v in Phase]}") from None
    _want(isinstance(body["boot_id"], str), "boot_id must be a string")
    for name in ("created", "updated"):
        number = isinstance(body[name], (int, float)) and not isinstance(body[name], bool)
        _want(number, "{} must be a number", name)
    return JobRecord(
        job_id=body["job_id"],
        uid=body["uid"],
        gid=body["gid"],
        request=body["request"],
        phase=phase,
        created=float(body["created"]),
        updated=float(body["updated"]),
        boot_id=body["boot_id"],
        instances=tuple(instances),
        format_version=body["format_version"],
        stale=boot_id is not None and body["boot_id"] != boot_id,
    )


def parse_record(data: bytes, job_id: Optional[str] = None, boot_id: Optional[str] = None) -> JobRecord:
    """Parse and verify one record file's bytes (of job ``job_id``; written during boot ``boot_id``, else
    marked stale); raises ``RecordProblem`` (a StateError) saying why not."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise RecordProblem("corrupt", f"not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise RecordProblem("corrupt", "not a JSON object")
    version = doc.get("format_version")
    if version != FORMAT_VERSION:
        raise RecordProblem("version", f"format_version {version!r} is not {FORMAT_VERSION}")
    stored = doc.pop("checksum", None)
    if not isinstance(stored, str):
        raise RecordProblem("checksum", "no checksum")
    actual = checksum(doc)
    if stored != actual:
        raise RecordProblem("checksum", f"checksum mismatch (stored {stored}, computed {actual})")
    try:
        record = _record_from_body(doc, boot_id)
    except ValueError as exc:
        raise RecordProblem("corrupt", f"malformed record: {exc}") from None
    if job_id is not None and record.job_id != job_id:
        raise RecordProblem("corrupt", f"file of job {job_id} holds the record of job {record.job_id}")
    return record


class RecordProblem(StateError):
    """Why a record file cannot be trusted; ``kind`` is a ``Problem`` kind."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


