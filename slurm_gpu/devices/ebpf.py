"""Device control of a cgroup v2 with a ``BPF_PROG_TYPE_CGROUP_DEVICE`` program, through bpf(2) and ctypes.

cgroup v2 has no ``devices.deny``: the kernel asks every device program attached to a process's cgroup
and to its ancestors whether an open or mknod of a device may go ahead (kernel
``Documentation/admin-guide/cgroup-v2.rst``, "Device controller"). Slurm's ``cgroup/v2`` plugin
(``src/plugins/cgroup/v2/ebpf.c``) attaches one such program to ``job_<id>`` and to the step's ``user``
cgroup with ``BPF_F_ALLOW_OVERRIDE`` and to each task cgroup with no flag, and only when the node has gres
with device files (``File=``): a program with no device rule is not loaded. Slurm knows nothing of MIG
instances a Prolog creates, so slurm-gpu attaches its own program to ``job_<id>`` with
``BPF_F_ALLOW_MULTI``: programs attached that way stay effective in every descendant whatever is attached
below, and every effective program must allow an access for it to happen.

The program denies a list of character devices (major, minor ranges) and allows everything else: it
narrows whatever Slurm allows, never widens it. It is named :data:`PROG_NAME` so a Prolog run again for
the same job replaces its earlier program atomically (``BPF_F_REPLACE``) instead of adding a second.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from slurm_gpu.core.errors import StateError

__all__ = ["PROG_NAME", "deny_ranges", "deny_program", "load", "attached", "attach", "seal_cgroup",
           "BPF_F_ALLOW_OVERRIDE", "BPF_F_ALLOW_MULTI"]

PROG_NAME = "slurm_gpu_seal"  # at most 15 characters, [A-Za-z0-9_.]

# Constants of include/uapi/linux/bpf.h.
_BPF_PROG_LOAD = 5
_BPF_PROG_ATTACH = 8
_BPF_PROG_GET_FD_BY_ID = 13
_BPF_OBJ_GET_INFO_BY_FD = 15
_BPF_PROG_QUERY = 16
_BPF_PROG_TYPE_CGROUP_DEVICE = 15
_BPF_CGROUP_DEVICE = 6  # attach type
BPF_F_ALLOW_OVERRIDE = 1
BPF_F_ALLOW_MULTI = 2
_BPF_F_REPLACE = 4
_BPF_DEVCG_DEV_CHAR = 2
_ATTR_SIZE = 128  # larger than every attribute used here; the kernel wants the tail zero
_SYSCALL = {"x86_64": 321, "aarch64": 280, "arm64": 280, "ppc64le": 361, "ppc64": 361, "s390x": 351,
            "riscv64": 280, "loongarch64": 280}

# Opcodes (class | size/op | source).
_LDX_W = 0x61  # BPF_LDX | BPF_W | BPF_MEM
_AND_K = 0x54  # BPF_ALU | BPF_AND | BPF_K (32-bit)
_MOV64_K = 0xB7
_JA = 0x05
_JEQ_K = 0x15
_JNE_K = 0x55
_JLT_K = 0xA5  # unsigned
_JLE_K = 0xB5  # unsigned
_EXIT = 0x95

Label = str
_Insn = Tuple[int, int, int, Union[int, Label], int]  # (code, dst, src, offset or label, imm)


def deny_ranges(devices: Iterable[Tuple[int, int]]) -> Dict[int, List[Tuple[int, int]]]:
    """Character devices (major, minor) as inclusive minor ranges per major: the GPU-instance and
    compute-instance minors of one GPU are consecutive (135 per GPU), so a seal is a few ranges."""
    by_major: Dict[int, List[int]] = {}
    for major, minor in devices:
        by_major.setdefault(int(major), []).append(int(minor))
    out: Dict[int, List[Tuple[int, int]]] = {}
    for major, minors in sorted(by_major.items()):
        ranges: List[Tuple[int, int]] = []
        for m in sorted(set(minors)):
            if ranges and ranges[-1][1] == m - 1:
                ranges[-1] = (ranges[-1][0], m)
            else:
                ranges.append((m, m))
        out[major] = ranges
    return out


def _program(ranges: Dict[int, List[Tuple[int, int]]]) -> List[_Insn]:
    """r2 = device type, r3 = major, r4 = minor; a denied device returns 0, anything else 1."""
    prog: List[_Insn] = [
        (_LDX_W, 2, 1, 0, 0), (_AND_K, 2, 0, 0, 0xFFFF),
        (_LDX_W, 3, 1, 4, 0), (_LDX_W, 4, 1, 8, 0),
        (_JNE_K, 2, 0, "allow", _BPF_DEVCG_DEV_CHAR),
    ]
    for n, (major, spans) in enumerate(ranges.items()):
        prog.append((_JNE_K, 3, 0, f"major{n + 1}", major))
        for k, (lo, hi) in enumerate(spans):
            if lo == hi:
                prog.append((_JEQ_K, 4, 0, "deny", lo))
                continue
            prog.append((_JLT_K, 4, 0, f"r{n}.{k + 1}", lo))
            prog.append((_JLE_K, 4, 0, "deny", hi))
            prog.append((0, 0, 0, f"@r{n}.{k + 1}", 0))
        prog.append((_JA, 0, 0, "allow", 0))
        prog.append((0, 0, 0, f"@major{n + 1}", 0))
    prog += [(0, 0, 0, "@allow", 0), (_MOV64_K, 0, 0, 0, 1), (_EXIT, 0, 0, 0, 0),
             (0, 0, 0, "@deny", 0), (_MOV64_K, 0, 0, 0, 0), (_EXIT, 0, 0, 0, 0)]
    return prog


def deny_program(devices: Iterable[Tuple[int, int]]) -> bytes:
    """The program's instructions (8 bytes each, host byte order) denying these character devices."""
    prog = _program(deny_ranges(devices))
    where: Dict[str, int] = {}
    pc = 0
    for code, _dst, _src, off, _imm in prog:
        if code == 0 and isinstance(off, str) and off.startswith("@"):
            where[off[1:]] = pc
        else:
            pc += 1
    out: List[bytes] = []
    for code, dst, src, off, imm in prog:
        if code == 0:
            continue
        if isinstance(off, str):
            off = where[off] - len(out) - 1
            if not -32768 <= off <= 32767:
                raise StateError("device program too long for a jump")
        out.append(struct.pack("=BBhi", code, (src << 4) | dst, off, imm))
    return b"".join(out)


_LIBC: List[ctypes.CDLL] = []


def _bpf(cmd: int, attr: bytes, keep: Sequence[object] = ()) -> Tuple[int, bytes]:
    """bpf(2) with ``attr`` (padded with zeros); returns the result and the attribute as the kernel left
    it. ``keep`` holds the buffers ``attr`` points into alive during the call."""
    number = _SYSCALL.get(platform.machine())
    if number is None:
        raise StateError(f"no bpf(2) syscall number known for {platform.machine()}")
    if not _LIBC:
        _LIBC.append(ctypes.CDLL(None, use_errno=True))  # the process's own libc
    buf = ctypes.create_string_buffer(attr.ljust(_ATTR_SIZE, b"\0"), _ATTR_SIZE)
    res = _LIBC[0].syscall(ctypes.c_long(number), ctypes.c_int(cmd), buf, ctypes.c_uint(_ATTR_SIZE))
    if res < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(res), buf.raw


def load(program: bytes, name: str = PROG_NAME) -> int:
    """Load a device program; returns its file descriptor (the caller closes it). When the kernel refuses
    it, the load is tried again with the verifier's log, whose last line goes into the error."""
    insns = ctypes.create_string_buffer(program, len(program))
    lic = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(65536)
    for level in (0, 1):  # no log on the way that works: a log that overflows fails the load itself
        attr = struct.pack("=IIQQIIQII16s", _BPF_PROG_TYPE_CGROUP_DEVICE, len(program) // 8,
                           ctypes.addressof(insns), ctypes.addressof(lic), level, len(log) if level else 0,
                           ctypes.addressof(log) if level else 0, 0, 0, name.encode("ascii"))
        try:
            fd, _ = _bpf(_BPF_PROG_LOAD, attr, (insns, lic, log))
            return fd
        except OSError as exc:
            error = exc
    lines = [ln for ln in log.value.decode("ascii", "replace").splitlines()
             if ln.strip() and not ln.startswith(("processed ", "verification time", "stack depth"))]
    detail = f": {lines[-1].strip()}" if lines else ""
    raise StateError(f"cannot load a device program ({error.strerror}){detail}") from error


def attached(cgroup_fd: int) -> Tuple[int, Tuple[int, ...]]:
    """The attach flags and program ids of the device programs attached to this cgroup itself."""
    ids = (ctypes.c_uint32 * 64)()
    attr = struct.pack("=IIIIQI", cgroup_fd, _BPF_CGROUP_DEVICE, 0, 0, ctypes.addressof(ids), len(ids))
    _, out = _bpf(_BPF_PROG_QUERY, attr, (ids,))
    flags, count = struct.unpack_from("=I", out, 12)[0], struct.unpack_from("=I", out, 24)[0]
    return flags, tuple(ids[i] for i in range(min(count, len(ids))))


def _name_of(prog_id: int) -> Tuple[Optional[int], str]:
    """A program's file descriptor (the caller closes it) and name; (None, "") once it is gone."""
    try:
        fd, _ = _bpf(_BPF_PROG_GET_FD_BY_ID, struct.pack("=I", prog_id))
    except FileNotFoundError:
        return None, ""
    info = ctypes.create_string_buffer(256)
    _bpf(_BPF_OBJ_GET_INFO_BY_FD, struct.pack("=IIQ", fd, len(info), ctypes.addressof(info)), (info,))
    return fd, info.raw[64:80].split(b"\0", 1)[0].decode("ascii", "replace")


def attach(cgroup_fd: int, prog_fd: int, replace_fd: Optional[int] = None,
           flags: int = BPF_F_ALLOW_MULTI) -> None:
    """Attach a device program to a cgroup, replacing ``replace_fd``'s program atomically if given."""
    if replace_fd is not None:
        flags |= _BPF_F_REPLACE
    attr = struct.pack("=IIIII", cgroup_fd, prog_fd, _BPF_CGROUP_DEVICE, flags, replace_fd or 0)
    _bpf(_BPF_PROG_ATTACH, attr)


def seal_cgroup(path: str, devices: Sequence[Tuple[int, int]]) -> int:
    """Deny ``devices`` (character major, minor) to every process of the cgroup ``path`` and below;
    returns the number of instructions loaded. An earlier seal of the same cgroup is replaced.

    Raises ``StateError`` when the kernel refuses (not a cgroup v2 directory, no bpf(2) for root, or a
    program attached there without ``BPF_F_ALLOW_MULTI``, which cannot share the cgroup with ours).
    """
    program = deny_program(devices)
    try:
        cg = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        raise StateError(f"cannot open {path}: {exc.strerror}") from exc
    fds: List[int] = []
    try:
        try:
            flags, ids = attached(cg)
        except OSError as exc:
            raise StateError(f"{path} takes no device program ({exc.strerror}): not a cgroup v2 "
                             "directory, or bpf(2) is not permitted") from exc
        if ids and not flags & BPF_F_ALLOW_MULTI:
            raise StateError(f"{path} has a device program attached without BPF_F_ALLOW_MULTI "
                             f"(flags {flags}; Slurm's own, for gres with File=): it cannot take ours")
        old = None
        for prog_id in ids:
            fd, name = _name_of(prog_id)
            if fd is not None:
                fds.append(fd)
                if name == PROG_NAME:
                    old = fd
        fds.append(load(program))
        try:
            attach(cg, fds[-1], replace_fd=old)
        except OSError as exc:
            raise StateError(f"cannot attach the device program to {path}: {exc.strerror}") from exc
    finally:
        for fd in fds:
            os.close(fd)
        os.close(cg)
    return len(program) // 8
