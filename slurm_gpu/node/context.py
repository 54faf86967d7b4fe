"""What the node's use cases (``node.agent.NodeAgent``) are given and give back: the job a hook runs for
(``JobContext``, from Slurm's environment), the agent's knobs (``AgentPolicy``) and what a hook did
(``Outcome``)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from slurm_gpu.core.vocab import DEFAULT_ADMISSION, HookAction
from slurm_gpu.devices import access

__all__ = ["JobContext", "AgentPolicy", "Outcome"]


@dataclass(frozen=True)
class JobContext:
    """What a hook knows about its job from Slurm's environment."""

    job_id: str
    uid: int
    gid: int

    @property
    def base_job_id(self) -> int:
        """The job id Slurm's tools answer for (an array task's ``<array job>_<task>`` without the task)."""
        return int(self.job_id.split("_")[0])

    @classmethod
    def from_env(cls, environ: Optional[Dict[str, str]] = None) -> JobContext:
        env = os.environ if environ is None else environ
        try:
            return cls(env["SLURM_JOB_ID"], int(env["SLURM_JOB_UID"]), int(env["SLURM_JOB_GID"]))
        except (KeyError, ValueError) as exc:
            from slurm_gpu.core.errors import BadInputError

            raise BadInputError(f"hook environment lacks a usable {exc}", part=str(exc)) from None


@dataclass(frozen=True)
class AgentPolicy:
    """Knobs of the agent; defaults suit production."""

    max_count_per_node: int = 8
    release_wait_s: float = 10.0  # how long the Epilog waits for processes to leave an instance
    release_poll_s: float = 0.2
    caps_dir: str = access.DEFAULT_CAPS_DIR
    # "auto": the host's hierarchy (cgroup v1 devices or v2, devices.cgroups); a path; None: no seal.
    cgroup_root: Optional[str] = "auto"
    enable_mig_mode: bool = True  # switch idle Hopper+ GPUs to MIG mode on demand
    create_busy_wait_s: float = 3.0  # retry a creation refused IN_USE (another client holds the GPU)
    create_busy_poll_s: float = 0.5
    publish_features: bool = True
    admission: str = DEFAULT_ADMISSION  # "counts": migp target layout (node.publish.CountPublisher)
    hpc_job_mapping_dir: Optional[str] = None  # dcgm-exporter's job mapping files (node.hpcjobs)
    cdi_dir: Optional[str] = None  # per-job CDI specs (node.cdi)


@dataclass
class Outcome:
    """What a hook did (``action``) and why."""

    job_id: str
    action: HookAction
    message: str = ""
    mig_uuids: Tuple[str, ...] = ()
    problems: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return dict(asdict(self), action=str(self.action))
