"""Capability minors of MIG instances: the driver's ``mig-minors`` file and the pattern it follows.

The driver publishes ``/proc/driver/nvidia-caps/mig-minors``: one line per GPU instance
(``gpu<minor>/gi<id>/access <cap minor>``) and compute instance (``gpu<minor>/gi<id>/ci<id>/access``)
that can ever exist, for GI ids 0..14 and CI ids 0..7, before any instance does. The minors follow a
fixed pattern (``gi_cap_minor``/``ci_cap_minor``); code that can read the file reads it, code that
cannot (configuration generated for another node, the simulator writing its own file) uses the pattern.

>>> gi_cap_minor(0, 1), ci_cap_minor(0, 1, 0), ci_cap_minor(1, 14, 7)
(12, 13, 272)
>>> mig_minors_text([0]).splitlines()[:4]
['config 1', 'monitor 2', 'gpu0/gi0/access 3', 'gpu0/gi0/ci0/access 4']
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Tuple

__all__ = [
    "DEFAULT_MIG_MINORS",
    "MAX_GI_ID",
    "MAX_CI_ID",
    "gi_cap_minor",
    "ci_cap_minor",
    "access_key",
    "mig_minors_text",
    "read_mig_minors",
    "remember",
    "MigMinors",
]

DEFAULT_MIG_MINORS = "/proc/driver/nvidia-caps/mig-minors"
MAX_GI_ID = 14  # highest GPU instance id the driver assigns (and reserves a minor for)
MAX_CI_ID = 7  # highest compute instance id within a GPU instance


def gi_cap_minor(gpu_minor: int, gi_id: int) -> int:
    """Minor of ``/dev/nvidia-caps/nvidia-cap<N>`` for GPU instance ``gi_id`` of GPU ``gpu_minor``."""
    return 3 + 135 * gpu_minor + 9 * gi_id


def ci_cap_minor(gpu_minor: int, gi_id: int, ci_id: int) -> int:
    """Minor of the capability file of compute instance ``ci_id`` in GPU instance ``gi_id``."""
    return gi_cap_minor(gpu_minor, gi_id) + 1 + ci_id


def access_key(gpu_minor: int, gi_id: int, ci_id: Optional[int] = None) -> str:
    """The mig-minors key of a GPU instance (``ci_id`` None) or compute instance."""
    if ci_id is None:
        return f"gpu{gpu_minor}/gi{gi_id}/access"
    return f"gpu{gpu_minor}/gi{gi_id}/ci{ci_id}/access"


def mig_minors_text(gpu_minors: Iterable[int]) -> str:
    """The mig-minors file the driver would publish for GPUs of these minors."""
    lines = ["config 1", "monitor 2"]
    for minor in sorted(gpu_minors):
        for gi in range(MAX_GI_ID + 1):
            lines.append(f"{access_key(minor, gi)} {gi_cap_minor(minor, gi)}")
            for ci in range(MAX_CI_ID + 1):
                lines.append(f"{access_key(minor, gi, ci)} {ci_cap_minor(minor, gi, ci)}")
    return "\n".join(lines) + "\n"


class _Table:
    """One parse of a mig-minors file: key -> minor, and each GPU's minors (grouped on first use)."""

    __slots__ = ("raw", "minors", "_by_gpu")

    def __init__(self, raw: bytes):
        self.raw = raw
        self.minors: Dict[str, int] = {}
        for line in raw.decode("ascii", "replace").splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                self.minors[parts[0]] = int(parts[1])
        self._by_gpu: Optional[Dict[str, Tuple[int, ...]]] = None

    def by_gpu(self) -> Dict[str, Tuple[int, ...]]:
        if self._by_gpu is None:  # one pass over the file's ~1,100 lines, not one per GPU
            grouped: Dict[str, List[int]] = {}
            for key, minor in self.minors.items():
                head, slash, _ = key.partition("/")
                if slash:
                    grouped.setdefault(head, []).append(minor)
            self._by_gpu = {head: tuple(sorted(minors)) for head, minors in grouped.items()}
        return self._by_gpu


_NOTHING = _Table(b"")
# The last parse of each file, with the bytes it came from. The hook server parses the node's file before
# it forks (``remember``); a hook reads the file and, finding the same bytes, uses that parse rather than
# building ~1,100 entries in its fresh process.
_parsed: Dict[str, _Table] = {}


def _table_of(path: Optional[str]) -> _Table:
    if not path:
        return _NOTHING
    try:
        with open(path, "rb") as fh:  # bytes: no text codec to load for it
            raw = fh.read()
    except OSError:
        return _NOTHING
    table = _parsed.get(path)
    if table is None or table.raw != raw:
        table = _parsed[path] = _Table(raw)
    return table


def read_mig_minors(path: Optional[str]) -> Dict[str, int]:
    """``gpu0/gi1/access 12`` lines of a mig-minors file as key -> minor; empty if it cannot be read."""
    return dict(_table_of(path).minors)


def remember(path: Optional[str]) -> None:
    """Parse ``path`` now (and group it by GPU), for the processes forked from this one to reuse."""
    _table_of(path).by_gpu()


class MigMinors:
    """The minors of one mig-minors file, read on first use (None or "" for no file: nothing known)."""

    def __init__(self, path: Optional[str] = DEFAULT_MIG_MINORS):
        self.path = path
        self._table: Optional[_Table] = None

    def _read(self) -> _Table:
        if self._table is None:
            self._table = _table_of(self.path)
        return self._table

    def cap_minor(self, gpu_minor: int, gi_id: int, ci_id: Optional[int] = None) -> Optional[int]:
        """The file's minor of a GPU or compute instance; None where the file does not say."""
        return self._read().minors.get(access_key(gpu_minor, gi_id, ci_id))

    def of_gpu(self, gpu_minor: int) -> Tuple[int, ...]:
        """Every GPU- and compute-instance minor reserved for GPU ``gpu_minor``, sorted."""
        return self._read().by_gpu().get(f"gpu{int(gpu_minor)}", ())
