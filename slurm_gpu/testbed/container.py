"""The entry of a docker-slurm/ container: ``controller`` or ``compute <i>``.

Every container of one cluster writes the same configuration (``files.write_config`` from the same
``ClusterSpec``, read from the environment), installs the munge key, starts munged, then replaces itself by
``slurmctld -D`` or ``slurmd -D -N <node i>``. The containers share the host's network (distinct ports,
``NodeAddr=127.0.0.1``, as the local cluster does) and its host name, so ``SlurmctldHost`` matches in every
one. Slurm's cgroup plugins need privileges these containers lack (SYS_ADMIN, the host's cgroup tree
read-write): the cluster runs ``proctrack/linuxproc`` and ``task/none`` (``ClusterSpec.cgroups=False``).

Environment: ``SLURM_GPU_NODES`` (2), ``SLURM_GPU_GPUS`` (``H100-80GB:4``, per node with ``;``),
``SLURM_GPU_PORT_BASE`` (17000), ``SLURM_GPU_SCHEDULER_PARAMETERS`` (the test setting of ``ClusterSpec``),
``SLURM_GPU_MUNGE_KEY`` (a key file to install instead of the image's own), ``SLURM_GPU_ADMISSION``
(``counts``, what ``slurm-gpu config`` ships: each compute container starts its node's re-plan loop,
``slurm-gpu publish --watch``, beside slurmd, log in ``<node>/publish.log``; or ``features``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import List, Mapping, Optional

from slurm_gpu.core.errors import BadInputError, SlurmGpuError
from slurm_gpu.core.vocab import Admission
from slurm_gpu.testbed.files import wired_hooks, write_config
from slurm_gpu.testbed.local import ensure_munge, start_publisher
from slurm_gpu.testbed.spec import ClusterSpec, node_names, validate

__all__ = ["CLUSTER_DIR", "spec_from_env", "main"]

CLUSTER_DIR = "/var/lib/slurm-gpu-cluster"
MUNGE_KEY = "/etc/munge/munge.key"
_USAGE = "usage: python -m slurm_gpu.testbed.container controller | compute <i>"


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name, "") or str(default)
    if not text.isdigit():
        raise BadInputError(f"{name} must be a number, not {text!r}", part=text)
    return int(text)


def spec_from_env(env: Mapping[str, str]) -> ClusterSpec:
    """The cluster every container of one compose project agrees on."""
    base = ClusterSpec()
    spec = ClusterSpec(dir=CLUSTER_DIR, nodes=_int(env, "SLURM_GPU_NODES", base.nodes),
                       gpus=env.get("SLURM_GPU_GPUS", "") or base.gpus,
                       port_base=_int(env, "SLURM_GPU_PORT_BASE", base.port_base),
                       scheduler_parameters=env.get("SLURM_GPU_SCHEDULER_PARAMETERS",
                                                    base.scheduler_parameters),
                       cgroups=False,
                       admission=env.get("SLURM_GPU_ADMISSION", "") or base.admission)
    validate(spec)
    return spec


def _install_munge_key(path: Optional[str]) -> None:
    """A site's key (bind-mounted anywhere) copied in as munge wants it: owned by munge, 0400."""
    if not path:
        return
    if not os.path.isfile(path):
        raise BadInputError(f"SLURM_GPU_MUNGE_KEY {path} is not a file", part=path)
    subprocess.run(["install", "-o", "munge", "-g", "munge", "-m", "0400", path, MUNGE_KEY], check=True)


def command(spec: ClusterSpec, args: List[str]) -> List[str]:
    """The daemon a role runs, in the foreground."""
    if args == ["controller"]:
        return ["slurmctld", "-D", "-f", spec.conf]
    if len(args) == 2 and args[0] == "compute" and args[1].isdigit():
        names = node_names(spec)
        i = int(args[1])
        if not 1 <= i <= len(names):
            raise BadInputError(f"compute node {i} out of 1..{len(names)} (SLURM_GPU_NODES)", part=args[1])
        return ["slurmd", "-D", "-N", names[i - 1], "-f", spec.conf]
    raise BadInputError(_USAGE, part=" ".join(args))


def main(argv: Optional[List[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        spec = spec_from_env(os.environ)
        daemon = command(spec, args)
        write_config(spec)
        _install_munge_key(os.environ.get("SLURM_GPU_MUNGE_KEY"))
        ensure_munge()
        if args[0] == "compute" and spec.admission == Admission.COUNTS and wired_hooks(spec):
            # beside the slurmd this entry becomes; the container's init reaps it
            start_publisher(spec, daemon[daemon.index("-N") + 1])
    except (SlurmGpuError, subprocess.CalledProcessError, OSError) as exc:
        print(f"slurm-gpu container: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, BadInputError) else 1
    path = shutil.which(daemon[0]) or daemon[0]
    sys.stdout.flush()
    os.execv(path, daemon)  # noqa: S606 - the daemon replaces the entry, no shell
    return 1  # pragma: no cover - execv does not return


if __name__ == "__main__":
    sys.exit(main())
