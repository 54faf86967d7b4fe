"""The per-job task file the Prolog leaves for the TaskProlog: ``<state_dir>/tasks/<uid>/<job_id>``.

Written, read and removed here; what it may hold is stated once, in ``hooks/task_prolog.py`` (the
TaskProlog runs as a bare script and cannot import the package), and used here too. One MIG UUID per
line, 0400, owned by the job's user. ``tasks/`` is 0711 and ``tasks/<uid>/`` 0500 owned by that user, so
other users can neither list nor probe which job ids hold MIG instances. The user owns their directory
and could plant files in it: what they plant reaches only their own tasks' environment, checked by the
same rule, and never a decision of the hooks (device access rests on the job's cgroup and file modes).
"""

from __future__ import annotations

import os
import re
import stat
from typing import Optional, Sequence, Tuple, Union

from .errors import BadInputError, StateError
from .hooks.task_prolog import TASKS_DIR, is_mig_uuid

__all__ = ["read_task_env", "write_task_env", "remove_task_env", "task_env_path", "validate_job_id",
           "is_mig_uuid", "TASKS_DIR"]

# SLURM_JOB_ID is digits; "<array_job_id>_<task_id>" is accepted for array tasks. Never used in a path
# before it matched this (\Z, not $: "$" would let a trailing newline through).
_JOB_ID = re.compile(r"[0-9]{1,20}(?:_[0-9]{1,20})?\Z")
_TASKS_MODE = 0o711
_USER_DIR_MODE = 0o500


def validate_job_id(job_id: Union[str, int]) -> str:
    """Return ``job_id`` as a string if it is a Slurm job id (``123`` or ``123_4``), else raise."""
    text = str(job_id)
    if isinstance(job_id, bool) or not _JOB_ID.match(text):
        raise BadInputError(f"not a Slurm job id: {text!r}", part=text)
    return text


def _uid(uid: int) -> int:
    if isinstance(uid, bool) or not isinstance(uid, int) or uid < 0:
        raise BadInputError(f"bad uid/gid {uid!r}", part=repr(uid))
    return uid


def task_env_path(state_dir: Union[str, os.PathLike], uid: int, job_id: Union[str, int]) -> str:
    return os.path.join(os.fspath(state_dir), TASKS_DIR, str(_uid(uid)), validate_job_id(job_id))


def read_task_env(state_dir: Union[str, os.PathLike], uid: int,
                  job_id: Union[str, int]) -> Optional[Tuple[str, ...]]:
    """The MIG UUIDs the prolog left for the job, or None if it left no file (a job without MIG)."""
    path = task_env_path(state_dir, uid, job_id)
    try:
        with open(path, encoding="ascii") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise StateError(f"cannot read {path}: {exc}") from exc
    uuids = tuple(text.split())
    for u in uuids:
        if not is_mig_uuid(u):
            raise StateError(f"{path}: not a MIG UUID: {u!r}")
    return uuids


def _user_dir(state_dir: str, uid: int, gid: int) -> str:
    """``tasks/<uid>``: made (or taken back) as a directory of that user, 0500; never a link."""
    tasks = os.path.join(state_dir, TASKS_DIR)
    try:
        os.mkdir(tasks, _TASKS_MODE)
    except FileExistsError:
        pass
    except OSError as exc:
        raise StateError(f"cannot create {tasks}: {exc}") from exc
    os.chmod(tasks, _TASKS_MODE)
    path = os.path.join(tasks, str(uid))
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise StateError(f"cannot create {path}: {exc}") from exc
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise StateError(f"{path} is not a directory: refusing to write the task file there")
    try:
        os.chown(path, uid, gid, follow_symlinks=False)
        os.chmod(path, _USER_DIR_MODE)
    except OSError as exc:
        raise StateError(f"cannot set owner/mode of {path}: {exc}") from exc
    return path


def write_task_env(state_dir: str, job_id: Union[str, int], uid: int, gid: int,
                   mig_uuids: Sequence[str]) -> str:
    """Leave the job's MIG UUIDs (one per line) for its tasks, 0400, owned by the job's user."""
    from .fsutil import atomic_write

    uuids = list(mig_uuids)
    for u in uuids:
        if not is_mig_uuid(u):
            raise BadInputError(f"job {job_id}: not a MIG UUID: {u!r}", part=repr(u))
    _uid(uid)
    _uid(gid)
    path = task_env_path(state_dir, uid, job_id)
    _user_dir(state_dir, uid, gid)
    atomic_write(path, "".join(u + "\n" for u in uuids), mode=0o400, owner=(uid, gid))
    return path


def remove_task_env(state_dir: str, job_id: Union[str, int]) -> bool:
    """Remove the job's task file, whichever user's directory holds it; True if one was there."""
    name = validate_job_id(job_id)
    tasks = os.path.join(state_dir, TASKS_DIR)
    try:
        users = [u for u in os.listdir(tasks) if u.isdigit()]
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise StateError(f"cannot list {tasks}: {exc}") from exc
    removed = False
    for user in users:
        path = os.path.join(tasks, user, name)
        try:
            os.unlink(path)
            removed = True
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            continue  # a directory there was planted by that user, not written by us: theirs to keep
        except OSError as exc:
            raise StateError(f"cannot remove {path}: {exc}") from exc
    return removed
