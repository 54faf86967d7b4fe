"""The per-job task file the Prolog leaves for the TaskProlog: ``<state_dir>/tasks/<uid>/<job_id>``.

Written, read and removed here, and what it may hold stated once (``is_mig_uuid``): the TaskProlog
(``hooks/task_prolog.py``, a bare ``python3 -I -S`` script) reads it through this module, so this module
imports only ``os``, ``stat`` and ``core.errors`` at load time (``re`` alone would cost it 7 ms). One
MIG UUID per line, 0400, owned by the job's user. ``tasks/`` is 0711 and ``tasks/<uid>/`` 0500 owned by
that user, so
other users can neither list nor probe which job ids hold MIG instances. The user owns their directory
and could plant files in it: what they plant reaches only their own tasks' environment, checked by the
same rule, and never a decision of the hooks (device access rests on the job's cgroup and file modes).
"""

from __future__ import annotations

import os
import stat

from slurm_gpu.core.errors import BadInputError, StateError

TYPE_CHECKING = False  # typing costs the TaskProlog milliseconds; mypy reads this block anyway
if TYPE_CHECKING:
    from typing import Optional, Sequence, Tuple, Union

__all__ = ["read_task_env", "read_uuids", "write_task_env", "remove_task_env", "task_env_path",
           "validate_job_id", "is_mig_uuid", "TASKS_DIR"]

TASKS_DIR = "tasks"
# "MIG-<uuid>" (R470+) or the older "MIG-GPU-<uuid>/<gi>/<ci>": no blank, quote or ';' may reach the
# TaskProlog protocol, whose lines Slurm reads as commands.
_UUID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/_-")
_MAX_UUID = 132

# SLURM_JOB_ID is digits; "<array_job_id>_<task_id>" is accepted for array tasks. Never used in a path
# before it matched this (\Z, not $: "$" would let a trailing newline through).
def _is_digits(text: str) -> bool:
    return 0 < len(text) <= 20 and text.isascii() and text.isdigit()


def is_job_id(text: object) -> bool:
    """``123`` or ``123_4``: digits only (``isdigit`` alone would take Unicode digits and a newline-free
    check is implicit: nothing but ASCII digits and one ``_`` passes)."""
    if not isinstance(text, str):
        return False
    job, sep, task = text.partition("_")
    return _is_digits(job) and (not sep or _is_digits(task))
_TASKS_MODE = 0o711
_USER_DIR_MODE = 0o500


def is_mig_uuid(value: object) -> bool:
    """The one rule for what a task file may hold (the writer and both readers use it).

    >>> [is_mig_uuid(u) for u in ("MIG-5c3a", "MIG-GPU-1f2e/1/0", "MIG-x; rm", "GPU-1")]
    [True, True, False, False]
    """
    return (isinstance(value, str) and value.startswith("MIG-") and 5 <= len(value) <= _MAX_UUID
            and value[4] not in "/_-" and set(value) <= _UUID_CHARS)


def validate_job_id(job_id: Union[str, int]) -> str:
    """Return ``job_id`` as a string if it is a Slurm job id (``123`` or ``123_4``), else raise."""
    text = str(job_id)
    if isinstance(job_id, bool) or not is_job_id(text):
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
    return read_uuids(task_env_path(state_dir, uid, job_id))


def read_uuids(path: str) -> Optional[Tuple[str, ...]]:
    """The UUIDs of the task file at ``path``; None if there is none; StateError if it is unusable."""
    try:
        with open(path, encoding="ascii") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise StateError(f"cannot read the job's MIG devices: {exc}") from exc
    uuids = tuple(text.split())
    if not uuids or not all(is_mig_uuid(u) for u in uuids):
        raise StateError("the job's MIG device file is malformed")
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
    from slurm_gpu.state.fsutil import set_owner_mode  # lazy: the TaskProlog never writes

    set_owner_mode(path, uid, gid, _USER_DIR_MODE)
    return path


def write_task_env(state_dir: str, job_id: Union[str, int], uid: int, gid: int,
                   mig_uuids: Sequence[str]) -> str:
    """Leave the job's MIG UUIDs (one per line) for its tasks, 0400, owned by the job's user."""
    from slurm_gpu.state.fsutil import atomic_write

    uuids = list(mig_uuids)
    for u in uuids:
        if not is_mig_uuid(u):
            raise BadInputError(f"job {job_id}: not a MIG UUID: {u!r}", part=repr(u))
    _uid(uid)
    _uid(gid)
    path = task_env_path(state_dir, uid, job_id)
    _user_dir(state_dir, uid, gid)
    # Not fsynced: the file lives as long as its job, and a power loss ends the job (reconcile removes
    # what is left); atomic for every reader all the same.
    atomic_write(path, "".join(u + "\n" for u in uuids), mode=0o400, owner=(uid, gid), durable=False)
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
