"""The simulated driver's state: one JSON file per node, shared by every process that opens it.

Layout (``format_version`` 1)::

    {"format": "slurm-gpu-simnvml", "format_version": 1, "checksum": "sha256:<hex of body>",
     "body": {"allow_unprivileged": false, "sandbox": null, "cap_major": null, "next_serial": 1,
              "gpus": [{"index": 0, "model": "H100-80GB", "name": "NVIDIA H100 80GB HBM3",
                        "uuid": "GPU-...", "minor": 0, "pci_device_id": "0x233010DE",
                        "bus_id": "00000000:01:00.0", "memory_total_mib": 81559,
                        "mig_current": 1, "mig_pending": 1,
                        "gpu_instances": [{"gi_id": 1, "profile_id": 19, "start": 0, "size": 1,
                                           "serial": 7, "compute_instances": [
                                               {"ci_id": 0, "profile_id": 0, "slices": 1,
                                                "mig_uuid": "MIG-...", "handle_index": 0,
                                                "serial": 8}]}],
                        "processes": [{"pid": 4242, "start_time": 123, "gi_id": 1, "ci_id": 0}]}]}}

Every change happens under an exclusive lock on ``<state>.lock``; the file is replaced atomically with
mode 0600 (``state.fsutil``: the journal's own primitives). Readers need no lock: a rename is atomic.

A recorded process counts while a process of that pid and start time runs (``live_processes``); the
simulator's controls that record and forget them are in ``simprocs``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import uuid
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from slurm_gpu.core.catalog import load_catalog
from slurm_gpu.core.errors import BadInputError, StateError
from slurm_gpu.devices import simdevfiles
from slurm_gpu.state.fsutil import FileLock, atomic_write, canonical_json, checksum

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "init_state",
    "load_state",
    "read_state",
    "reset_state",
    "clear_gpu",
    "describe",
    "locked_state",
    "new_mig_uuid",
    "live_processes",
    "process_start_time",
]

FORMAT = "slurm-gpu-simnvml"
FORMAT_VERSION = 1
LOCK_TIMEOUT_S = 30.0

# Parsed bodies keyed by (inode, mtime, size): every write renames a new inode into place, so an
# unchanged key means unchanged content. Saves a JSON parse on each of the many NVML calls of a listing.
_cache: Dict[str, Tuple[Tuple[int, int, int], Dict[str, Any]]] = {}


def _parse(path: str, text: str) -> Dict[str, Any]:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise StateError(f"simulated GPU state {path} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise StateError(f"simulated GPU state {path} is not a {FORMAT} file")
    if doc.get("format_version") != FORMAT_VERSION:
        raise StateError(
            f"simulated GPU state {path} has format_version {doc.get('format_version')!r}, "
            f"expected {FORMAT_VERSION}"
        )
    body = doc.get("body")
    if not isinstance(body, dict) or not isinstance(body.get("gpus"), list):
        raise StateError(f"simulated GPU state {path} has no GPU list")
    if doc.get("checksum") != checksum(body):
        raise StateError(f"simulated GPU state {path} is corrupt: checksum mismatch")
    return body


def load_state(path: str) -> Dict[str, Any]:
    """The state body of ``path`` (a deep copy the caller may change); StateError if missing or corrupt."""
    return _copied(read_state(path))


def _copied(value: Any) -> Any:
    """A deep copy of parsed JSON (dicts, lists, scalars): what ``copy.deepcopy`` makes, several times
    faster, since the state is copied on every driver call."""
    if type(value) is dict:
        return {k: _copied(v) for k, v in value.items()}
    if type(value) is list:
        return [_copied(v) for v in value]
    return value


def read_state(path: str) -> Dict[str, Any]:
    """Like ``load_state`` but the shared cached body itself: for readers that never change it."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise StateError(
            f"simulated GPU state {path} does not exist (create it with init_state / 'slurm-gpu sim init')"
        ) from None
    key = _key(st)
    hit = _cache.get(path)
    if hit is not None and hit[0] == key:
        return hit[1]
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise StateError(f"cannot read simulated GPU state {path}: {exc}") from exc
    body = _parse(path, text)
    _cache[path] = (key, body)
    return body


def _key(st: os.stat_result) -> Tuple[int, int, int]:
    return st.st_ino, st.st_mtime_ns, st.st_size


def _write(path: str, body: Dict[str, Any]) -> None:
    # The document is what json.dumps(doc, sort_keys=True, separators=(",", ":")) makes, with the body
    # encoded once for both its checksum and the file. Compact and not fsynced: a real GPU's MIG
    # instances do not survive a power loss either, and the state is rewritten on every create and destroy.
    text = canonical_json(body)
    head = json.dumps({"checksum": checksum(body, text)}, separators=(",", ":"))[1:-1]
    tail = json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION}, separators=(",", ":"))[1:]
    atomic_write(path, f'{{"body":{text},{head},{tail}\n', mode=0o600, durable=False)
    # Writers hold the lock, so the file stat'ed now is the one just written: the next read of this
    # process needs no parse. A copy, as the caller's body may still change.
    _cache[path] = (_key(os.stat(path)), _copied(body))


def _lock(path: str, timeout_s: float = LOCK_TIMEOUT_S) -> FileLock:
    return FileLock(path + ".lock", timeout_s)


@contextlib.contextmanager
def locked_state(path: str) -> Iterator[Dict[str, Any]]:
    """Read-modify-write under the node lock; the body is saved only if the block ends normally."""
    with _lock(path):
        before = read_state(path)  # the cached body, never changed: compared with what the block left
        body = _copied(before)
        yield body
        if body != before:
            _write(path, body)


def new_mig_uuid() -> str:
    return "MIG-" + str(uuid.uuid4())


def process_start_time(pid: int) -> Optional[int]:
    """Field 22 of /proc/<pid>/stat (clock ticks since boot), None if the process is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            data = fh.read()
    except OSError:
        return None
    fields = data[data.rfind(")") + 2 :].split()
    if not fields or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def live_processes(gpu: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Attached processes of a GPU entry that still run (same pid and start time as when attached)."""
    live = []
    for proc in gpu.get("processes", []):
        started = process_start_time(proc["pid"])
        if started is not None and (proc.get("start_time") is None or proc["start_time"] == started):
            live.append(proc)
    return live


def live_holders(gpu: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Processes that hold the GPU's ``/dev/nvidia<minor>`` open without a MIG device (hwloc/PMIx, DCGM,
    a monitor) and still run. On a real node they make GPU-instance creation and MIG mode changes fail
    with IN_USE ("In use by another client")."""
    live = []
    for proc in gpu.get("holders", []):
        started = process_start_time(proc["pid"])
        if started is not None and (proc.get("start_time") is None or proc["start_time"] == started):
            live.append(proc)
    return live


def _gpu_entry(index: int, model_key: str) -> Dict[str, Any]:
    model = load_catalog().model(model_key)
    memory = model.total_memory_mib or model.full_profile().usable_memory_mib
    return {
        "index": index,
        "model": model.key,
        "name": next((n for n in model.nvml_names if n.startswith("NVIDIA ")), model.nvml_names[0]),
        "uuid": "GPU-" + str(uuid.uuid4()),
        "minor": index,
        "pci_device_id": model.pci_device_ids[0],
        "bus_id": f"00000000:{index + 1:02X}:00.0",
        "memory_total_mib": memory,
        "mig_current": 0,
        "mig_pending": 0,
        "gpu_instances": [],
        "processes": [],
    }


def init_state(
    path: str,
    gpus: Sequence[Tuple[str, int]],
    mig_enabled: bool = True,
    sandbox: Optional[str] = None,
    allow_unprivileged: bool = False,
) -> Dict[str, Any]:
    """Create (or replace) the state file of a simulated node: ``gpus`` is ``[(model key, count), ...]``.

    With ``sandbox``, the capability file ``<sandbox>/mig-minors`` and, when root, the device nodes under
    ``<sandbox>/dev`` are maintained there.
    """
    if not gpus:
        raise BadInputError("a simulated node needs at least one GPU", part=str(gpus))
    entries: List[Dict[str, Any]] = []
    for model_key, count in gpus:
        if count < 1:
            raise BadInputError(f"GPU count must be >= 1, got {count} for {model_key}", part=str(count))
        for _ in range(count):
            entries.append(_gpu_entry(len(entries), model_key))
    mode = 1 if mig_enabled else 0
    for gpu in entries:
        gpu["mig_current"] = gpu["mig_pending"] = mode
    body: Dict[str, Any] = {
        "allow_unprivileged": bool(allow_unprivileged),
        "sandbox": os.path.abspath(sandbox) if sandbox else None,
        "cap_major": None,
        "next_serial": 1,
        "gpus": entries,
    }
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with _lock(path):
        if body["sandbox"]:
            body["cap_major"] = simdevfiles.init_sandbox(body["sandbox"], entries)
        _write(path, body)
    return copy.deepcopy(body)


def reset_state(path: str) -> Dict[str, Any]:
    """Destroy every instance and forget every process, keeping the GPUs (and their UUIDs and modes)."""
    with locked_state(path) as body:
        for gpu in body["gpus"]:
            clear_gpu(body, gpu)
        result = copy.deepcopy(body)
    return result


def clear_gpu(body: Dict[str, Any], gpu: Dict[str, Any]) -> None:
    """Drop ``gpu``'s instances (and their capability files in a sandbox) and its processes, in ``body``."""
    if body.get("sandbox"):
        for gi in gpu["gpu_instances"]:
            for ci in gi["compute_instances"]:
                simdevfiles.remove_cap(body, gpu, gi["gi_id"], ci["ci_id"])
            simdevfiles.remove_cap(body, gpu, gi["gi_id"], None)
    gpu["gpu_instances"] = []
    gpu["processes"] = []


def describe(path: str) -> Dict[str, Any]:
    """A summary for humans and the CLI: GPUs, MIG modes, instances (with UUIDs) and live processes."""
    body = load_state(path)
    gpus = []
    for gpu in body["gpus"]:
        live = live_processes(gpu)
        instances = []
        for gi in sorted(gpu["gpu_instances"], key=lambda g: g["start"]):
            for ci in gi["compute_instances"] or [None]:
                instances.append(
                    {
                        "gi_id": gi["gi_id"],
                        "ci_id": ci["ci_id"] if ci else None,
                        "profile_id": gi["profile_id"],
                        "start": gi["start"],
                        "size": gi["size"],
                        "mig_uuid": ci["mig_uuid"] if ci else None,
                        "pids": [
                            p["pid"]
                            for p in live
                            if ci and p["gi_id"] == gi["gi_id"] and p["ci_id"] == ci["ci_id"]
                        ],
                    }
                )
        gpus.append(
            {
                "index": gpu["index"],
                "model": gpu["model"],
                "name": gpu["name"],
                "uuid": gpu["uuid"],
                "minor": gpu["minor"],
                "mig_current": bool(gpu["mig_current"]),
                "mig_pending": bool(gpu["mig_pending"]),
                "instances": instances,
            }
        )
    return {
        "state": os.path.abspath(path),
        "format_version": FORMAT_VERSION,
        "sandbox": body.get("sandbox"),
        "cap_major": body.get("cap_major"),
        "allow_unprivileged": bool(body.get("allow_unprivileged")),
        "gpus": gpus,
    }
