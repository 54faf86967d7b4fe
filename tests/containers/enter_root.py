"""Run a command of a Debian root (the sid root with Apptainer) as the calling, unprivileged user.

``python3 enter_root.py ROOT CMD...``: a new user namespace mapping only the caller's own uid and gid
(no privilege is gained), a new mount namespace, ROOT bind-mounted onto itself with the host's /proc,
/sys, the folders a job uses (/tmp, /var/tmp, /home, /work, /run) and the users (/etc/passwd, /etc/group)
bound in, then ``pivot_root`` into it and exec CMD. Plain chroot is not enough for Apptainer ("weak
chrooted environment"). Standard library only: it runs as a job's user with the system python. The
devices cgroup of the caller's job still applies to everything inside.

/dev inside is a fresh tmpfs holding the usual nodes of the host's. The simulated driver keeps its device
nodes in a sandbox folder, where a real node has them in /dev, and Apptainer binds a device into its
private /dev only from the same path (``--bind /dev/nvidia0``): every ``--bind <dir>/dev/X:/dev/X`` of
the command is bound at /dev/X here and handed on as ``--bind /dev/X``, as on a real node.
"""

import ctypes
import os
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
SYS_PIVOT_ROOT = 155  # x86_64
BINDS = ("/proc", "/sys", "/tmp", "/var/tmp", "/home", "/work", "/run")
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
FILES = ("/etc/passwd", "/etc/group", "/etc/hosts")  # the job's user must exist inside

libc = ctypes.CDLL(None, use_errno=True)


def _check(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _write(path, text):
    with open(path, "w") as fh:
        fh.write(text)


def _bind(src, dst):
    _check(libc.mount(src.encode(), dst.encode(), None, MS_BIND | MS_REC, None), f"bind {src} {dst}")


def _which(root, name):
    """``name`` as a path inside ``root`` (looked up before pivot_root: the host's Python goes away)."""
    if "/" in name:
        return name
    for d in ("/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"):
        if os.access(root + d + "/" + name, os.X_OK):
            return d + "/" + name
    raise SystemExit(f"enter_root: {name} not found in {root}")


def _node_file(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a"):
        pass


def _dev(root, cmd):
    """A tmpfs /dev with the host's basic nodes and the command's simulated device nodes (see above)."""
    _check(libc.mount(b"tmpfs", (root + "/dev").encode(), b"tmpfs", 0, b"mode=755"), "tmpfs /dev")
    for name in DEV_NODES:
        _node_file(f"{root}/dev/{name}")
        _bind(f"/dev/{name}", f"{root}/dev/{name}")
    os.makedirs(f"{root}/dev/shm", exist_ok=True)
    os.makedirs(f"{root}/dev/pts", exist_ok=True)
    _bind("/dev/pts", f"{root}/dev/pts")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx")):
        os.symlink(target, f"{root}/dev/{name}")
    out = []
    for arg in cmd:
        src, sep, dst = arg.partition(":")
        if sep and dst.startswith("/dev/") and src != dst and src.endswith(dst):
            _node_file(root + dst)
            _bind(src, root + dst)
            arg = dst
        out.append(arg)
    return out


def main(argv):
    root, cmd = os.path.realpath(argv[0]), argv[1:]
    path = _which(root, cmd[0])
    env = dict(os.environ, PATH="/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
    uid, gid, cwd = os.getuid(), os.getgid(), os.getcwd()
    _check(libc.unshare(CLONE_NEWUSER | CLONE_NEWNS), "unshare")
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{uid} {uid} 1\n")
    _write("/proc/self/gid_map", f"{gid} {gid} 1\n")
    _check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
    _bind(root, root)
    for folder in BINDS:
        if os.path.isdir(folder) and os.path.isdir(root + folder):
            _bind(folder, root + folder)
    cmd = _dev(root, cmd)
    for name in FILES:
        if os.path.isfile(name) and os.path.isfile(root + name):
            _bind(name, root + name)
    os.chdir(root)
    old = os.path.join(root, "mnt")
    _check(libc.syscall(SYS_PIVOT_ROOT, root.encode(), old.encode()), "pivot_root")
    os.chdir("/")
    _check(libc.umount2(b"/mnt", MNT_DETACH), "detach the old root")
    try:
        os.chdir(cwd)
    except OSError:
        os.chdir("/")
    os.execve(path, cmd, env)


if __name__ == "__main__":
    main(sys.argv[1:])
