"""The per-job task file the Prolog leaves for the TaskProlog: ``<state_dir>/tasks/<job_id>``.

Kept apart from ``journal`` because the TaskProlog runs once per task and must start in a few
milliseconds: this module imports nothing beyond ``os``, ``re`` and the error types. The file holds one
MIG UUID per line, is 0400 and owned by the job's user; ``tasks/`` is 0711 (users may open their own
file by name but not list the others). ``Journal.write_task_env`` writes it.
"""

from __future__ import annotations

import os
import re
from typing import Optional, Tuple, Union

from .errors import BadInputError, StateError

__all__ = ["read_task_env", "task_env_path", "validate_job_id", "is_mig_uuid", "TASKS_DIR"]

TASKS_DIR = "tasks"

# SLURM_JOB_ID is digits; "<array_job_id>_<task_id>" is accepted for array tasks. Never used in a path
# before it matched this (\Z, not $: "$" would let a trailing newline through).
_JOB_ID = re.compile(r"[0-9]{1,20}(?:_[0-9]{1,20})?\Z")
# "MIG-<uuid>" (R470+) or the older "MIG-GPU-<uuid>/<gi>/<ci>".
_MIG_UUID = re.compile(r"MIG-[A-Za-z0-9][A-Za-z0-9/_-]{0,127}\Z")


def validate_job_id(job_id: Union[str, int]) -> str:
    """Return ``job_id`` as a string if it is a Slurm job id (``123`` or ``123_4``), else raise."""
    text = str(job_id)
    if isinstance(job_id, bool) or not _JOB_ID.match(text):
        raise BadInputError(f"not a Slurm job id: {text!r}", part=text)
    return text


def is_mig_uuid(value: object) -> bool:
    return isinstance(value, str) and _MIG_UUID.match(value) is not None


def task_env_path(state_dir: Union[str, os.PathLike], job_id: Union[str, int]) -> str:
    return os.path.join(os.fspath(state_dir), TASKS_DIR, validate_job_id(job_id))


def read_task_env(state_dir: Union[str, os.PathLike], job_id: Union[str, int]) -> Optional[Tuple[str, ...]]:
    """The MIG UUIDs the prolog left for the job, or None if it left no file (a job without MIG)."""
    path = task_env_path(state_dir, job_id)
    try:
        with open(path, encoding="ascii") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise StateError(f"cannot read {path}: {exc}") from exc
    uuids = tuple(line.strip() for line in text.splitlines() if line.strip())
    for u in uuids:
        if not is_mig_uuid(u):
            raise StateError(f"{path}: not a MIG UUID: {u!r}")
    return uuids
