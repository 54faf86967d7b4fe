"""The per-job CDI spec (Container Device Interface): what a container may see of one job's MIG instances.

The Prolog leaves one spec per job, ``<cdi_dir>/slurm-gpu-job<id>.json``, and the Epilog removes it, so
runtimes with CDI (podman, Docker 27+ with CDI on, Apptainer 1.5+) can name an instance directly
(NVIDIA's own ``nvidia.yaml`` is written at driver install and never lists instances made later). Kind
``slurm-gpu.io/mig``; every instance k of the job is two names for one device:

- ``slurm-gpu.io/mig=<MIG UUID>`` (when the UUID is a valid CDI name: the R470+ ``MIG-<uuid>`` form),
- ``slurm-gpu.io/mig=job<id>-<k>`` (k as the TaskProlog maps ``SLURM_LOCALID``: task L gets L mod n).

Each device lists exactly its parent ``/dev/nvidia<minor>`` and its two capability files (GPU- and
compute-instance access) and sets ``CUDA_VISIBLE_DEVICES`` and ``NVIDIA_VISIBLE_DEVICES`` to its UUID;
the spec-wide edits add the driver's shared nodes (``/dev/nvidiactl``, ``/dev/nvidia-uvm*``) that exist.
``hostPath`` is where the node has the file (the simulated driver's sandbox in tests), ``path`` where the
container gets it. This module builds and reads specs; it does no I/O (``node.cdi`` writes them).

>>> dev = JobDevice(0, "MIG-5c3a0000-0000-0000-0000-000000000001", 0,
...                 (DeviceNode("/dev/nvidia0", "/sb/dev/nvidia0", 195, 0),))
>>> spec = job_spec("42", [dev])
>>> spec["kind"], [d["name"] for d in spec["devices"]]
('slurm-gpu.io/mig', ['MIG-5c3a0000-0000-0000-0000-000000000001', 'job42-0'])
>>> parse_job_spec(spec, "42")[0].mig_uuid == dev.mig_uuid
True
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from slurm_gpu.core.errors import StateError

__all__ = ["CDI_VERSION", "CDI_KIND", "DeviceNode", "JobDevice", "job_spec", "parse_job_spec",
           "spec_file_name", "device_names", "cdi_name", "is_cdi_device_name", "shared_nodes", "ENV_KEYS"]

# 0.5.0 added deviceNodes.hostPath; podman 4.3 (bookworm) reads up to it. No later field is used.
CDI_VERSION = "0.5.0"
CDI_VENDOR = "slurm-gpu.io"
CDI_CLASS = "mig"
CDI_KIND = f"{CDI_VENDOR}/{CDI_CLASS}"
ENV_KEYS = ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*\Z")  # CDI device names (the spec's rule)


@dataclass(frozen=True)
class DeviceNode:
    """A character device a container gets: ``path`` inside, ``host_path`` on the node."""

    path: str
    host_path: str
    major: int
    minor: int

    def to_cdi(self) -> Dict[str, Any]:
        return {"path": self.path, "hostPath": self.host_path, "type": "c", "major": self.major,
                "minor": self.minor, "permissions": "rw"}


@dataclass(frozen=True)
class JobDevice:
    """Instance ``index`` of a job: its MIG UUID, parent GPU minor, and its device nodes (parent GPU
    first, then the GPU-instance and compute-instance capability files)."""

    index: int
    mig_uuid: str
    gpu_minor: int
    nodes: Tuple[DeviceNode, ...]

    def env(self) -> Dict[str, str]:
        return {key: self.mig_uuid for key in ENV_KEYS}


def is_cdi_device_name(name: str) -> bool:
    return bool(_NAME.match(name))


def spec_file_name(job_id: str) -> str:
    return f"slurm-gpu-job{job_id}.json"


def device_names(job_id: str, dev: JobDevice) -> Tuple[str, ...]:
    """The CDI names of one instance: its UUID (when CDI allows it as a name) and ``job<id>-<k>``."""
    names = [dev.mig_uuid] if is_cdi_device_name(dev.mig_uuid) else []
    return (*names, f"job{job_id}-{dev.index}")


def cdi_name(job_id: str, dev: JobDevice) -> str:
    """The fully qualified name a runtime takes (``--device slurm-gpu.io/mig=...``)."""
    return f"{CDI_KIND}={device_names(job_id, dev)[0]}"


def job_spec(job_id: str, devices: Sequence[JobDevice], shared: Sequence[DeviceNode] = ()) -> Dict[str, Any]:
    """The CDI document of a job's instances (``shared``: nodes every instance needs)."""
    out: List[Dict[str, Any]] = []
    for dev in devices:
        edits = {"env": [f"{k}={v}" for k, v in dev.env().items()],
                 "deviceNodes": [n.to_cdi() for n in dev.nodes]}
        out.extend({"name": name, "containerEdits": edits} for name in device_names(job_id, dev))
    spec: Dict[str, Any] = {"cdiVersion": CDI_VERSION, "kind": CDI_KIND, "devices": out}
    if shared:
        spec["containerEdits"] = {"deviceNodes": [n.to_cdi() for n in shared]}
    return spec


def _node(raw: Any) -> DeviceNode:
    if not isinstance(raw, Mapping):
        raise StateError("CDI spec: a device node is not a mapping")
    try:
        return DeviceNode(str(raw["path"]), str(raw.get("hostPath") or raw["path"]), int(raw["major"]),
                          int(raw["minor"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise StateError(f"CDI spec: unusable device node {raw!r}") from exc


def _device(job_id: str, raw: Any) -> Optional[JobDevice]:
    """The instance a ``job<id>-<k>`` entry describes (UUID-named entries repeat it: None)."""
    if not isinstance(raw, Mapping):
        raise StateError("CDI spec: a device is not a mapping")
    name, prefix = str(raw.get("name", "")), f"job{job_id}-"
    if not name.startswith(prefix) or not name[len(prefix):].isdigit():
        return None
    edits = raw.get("containerEdits") or {}
    env = dict(str(e).partition("=")[::2] for e in edits.get("env") or [])
    nodes = tuple(_node(n) for n in edits.get("deviceNodes") or [])
    uuid = env.get(ENV_KEYS[0], "")
    if not uuid or not nodes:
        raise StateError(f"CDI spec: device {name} lacks its UUID or device nodes")
    return JobDevice(int(name[len(prefix):]), uuid, nodes[0].minor, nodes)


def parse_job_spec(spec: Any, job_id: str) -> Tuple[JobDevice, ...]:
    """The job's instances, in order, from its CDI document; ``StateError`` for a foreign or broken one."""
    if not isinstance(spec, Mapping) or spec.get("kind") != CDI_KIND:
        raise StateError("not a slurm-gpu CDI spec")
    found = [d for d in (_device(job_id, raw) for raw in spec.get("devices") or []) if d is not None]
    found.sort(key=lambda d: d.index)
    if [d.index for d in found] != list(range(len(found))):
        raise StateError(f"CDI spec of job {job_id}: instances are not numbered 0..n-1")
    return tuple(found)


def shared_nodes(spec: Mapping[str, Any]) -> Tuple[DeviceNode, ...]:
    """The spec-wide device nodes (``/dev/nvidiactl``, ``/dev/nvidia-uvm*``)."""
    edits = spec.get("containerEdits") or {}
    return tuple(_node(n) for n in edits.get("deviceNodes") or [])
