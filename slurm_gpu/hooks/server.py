"""``slurm-gpu-hook serve``: a resident root process from which every Prolog and Epilog starts imported.

A hook's own work takes a few tens of milliseconds; starting Python, importing the package and building
its types takes several times that, for every job. The server pays that once: it imports everything a
hook needs, then hands each request to a child that *is* the hook process it stands in for (forked
before the request comes: one spare waits on a socket pair for the next connection). The child takes the
request's environment, working directory and umask and the client's stdin, stdout and stderr (passed as
file descriptors), runs the same code as ``slurm-gpu-hook prolog|epilog`` would in its own process (its
own locks, its own driver session: NVML is opened after the fork, never inherited), and sends the exit
status back as soon as the hook's outcome is logged (an Epilog's node re-plan follows the answer:
``hooks.runtime``). The client (``slurm_gpu.hooks.client``) runs the hook in its own process whenever no
server answers, so the server speeds hooks up and is never needed for them to work.

Only a peer of the server's own uid (root on a node) is served (``SO_PEERCRED``); the socket is created
0600 in a 0700 directory. A client of another install (package path or version) is told ``stale`` and
runs in-process; when the package's files change under the server (an upgrade in place), the request at
hand is told the same and the server executes itself anew. The parent never reads GPUs, the journal or
Slurm; a hook that runs when the server stops finishes in its own process.
"""

from __future__ import annotations

import gc
import os
import select
import signal
import socket
import stat
import struct
import sys
from typing import Dict, List, Optional, Tuple

from slurm_gpu.core.catalog import Catalog
from slurm_gpu.core.errors import BadInputError, StateError
from slurm_gpu.hooks.client import DEFAULT_SOCKET, PROTOCOL, STALE, package_id
from slurm_gpu.hooks.dispatch import HOOKS, run_hook

__all__ = ["serve", "preload", "parse_request", "Request"]

MAX_REQUEST = 1 << 20  # argv and a hook's environment are a few KiB
# A new spare waits this long for a request before it takes its copy-on-write faults (``_own_pages``): not
# while the hook just handed off still runs (on a node's few idle cores they would slow it down).
_SETTLE_S = 0.03
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid

# What a hook imports (measured: the modules a prolog and an epilog load), loaded once in the server so
# that each child starts with them; one missing here (pynvml on a simulated node) is skipped.
_PRELOAD = (
    "slurm_gpu.hooks.runtime",
    "slurm_gpu.hooks.prolog",
    "slurm_gpu.hooks.epilog",
    "slurm_gpu.devices.open",
    "slurm_gpu.devices.nvml",
    "slurm_gpu.devices.simnvml",
    "slurm_gpu.devices.calllog",
    "slurm_gpu.node.config",
    "slurm_gpu.node.containers",
    "slurm_gpu.node.publish",
    "slurm_gpu.slurm.client",
    "slurm_gpu.state.journal",
    "yaml",
    "pynvml",
    "ctypes.util",
    "hashlib",
    "datetime",
    "base64",
    "encodings.ascii",  # the codec of the files a hook opens with encoding="ascii"
)


class Request:
    """One hook run asked of the server (the fields of ``slurm_gpu.hooks.client.encode_request``)."""

    def __init__(self, package: str, hook: str, config: Optional[str], cwd: bytes, umask: int,
                 fds: List[int], env: Dict[bytes, bytes]):
        self.package, self.hook, self.config = package, hook, config
        self.cwd, self.umask, self.fds, self.env = cwd, umask, fds, env


def parse_request(data: bytes, passed: int) -> Request:
    """The request in ``data`` (header and body), sent with ``passed`` file descriptors; BadInputError
    naming what is wrong."""
    head, _, rest = data.partition(b"\n")
    if head != PROTOCOL:
        raise BadInputError(f"not a {PROTOCOL.decode()} request")
    size, _, body = rest.partition(b"\n")
    if not size.isdigit() or int(size) != len(body):
        raise BadInputError("request length does not match its header")
    fields = body.split(b"\0")
    if len(fields) < 6:
        raise BadInputError(f"request has {len(fields)} fields, fewer than 6")
    package, hook, config, cwd, umask, targets = fields[:6]
    if hook.decode(errors="replace") not in HOOKS:
        raise BadInputError(f"request names no hook: {hook[:40]!r}")
    try:
        mask = int(umask, 8)
        fds = [int(fd) for fd in targets.split(b",")] if targets else []
    except ValueError:
        raise BadInputError("request has a malformed umask or descriptor list") from None
    if len(fds) != passed or len(set(fds)) != len(fds) or any(fd not in (0, 1, 2) for fd in fds):
        raise BadInputError("request names other file descriptors than it passed")
    env = {}
    for entry in fields[6:]:
        key, eq, value = entry.partition(b"=")
        if not eq or not key:
            raise BadInputError("malformed environment entry in request")
        env[key] = value
    return Request(os.fsdecode(package), hook.decode(), os.fsdecode(config) or None, cwd, mask, fds, env)


def preload() -> None:
    """Import what the hooks import (``_PRELOAD``) and do what each would otherwise do first (``_warm``):
    done once in the server, inherited by every child it forks."""
    import importlib

    from slurm_gpu.core.catalog import load_catalog

    for name in _PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    _warm(load_catalog())


def _warm(catalog: Catalog) -> None:
    """What every child would otherwise compute for itself, done once before any fork: the target's
    stranding rule of each catalogued model (an exact search, tens of milliseconds each), one read of the
    configuration as the hooks find it, forgotten (what its first read builds, the YAML loader and the
    checks' tables, is then shared; each child reads its own anew), and the parse of the mig-minors file
    it names (``migminors.remember``). A configuration that does not load is the hooks' to report."""
    from slurm_gpu.core.planner import clear_caches, stranding_placements
    from slurm_gpu.devices.migminors import remember
    from slurm_gpu.devices.open import mig_minors_file
    from slurm_gpu.node.config import load_config

    for key in catalog.keys():
        stranding_placements(catalog.model(key))
    # The search leaves some ten thousand GPU layouts memoised: every fork and every spare's page walk
    # would carry them, and a hook meets few of them. The rule itself stays with each model.
    clear_caches()

    try:
        config = load_config()
        # the node's mig-minors file, parsed: a hook that reads the same bytes uses this parse
        remember(mig_minors_file(config.driver.kind, config.driver.sim_state))
    except Exception:  # noqa: BLE001, S110 - nothing of it is kept; each hook reads and reports itself
        pass


def _listen(path: str) -> socket.socket:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    if os.path.lexists(path):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise BadInputError(f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # left by a server that died
        else:
            raise StateError(f"another hook server is serving {path}")
        finally:
            probe.close()
    # Bound and listening under a temporary name, then renamed: whoever sees the path can connect.
    fresh = f"{path}.{os.getpid()}"
    if os.path.lexists(fresh):
        os.unlink(fresh)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # the socket is 0600 from the moment it exists
    try:
        listener.bind(fresh)
    finally:
        os.umask(old)
    listener.listen(128)
    os.rename(fresh, path)
    return listener


def _peer_uid(conn: socket.socket) -> int:
    _pid, uid, _gid = _UCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return uid


def _sources() -> Dict[str, int]:
    """The package's loaded modules' files and their modification times."""
    import slurm_gpu

    root = os.path.dirname(os.path.abspath(slurm_gpu.__file__)) + os.sep
    out = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None) or ""
        if path.startswith(root):
            out[path] = _mtime(path)
    return out


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return -1


def _changed(sources: Dict[str, int]) -> bool:
    return any(_mtime(path) != mtime or mtime == -1 for path, mtime in sources.items())


def serve(path: str = DEFAULT_SOCKET) -> int:
    """Serve hook requests on ``path`` until SIGTERM or SIGINT; returns 0. When the package's files change
    (an upgrade in place), the request at hand is told ``stale`` and the server starts itself anew."""
    from slurm_gpu.core.catalog import CATALOG_PATH

    preload()
    package = package_id()
    sources = _sources()
    sources[CATALOG_PATH] = _mtime(CATALOG_PATH)  # a catalog changed in place renews the server too
    # What is loaded now is shared with every child: frozen, the collector never walks it, so a child does
    # not copy those pages on write (a child runs for milliseconds and exits, collecting nothing).
    gc.collect()
    gc.freeze()
    listener = _listen(path)
    identity = os.stat(path).st_ino
    # Children are reaped by the kernel; each child restores the default before it runs a hook.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop)
    sys.stderr.write(f"slurm-gpu-hook: serving {path} ({package})\n")
    sys.stderr.flush()
    renew = False
    spare: Optional[socket.socket] = None
    try:
        while not renew:
            if spare is None:
                spare = _fork_spare(listener, package)
            conn, _ = listener.accept()
            try:
                renew, spare = _dispatch(conn, listener, spare, sources, package)
            except OSError as exc:  # a peer gone, no memory to fork: that hook runs in its own process
                sys.stderr.write(f"slurm-gpu-hook: serve: {exc}\n")
                sys.stderr.flush()
                if spare is not None and spare.fileno() == -1:
                    spare = None  # closed on the way: fork the next one
            finally:
                conn.close()
    except KeyboardInterrupt:
        pass
    finally:
        if spare is not None:
            spare.close()  # the spare reads the end of its socket and exits
        listener.close()
        try:
            if os.stat(path).st_ino == identity:
                os.unlink(path)
        except OSError:
            pass
    if renew:
        sys.stderr.write("slurm-gpu-hook: the package changed; starting anew\n")
        sys.stderr.flush()
        argv = [sys.executable, "-m", "slurm_gpu.hooks.entry", "serve", "--socket", path]
        os.execv(sys.executable, argv)  # noqa: S606 - fixed argv, no shell
    return 0


def _dispatch(conn: socket.socket, listener: socket.socket, spare: Optional[socket.socket],
              sources: Dict[str, int], package: str) -> Tuple[bool, Optional[socket.socket]]:
    """Hand one connection to the spare child (``_fork_spare``'s control socket ``spare``), or to a child
    forked for it when there is no spare or it died. Returns (whether the package changed and the server
    must renew, the spare if it is still unused)."""
    if _peer_uid(conn) not in (0, os.geteuid()):
        return False, spare
    if _changed(sources):
        conn.sendall(STALE + b"\n")  # that hook runs in its own process, on the new code
        return True, spare
    if spare is not None:
        try:
            socket.send_fds(spare, [b"c"], [conn.fileno()])
            return False, None
        except OSError:
            pass  # the spare died: fork a child for this connection
        finally:
            spare.close()
    sys.stdout.flush()
    sys.stderr.flush()
    if os.fork() == 0:  # pragma: no cover - the child's coverage is the hook tests'
        code = 1
        try:
            listener.close()
            _become_child()
            code = _child(conn, package)
        finally:
            os._exit(code)  # never back into the server's loop, whatever the hook raised
    return False, None


def _fork_spare(listener: socket.socket, package: str) -> Optional[socket.socket]:
    """Fork the child that serves the next connection, before it comes: a request then waits for no
    fork. Returns the server's end of the control socket the connection is passed on (None if the fork
    failed: the next request forks its own child). The spare exits when that socket closes unused."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        pid = os.fork()
    except OSError as exc:
        ours.close()
        theirs.close()
        sys.stderr.write(f"slurm-gpu-hook: serve: no spare child: {exc}\n")
        return None
    if pid == 0:  # pragma: no cover - the child's coverage is the hook tests'
        code = 1
        try:
            ours.close()
            listener.close()
            _become_child()
            if not select.select([theirs], [], [], _SETTLE_S)[0]:  # no request came meanwhile
                _own_pages()
                if not select.select([theirs], [], [], 0)[0]:
                    _read_journal()
            _msg, fds, _flags, _addr = socket.recv_fds(theirs, 1, 1)
            theirs.close()
            code = _child(socket.socket(fileno=fds[0]), package) if fds else 0
        finally:
            os._exit(code)
    theirs.close()
    return ours


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _receive(conn: socket.socket) -> Tuple[bytes, List[int]]:
    """The whole request and the file descriptors that came with it."""
    conn.settimeout(10)
    data, fds = b"", []
    while True:
        chunk, ancdata, _flags, _addr = conn.recvmsg(65536, socket.CMSG_SPACE(3 * 4))
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                usable = len(payload) - len(payload) % 4
                fds += list(struct.unpack(f"{usable // 4}i", payload[:usable]))
        data += chunk
        head, sep, rest = data.partition(b"\n")
        size, sep2, body = rest.partition(b"\n")
        if sep and sep2 and size.isdigit() and len(body) >= int(size):
            return data, fds
        if not chunk or len(data) > MAX_REQUEST:
            for fd in fds:
                os.close(fd)
            raise BadInputError("incomplete or oversized request")


def _adopt(fds: List[int], targets: List[int]) -> None:
    """Make the received ``fds`` this process's ``targets`` (0-2); first moved above 2, so that no
    dup2 overwrites a received descriptor not yet adopted."""
    import fcntl

    high = [fd if fd > 2 else fcntl.fcntl(fd, fcntl.F_DUPFD, 3) for fd in fds]
    for target, fd in zip(targets, high):
        os.dup2(fd, target)
        os.close(fd)


def _become_child() -> None:  # pragma: no cover - runs in a forked child
    """A forked child's settings before it serves a request: no collector (it runs for milliseconds),
    the default signal dispositions (the server ignores SIGCHLD and stops on SIGTERM)."""
    gc.disable()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _own_pages() -> None:  # pragma: no cover - runs in a forked child
    """Take the copy-on-write faults of the server's objects now, while the spare waits (about 5 ms):
    unfreezing links every object anew and listing them touches each, so the hook a request brings finds
    the memory it writes (reference counts, GC links) already this process's (2-3 ms of a Prolog's 20,
    bench/bench_hooks.py). A request that comes meanwhile waits for it."""
    gc.unfreeze()
    gc.get_objects()


def _read_journal() -> None:  # pragma: no cover - runs in a forked child
    """Read the journal of the configuration the server found, while the spare waits (1-3 ms): the hook
    a request brings then parses only the records written since (``state.journal``'s reuse of parsed
    records, which compares their bytes). A configuration or journal that cannot be read is left to that
    hook to report."""
    from slurm_gpu.node.config import load_config
    from slurm_gpu.state.journal import Journal

    try:
        Journal(load_config().state_dir).scan()
    except Exception:  # noqa: BLE001, S110 - nothing is decided here
        pass


def _child(conn: socket.socket, package: str) -> int:  # pragma: no cover - runs in the forked child
    """Become the hook process the request describes, run the hook, send its exit status and close the
    connection (the client returns then, not when this process has exited)."""
    code = 1
    try:
        data, fds = _receive(conn)
        req = parse_request(data, len(fds))
        if req.package != package:
            conn.sendall(STALE + b"\n")
            return 0
        _adopt(fds, req.fds)
        os.environb.clear()
        os.environb.update(req.env)
        os.umask(req.umask)
        try:
            os.chdir(req.cwd)
        except OSError:
            os.chdir("/")
        from slurm_gpu.hooks.runtime import served_by

        answered: List[int] = []

        def answer(status: int) -> None:
            """The client's exit status, sent once: an Epilog answers before its node re-plan, then goes
            on with its standard streams on /dev/null (slurmd no longer reads them)."""
            if answered:
                return
            answered.append(status)
            sys.stdout.flush()
            sys.stderr.flush()
            conn.sendall(b"%d\n" % status)
            conn.close()
            null = os.open(os.devnull, os.O_RDWR)
            for fd in req.fds:
                os.dup2(null, fd)
            os.close(null)

        served_by(os.getppid(), answer)
        code = run_hook(req.hook, req.config)
        answer(code)
    except Exception as exc:  # noqa: BLE001 - a child never returns into the server's loop
        sys.stderr.write(f"slurm-gpu-hook: server: {type(exc).__name__}: {exc}\n")
        sys.stderr.flush()
    return code
