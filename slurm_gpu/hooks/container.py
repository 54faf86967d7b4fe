"""``slurm-gpu container`` without click: ``python3 -m slurm_gpu.hooks.container [--dry-run] [--json]
RUNTIME ARGS...``, for job steps whose Python has only the standard library and PyYAML (a Debian node's
system python). ``slurm-gpu container`` (the CLI) runs the same ``execute``. See docs/containers.md.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Optional, Sequence

__all__ = ["execute", "main", "load_job_config", "USAGE"]

USAGE = "usage: python3 -m slurm_gpu.hooks.container [--dry-run] [--json] apptainer|podman|docker ARGS..."
SCHEMA = "slurm-gpu.container/v1"


def load_job_config(config_path: Optional[str] = None) -> Any:
    """The node's configuration, only from a file root owns (it decides what a container may get)."""
    from slurm_gpu.core.errors import ConfigError
    from slurm_gpu.node import CONFIG_ENV, DEFAULT_CONFIG_PATH
    from slurm_gpu.node.config import load_config

    path = config_path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH
    if os.geteuid() != 0 and os.path.exists(path):
        st = os.stat(path)
        if st.st_uid != 0 or st.st_mode & 0o022:
            raise ConfigError(f"{path} is not root's own file (owner {st.st_uid}, mode "
                              f"{st.st_mode & 0o777:o}): containers only take a configuration root controls")
    return load_config(path if os.path.exists(path) or config_path else None,
                       node=os.environ.get("SLURMD_NODENAME") or None)


def _cgroup_text() -> str:
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as fh:
            return fh.read()
    except OSError:
        return ""


def execute(runtime: str, args: Sequence[str], dry_run: bool = False, as_json: bool = False,
            config_path: Optional[str] = None) -> int:
    """Run (or with ``dry_run``/``as_json`` print) the task's container; returns the exit status."""
    from slurm_gpu.node.containers import build, run_container

    config = load_job_config(config_path)
    argv, task, _ = build(runtime, args, config, os.environ, _cgroup_text())
    if dry_run or as_json:
        payload = {"schema": SCHEMA, "runtime": runtime, "argv": argv, "job_id": task.job_id,
                   "local_id": task.local_id, "mig_uuid": task.device.mig_uuid, "cdi_name": task.cdi_name,
                   "devices": [n.path for n in task.nodes]}
        sys.stdout.write((json.dumps(payload, indent=2) if as_json else " ".join(argv)) + "\n")
        return 0
    sys.stdout.flush()
    return run_container(argv, runtime, task, config.containers.stop_grace_s, args)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from slurm_gpu.core.errors import EXIT_USAGE, SlurmGpuError

    args = list(sys.argv[1:] if argv is None else argv)
    flags = {"--dry-run": False, "--json": False}
    while args and args[0] in flags:
        flags[args.pop(0)] = True
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write(USAGE + "\n")
        return 0 if args else EXIT_USAGE
    try:
        return execute(args[0], args[1:], flags["--dry-run"], flags["--json"])
    except SlurmGpuError as exc:
        sys.stderr.write(f"slurm-gpu container: error: {exc}\n")
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
