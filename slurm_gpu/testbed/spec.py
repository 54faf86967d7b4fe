"""What a local test cluster is: ``ClusterSpec``, its node names, and the spec saved in its directory.

Everything of one cluster lives under ``dir``; ports come from ``port_base`` (slurmctld) and
``port_base + i`` (node i), so clusters with other directories and port bases run side by side.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

from slurm_gpu.confgen.inventory import MODES, gpu_models
from slurm_gpu.core.errors import BadInputError
from slurm_gpu.core.vocab import ADMISSION_MODES, DEFAULT_ADMISSION
from slurm_gpu.state.fsutil import atomic_write

__all__ = ["ClusterSpec", "node_names", "validate", "save_spec", "load_spec", "DEFAULT_DIR",
           "DEFAULT_PORT_BASE", "TEST_SCHEDULER_PARAMETERS", "SPEC_FILE", "HOST_SLURM", "SLURM_VERSIONS"]

DEFAULT_DIR = "/var/tmp/slurm-gpu-cluster"
DEFAULT_PORT_BASE = 17000
SPEC_FILE = "cluster.json"
# Quick passes for the tests, with no start limit: the one-start-per-pass setting slurm-gpu ships
# (confgen.SCHEDULER_PARAMETERS) starts ~0.5 jobs/s, too slow for the 300-job trace test; races it allows
# are requeued by the prolog (docs/admission.md, "Scheduling passes and races").
TEST_SCHEDULER_PARAMETERS = "bf_interval=1,sched_min_interval=100000,default_queue_depth=200"
# The host's Slurm (Debian 12); the others run in Debian roots (slurm_gpu.testbed.rooted).
HOST_SLURM = "22.05"
SLURM_VERSIONS = ("22.05", "24.11", "26.05")


@dataclass(frozen=True)
class ClusterSpec:
    dir: str = DEFAULT_DIR
    nodes: int = 2
    gpus: str = "H100-80GB:4"
    port_base: int = DEFAULT_PORT_BASE
    cpus: int = 8
    memory_mib: int = 16000
    max_count_per_node: int = 8
    mode: str = "dynamic"  # static: a fixed MIG layout made through the driver, typed gpu gres (no hooks)
    layout: str = ""  # static: profiles made on every GPU, planned, e.g. "3g.40gb,2g.20gb,1g.10gb"
    hooks: Optional[bool] = None  # None: wired on dynamic clusters when slurm_gpu.cli.hooks exists
    # slurm.conf SchedulerParameters (empty: Slurm's defaults); see docs/admission.md on passes and races
    scheduler_parameters: str = TEST_SCHEDULER_PARAMETERS
    slurm: str = HOST_SLURM  # Slurm version: the host's, or one of a Debian root (SLURM_VERSIONS)
    # False: proctrack/linuxproc and task/none, for containers that lack the privileges of Slurm's cgroup
    # plugins (docker-slurm/); jobs then get no device cgroup (docs/cluster.md)
    cgroups: bool = True
    admission: str = DEFAULT_ADMISSION  # counts: a `slurm-gpu publish --watch` per node; or "features"
    publish_interval_s: float = 2.0
    # A real slurmdbd over the cluster's own MariaDB (slurm_gpu.testbed.accounting): sacct works
    accounting: bool = False
    # Site node features (slurm.conf Features=), per node split by ';' like gpus, e.g. "ib;" (node 1 only)
    features: str = ""

    @property
    def name(self) -> str:
        return f"sg{self.port_base}"

    @property
    def conf(self) -> str:
        return os.path.join(self.dir, "etc", "slurm.conf")

    def env(self) -> Dict[str, str]:
        env = dict(os.environ)
        env["SLURM_CONF"] = self.conf
        return env

    def node_gpus(self, i: int) -> str:
        """GPUs of node ``i`` (1-based): ``gpus`` is one spec for all, or per-node specs split by ';'
        (node i takes entry i, cycling), e.g. ``H100-80GB:1;A100-40GB:1``."""
        parts = [p.strip() for p in self.gpus.split(";") if p.strip()]
        return parts[(i - 1) % len(parts)]

    def node_features(self, i: int) -> Tuple[str, ...]:
        """Site features of node ``i`` (1-based): ``features`` split by ';' per node (cycling), ',' within."""
        parts = self.features.split(";") if self.features else [""]
        return tuple(f.strip() for f in parts[(i - 1) % len(parts)].split(",") if f.strip())


def node_names(spec: ClusterSpec) -> List[str]:
    # Names carry the port base: slurmd's cgroups are named after the node, shared across clusters.
    return [f"{spec.name}n{i}" for i in range(1, spec.nodes + 1)]


def dbd_port(spec: ClusterSpec) -> int:
    """slurmdbd's port: after the nodes' (``port_base + i``)."""
    return spec.port_base + spec.nodes + 1


def db_port(spec: ClusterSpec) -> int:
    """The accounting's MariaDB port (127.0.0.1 only)."""
    return spec.port_base + spec.nodes + 2


def validate(spec: ClusterSpec) -> None:
    """BadInputError (or UnknownModelError) for a spec that cannot start, before anything starts."""
    if not 1 <= spec.nodes <= 64:
        raise BadInputError(f"--nodes must be 1..64, not {spec.nodes}", part=str(spec.nodes))
    if not 1024 <= spec.port_base <= 65535 - spec.nodes - 2:
        raise BadInputError(f"--port-base {spec.port_base} out of range", part=str(spec.port_base))
    if not os.path.isabs(spec.dir):
        raise BadInputError(f"--dir must be an absolute path: {spec.dir}", part=spec.dir)
    if spec.slurm not in SLURM_VERSIONS:
        raise BadInputError(f"--slurm must be one of {', '.join(SLURM_VERSIONS)}, not {spec.slurm!r}",
                            part=spec.slurm)
    if spec.admission not in ADMISSION_MODES:
        raise BadInputError(f"--admission must be one of {', '.join(ADMISSION_MODES)}, "
                            f"not {spec.admission!r}", part=spec.admission)
    if spec.mode not in MODES:
        raise BadInputError(f"--mode must be {' or '.join(MODES)}, not {spec.mode!r}", part=spec.mode)
    if (spec.mode == "static") != bool(spec.layout):
        raise BadInputError("--layout goes with --mode static, and static needs a layout", part=spec.layout)
    if spec.accounting and spec.slurm != HOST_SLURM:
        raise BadInputError(f"--accounting runs on the host's Slurm {HOST_SLURM} only, not {spec.slurm}",
                            part=spec.slurm)
    for i in range(1, spec.nodes + 1):
        gpu_models(spec.node_gpus(i))  # unknown models fail before anything starts


def save_spec(spec: ClusterSpec) -> str:
    """Write the spec into its directory (for ``down``/``status`` without options); returns the path."""
    path = os.path.join(spec.dir, SPEC_FILE)
    atomic_write(path, json.dumps(asdict(spec), indent=2) + "\n", mode=0o644)
    return path


def load_spec(directory: str) -> ClusterSpec:
    """The spec a cluster in ``directory`` was started with (for ``down``/``status`` without options)."""
    path = os.path.join(directory, SPEC_FILE)
    try:
        with open(path, encoding="utf-8") as fh:
            return ClusterSpec(**json.load(fh))
    except FileNotFoundError:
        return ClusterSpec(dir=directory)
    except (OSError, ValueError, TypeError) as exc:
        raise BadInputError(f"cannot read {path}: {exc}", part=path) from exc
