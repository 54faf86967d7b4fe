"""The hook server's client: ask ``slurm-gpu-hook serve`` (``slurm_gpu.hooks.server``) to run a hook.

Imports nothing beyond the built-in ``posix`` and ``sys`` and the C module ``_socket`` (not even ``os``,
which a ``-S`` interpreter has not loaded): it runs in every hook process, and its point is to keep that
process small.
"""

import posix
import sys

# typing is not imported just for annotations, and they are quoted: "from __future__ import
# annotations" would import the __future__ module in every hook process (0.4 ms).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, Optional, Sequence

__all__ = ["SOCKET_ENV", "DEFAULT_SOCKET", "PROTOCOL", "STALE", "package_id", "encode_request", "via_server"]

SOCKET_ENV = "SLURM_GPU_HOOK_SOCKET"
DEFAULT_SOCKET = "/run/slurm-gpu/hooks.sock"
PROTOCOL = b"slurm-gpu-hook/1"
STALE = b"stale"  # the reply of a server that is another install than its client


def package_id() -> str:
    """This install of the package: a server of another one (an upgrade not yet restarted) is not used."""
    import slurm_gpu

    path = slurm_gpu.__file__ or ""
    if path.startswith("/") and "/." not in path and "//" not in path:
        directory = path.rpartition("/")[0]  # os.path.dirname of a normal absolute path
    else:
        import os

        directory = os.path.dirname(os.path.abspath(path))
    return f"{directory}@{slurm_gpu.__version__}"


def encode_request(hook: str, config: "Optional[str]", cwd: bytes, umask: int, fds: "Sequence[int]",
                   env: "Dict[bytes, bytes]", package: str) -> bytes:
    """The request's wire form (``slurm_gpu.hooks.server.parse_request`` reads it): ``PROTOCOL\\n<length>\\n``
    and a body of NUL-separated fields: package, hook, config path (empty: the default search), cwd, umask
    (octal), the targets (0-2) of the file descriptors passed with it, then the environment's
    ``KEY=VALUE``. NUL cannot occur in any of them."""
    fields = [_fsencode(package), hook.encode(), _fsencode(config or ""), cwd, b"%o" % umask,
              b",".join(b"%d" % fd for fd in fds), *(k + b"=" + v for k, v in env.items())]
    body = b"\0".join(fields)
    return PROTOCOL + b"\n%d\n" % len(body) + body


def _fsencode(text: str) -> bytes:
    return text.encode(sys.getfilesystemencoding(), "surrogateescape")  # os.fsencode on POSIX


def _open_fds() -> "List[int]":
    fds = []
    for fd in (0, 1, 2):
        try:
            posix.fstat(fd)
        except OSError:
            continue
        fds.append(fd)
    return fds


def _exchange(path: str, data: bytes, fds: "Sequence[int]") -> "Optional[bytes]":
    """Send ``data`` with ``fds`` and read the reply to its end; None when nobody listens at ``path``."""
    import _socket  # not ``socket``: that would import enum and selectors

    conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    reply = b""
    try:
        try:
            conn.connect(path)
        except OSError:
            return None
        rights = b"".join(fd.to_bytes(4, sys.byteorder) for fd in fds)
        sent = conn.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)] if fds else [])
        while sent < len(data):
            sent += conn.send(data[sent:])
        while True:
            chunk = conn.recv(256)
            if not chunk:
                break
            reply += chunk
    except OSError:
        pass  # the reply so far decides
    finally:
        conn.close()
    return reply


def via_server(hook: str, config: "Optional[str]") -> "Optional[int]":
    """The exit status of ``hook`` run by the hook server, or None to run it in this process: no server
    (``$SLURM_GPU_HOOK_SOCKET``, default DEFAULT_SOCKET; empty or ``none``: never ask), another install's
    server, or a server child that ended without a status (a hook is safe to run again: the journal)."""
    env = posix.environ  # the environment as bytes (os.environb before os exists)
    raw = env.get(SOCKET_ENV.encode())
    path = DEFAULT_SOCKET if raw is None else raw.decode(sys.getfilesystemencoding(), "surrogateescape")
    if path in ("", "none"):
        return None
    try:
        cwd = posix.getcwdb()
    except OSError:
        cwd = b"/"
    umask = posix.umask(0o077)
    posix.umask(umask)
    fds = _open_fds()
    reply = _exchange(path, encode_request(hook, config, cwd, umask, fds, dict(env), package_id()), fds)
    if reply is None:
        return None
    status = reply.strip()
    if status.isdigit():
        return int(status)
    if status != STALE:
        sys.stderr.write(f"slurm-gpu-hook: the hook server at {path} gave no exit status; running here\n")
    return None
