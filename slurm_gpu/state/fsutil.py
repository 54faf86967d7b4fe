"""Small filesystem primitives for state that must survive a crash: atomic writes, a node-wide lock.

Everything here runs as root on GPU nodes, so files are created with tight permissions from the start
(the mode is set on the open descriptor before the file gets its final name) and a reader never sees a
half-written file: data goes to a temporary file in the same directory, is fsynced, renamed over the
target, and the directory is fsynced so the rename itself survives a power loss.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from typing import Any, Optional, Tuple, Union

from slurm_gpu.core.errors import LockTimeout, StateError

__all__ = ["atomic_write", "fsync_dir", "append_line", "FileLock", "set_owner_mode", "canonical_json",
           "checksum", "boot_id", "BOOT_ID_PATH", "TEMP_SUFFIX"]

BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
# Temporary files are named ".<target>.<random>.tmp": hidden, and never mistaken for a real record.
TEMP_SUFFIX = ".tmp"


def fsync_dir(directory: str) -> None:
    """Make a rename or unlink inside ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(
    path: Union[str, os.PathLike],
    data: Union[bytes, str],
    mode: int = 0o600,
    owner: Optional[Tuple[int, int]] = None,
    durable: bool = True,
) -> None:
    """Replace ``path`` with ``data`` so that readers see either the old or the new content, never a mix.

    ``mode`` and ``owner`` (uid, gid) are applied to the temporary file before the rename, so the file
    is never visible with looser permissions or the wrong owner. ``durable=False`` skips the fsyncs: still
    atomic for every reader and across a crash of the writer, but a power loss may keep the old content
    (for state that a power loss resets anyway). Raises ``StateError`` naming the path.
    """
    path = os.fspath(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    directory, name = os.path.split(path)
    directory = directory or "."
    import tempfile  # lazy: only writers need it

    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=TEMP_SUFFIX, dir=directory)
    except OSError as exc:
        raise StateError(f"cannot create a temporary file next to {path}: {exc}") from exc
    try:
        try:
            os.fchmod(fd, mode)
            if owner is not None:
                os.fchown(fd, owner[0], owner[1])
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise StateError(f"cannot write {path}: {exc}") from exc
        raise
    if durable:
        fsync_dir(directory)


def append_line(path: Union[str, os.PathLike], line: str, mode: int = 0o600) -> None:
    """Append one line (a newline is added) with O_APPEND and fsync it; creates the file with ``mode``."""
    path = os.fspath(path)
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, mode)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StateError(f"cannot append to {path}: {exc}") from exc


class FileLock:
    """An exclusive ``flock`` on ``path`` taken with a polling timeout, as a context manager.

    The holder writes its pid into the lock file so that a waiter that times out can name it. The
    kernel drops the lock when the holder dies (even by SIGKILL), so a stale pid in the file is
    harmless: the next holder overwrites it. flock locks belong to an open file description, so two
    ``FileLock`` objects on the same path exclude each other even within one process.

    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> with FileLock(os.path.join(d, "lock"), timeout_s=1) as lock:
    ...     lock.held
    True
    """

    # Polling starts fine-grained (an uncontended hand-over is quick) and backs off to this ceiling: a
    # hook holds the node lock for tens of milliseconds, so a coarser one would add as much to every
    # hand-over of a burst of Prologs (a job array's), where a poll is a microsecond's syscall.
    _MAX_SLEEP_S = 0.01

    def __init__(self, path: Union[str, os.PathLike], timeout_s: float = 30.0, mode: int = 0o600):
        self.path = os.fspath(path)
        self.timeout_s = float(timeout_s)
        self.mode = mode
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            raise StateError(f"lock {self.path} is already held by this object")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, self.mode)
        except OSError as exc:
            raise StateError(f"cannot open lock file {self.path}: {exc}") from exc
        deadline = time.monotonic() + self.timeout_s
        sleep_s = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise StateError(f"cannot lock {self.path}: {exc}") from exc
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                holder = _read_pid(fd)
                os.close(fd)
                who = f" (held by pid {holder})" if holder is not None else ""
                raise LockTimeout(
                    f"timed out after {self.timeout_s:g} s waiting for lock {self.path}{who}",
                    path=self.path,
                    holder_pid=holder,
                )
            time.sleep(min(sleep_s, remaining))
            sleep_s = min(sleep_s * 2, self._MAX_SLEEP_S)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # the pid is only a diagnostic; the lock itself is held
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)  # no stale pid for the next waiter to blame
        except OSError:
            pass
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _read_pid(fd: int) -> Optional[int]:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def boot_id(path: str = BOOT_ID_PATH) -> str:
    """The kernel's random id of the current boot (changes at every reboot)."""
    try:
        with open(path, encoding="ascii") as f:
            value = f.read().strip()
    except OSError as exc:
        raise StateError(f"cannot read the boot id from {path}: {exc}") from exc
    if not value:
        raise StateError(f"empty boot id in {path}")
    return value


def set_owner_mode(path: str, uid: int, gid: int, mode: int) -> None:
    """chown (not following a link) then chmod; StateError naming the path. The caller has checked, with
    ``lstat``, that ``path`` is no symbolic link (chmod follows one)."""
    try:
        os.chown(path, uid, gid, follow_symlinks=False)
        os.chmod(path, mode)
    except OSError as exc:
        raise StateError(f"cannot set owner/mode of {path}: {exc}") from exc


def canonical_json(body: Any) -> str:
    """The canonical JSON of ``body`` (sorted keys, no spaces, ASCII): what ``checksum`` hashes."""
    import json

    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def checksum(body: Any, canonical: Optional[str] = None) -> str:
    """``sha256:<hex>`` of the canonical JSON of ``body`` (``canonical``, when the caller has it already):
    what the journal's records and the simulated driver's state file carry to prove they were written
    whole."""
    import hashlib

    text = canonical_json(body) if canonical is None else canonical
    return "sha256:" + hashlib.sha256(text.encode("ascii")).hexdigest()
