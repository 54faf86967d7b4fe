"""``slurm-gpu container``: run one task's container on its MIG instance (inside a Slurm job step).

Which job: ``SLURM_JOB_ID``, checked against the kernel's word (``/proc/self/cgroup`` names the job's
cgroup, which no user can move out of or into another's); a process outside any job cgroup may use
Apptainer or podman (device access still rests on the job's cgroup), never Docker, whose root daemon
is outside the job. Which instance: the job's CDI spec (root-written by the Prolog, ``node.cdi``), entry
``SLURM_LOCALID mod n`` as the TaskProlog assigns it. The command is then built by ``core.containers``.

The runtime runs as a child: every signal Slurm sends the task (scancel's SIGTERM, srun's SIGINT,
``--signal``) is passed on; podman and Docker containers are removed (``rm -f``) when they outlive a
signal by ``containers.stop_grace_s`` (keep it below Slurm's KillWait), so no container is left behind.
The exit status is the container's; a runtime killed by a signal kills this process with the same signal.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import time
from typing import Any, List, Mapping, Optional, Sequence, Tuple

from slurm_gpu.core.cdi import cdi_name, parse_job_spec, shared_nodes, spec_file_name
from slurm_gpu.core.containers import Task, container_argv, container_name, split_command
from slurm_gpu.core.errors import BadInputError, ConfigError, SlurmGpuError, StateError

__all__ = ["ContainerRefused", "job_of_cgroup", "resolve_task", "driver_libraries", "parse_ldconfig",
           "run_container", "build", "remove_docker_leftovers", "PODMAN_CDI_DIRS", "FORWARDED"]

# podman's default CDI directories (containers/common); a spec elsewhere goes through --device per node.
PODMAN_CDI_DIRS = ("/etc/cdi", "/var/run/cdi", "/run/cdi")
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
             signal.SIGCONT)
# What Apptainer's nvliblist.conf lists (driver libraries a CUDA program loads), matched by name prefix.
DRIVER_LIBS = ("libcuda.so", "libcudadebugger.so", "libnvidia-ml.so", "libnvidia-ptxjitcompiler.so",
               "libnvidia-nvvm.so", "libnvidia-opencl.so", "libnvidia-allocator.so", "libnvidia-cfg.so",
               "libnvidia-gpucomp.so", "libnvcuvid.so", "libnvidia-encode.so", "libnvidia-opticalflow.so")
DRIVER_BINARIES = ("nvidia-smi", "nvidia-debugdump", "nvidia-cuda-mps-control", "nvidia-cuda-mps-server")
NVLIBLIST = "/etc/apptainer/nvliblist.conf"


class ContainerRefused(BadInputError):
    """The container cannot run here (outside a MIG job, a forbidden runtime or option)."""


def job_of_cgroup(text: str) -> Tuple[Optional[str], Optional[int]]:
    """``(job id, uid)`` from ``/proc/self/cgroup``: Slurm's ``.../uid_<uid>/job_<id>/step_...`` (v1) or
    ``.../job_<id>/step_...`` (v2); ``(None, None)`` outside any job cgroup.

    >>> job_of_cgroup("5:devices:/slurm_n1/uid_1001/job_42/step_0/task_0\\n")
    ('42', 1001)
    """
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        uid: Optional[int] = None
        for comp in parts[2].split("/"):
            if comp.startswith("uid_") and comp[4:].isdigit():
                uid = int(comp[4:])
            if comp.startswith("job_") and comp[4:].isdigit():
                return comp[4:], uid
    return None, None


def parse_ldconfig(text: str, names: Sequence[str] = DRIVER_LIBS) -> Tuple[str, ...]:
    """Host paths of the driver libraries in ``ldconfig -p`` output (64-bit, one per soname).

    >>> parse_ldconfig("\\tlibcuda.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so.1\\n")
    ('/usr/lib/x86_64-linux-gnu/libcuda.so.1',)
    """
    found = {}
    for line in text.splitlines():
        left, sep, path = line.strip().partition(" => ")
        if not sep:
            continue
        soname, _, arch = left.partition(" ")
        if "x86-64" not in arch and "AArch64" not in arch:
            continue
        if any(soname.startswith(n) for n in names) and soname not in found:
            found[soname] = path.strip()
    return tuple(sorted(found.values()))


def _nvliblist(path: str = NVLIBLIST) -> Tuple[str, ...]:
    try:
        with open(path, encoding="utf-8") as fh:
            names = [ln.strip() for ln in fh if ln.strip().endswith(".so") and not ln.startswith("#")]
    except OSError:
        return DRIVER_LIBS
    return tuple(names) or DRIVER_LIBS


def driver_libraries() -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """The node's NVIDIA driver libraries and tools (what Apptainer's ``--nv`` binds); empty without one."""
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    try:
        out = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    binaries = tuple(p for p in (shutil.which(b) for b in DRIVER_BINARIES) if p)
    return parse_ldconfig(out, _nvliblist()), binaries


def _read_spec(path: str) -> Any:
    """The job's spec, only if root wrote it and nobody else can change it."""
    try:
        with open(path, encoding="utf-8") as fh:
            st = os.fstat(fh.fileno())
            text = fh.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"cannot read the job's CDI spec {path}: {exc}") from exc
    if st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise StateError(f"{path} is not root's own file: refusing it")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise StateError(f"{path}: not JSON: {exc}") from exc


def _job_id(runtime: str, environ: Mapping[str, str], cgroup_text: str) -> str:
    from slurm_gpu.state.task_env import is_job_id

    job_id = environ.get("SLURM_JOB_ID", "")
    if not is_job_id(job_id):
        raise ContainerRefused("not inside a Slurm job (no SLURM_JOB_ID): run it in a job step, e.g. "
                               "`srun slurm-gpu container ...` in a job with --gres=gpu:<profile>")
    cg_job, cg_uid = job_of_cgroup(cgroup_text)
    if cg_job is not None and (cg_job != job_id.split("_")[0] or cg_uid not in (None, os.getuid())):
        raise ContainerRefused(f"SLURM_JOB_ID={job_id} is not the job this process runs in (job {cg_job})")
    if cg_job is None and runtime == "docker":
        raise ContainerRefused("docker: this process is in no Slurm job cgroup, so its job cannot be proven")
    return job_id


def resolve_task(runtime: str, config: Any, environ: Mapping[str, str], cgroup_text: str,
                 libraries: Tuple[Tuple[str, ...], Tuple[str, ...]] = ((), ())) -> Task:
    """The task's container view: its job (proven), its instance from the job's CDI spec, its user."""
    from slurm_gpu.node.config import cdi_dir

    if runtime == "docker" and not config.containers.docker:
        raise ContainerRefused("docker is forbidden on this cluster (containers.docker: false); use "
                               "`slurm-gpu container podman run ...` (rootless) or apptainer")
    job_id = _job_id(runtime, environ, cgroup_text)
    directory = cdi_dir(config)
    if not directory:
        raise ConfigError("containers.cdi is off: the Prolog leaves no device list for containers")
    spec = _read_spec(os.path.join(directory, spec_file_name(job_id.split("_")[0])))
    if spec is None:
        raise ContainerRefused(f"job {job_id} has no MIG instance on {config.node}: submit it with "
                               "--gres=gpu:<profile> (e.g. --gres=gpu:1g.10gb)")
    devices = parse_job_spec(spec, job_id.split("_")[0])
    if not devices:
        raise StateError(f"the CDI spec of job {job_id} lists no instance")
    local = environ.get("SLURM_LOCALID", "0")
    local_id = int(local) if local.isascii() and local.isdigit() else 0
    dev = devices[local_id % len(devices)]
    # podman takes the CDI name where it reads the spec and the nodes are where the spec says they go
    # (rootless runc binds a device from its container path: a sandbox's nodes need --device host:path)
    use_cdi = (runtime == "podman" and os.path.normpath(directory) in PODMAN_CDI_DIRS
               and all(n.host_path == n.path for n in dev.nodes + shared_nodes(spec)))
    return Task(job_id=job_id.split("_")[0], step_id=environ.get("SLURM_STEP_ID", "batch"), local_id=local_id,
                uid=os.getuid(), gid=os.getgid(), cwd=os.getcwd(), device=dev, shared=shared_nodes(spec),
                libraries=libraries[0], binaries=libraries[1],
                cdi_name=cdi_name(job_id.split("_")[0], dev) if use_cdi else None)


def _binary(runtime: str, config: Any) -> str:
    path = getattr(config.containers, f"{runtime}_bin") or shutil.which(runtime)
    if not path:
        raise ConfigError(f"{runtime} is not installed on this node (or set containers.{runtime}_bin)")
    return str(path)


def build(runtime: str, args: Sequence[str], config: Any, environ: Mapping[str, str],
          cgroup_text: str) -> Tuple[List[str], Task, str]:
    """``(command line, task, runtime binary)`` for the runtime command ``args``."""
    split_command(runtime, args)  # a bad command line fails before anything is read
    binary = _binary(runtime, config)
    task = resolve_task(runtime, config, environ, cgroup_text, driver_libraries())
    return container_argv(runtime, binary, args, task), task, binary


def _remove(binary: str, globals_: Sequence[str], name: str, runtime: str) -> None:
    """``rm -f`` the task's container (it outlived a signal, or the runtime died before removing it); the
    grace is over, so podman is told not to wait its own 10 s stop timeout."""
    now = ["-t", "0"] if runtime == "podman" else []
    try:
        subprocess.run([binary, *globals_, "rm", "-f", *now, name], capture_output=True, timeout=30,
                       check=False)
    except (OSError, subprocess.TimeoutExpired):
        pass


def run_container(argv: Sequence[str], runtime: str, task: Task, grace_s: float,
                  args: Sequence[str] = ()) -> int:
    """Run the runtime in the foreground, pass signals on, clean up; returns the exit status."""
    binary = argv[0]
    globals_ = split_command(runtime, args)[0] if args else []
    signalled: List[float] = []
    children: List[subprocess.Popen[bytes]] = []

    def forward(signum: int, _frame: Any) -> None:
        if signum != signal.SIGCONT and not signalled:
            signalled.append(time.monotonic())
        for child in children:
            try:
                child.send_signal(signum)
            except ProcessLookupError:
                pass

    # Handlers first: a signal that comes while the runtime starts is still passed on (the runtime
    # starts with the default dispositions, as exec resets caught signals).
    old = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        try:
            children.append(subprocess.Popen(list(argv)))
        except OSError as exc:
            raise SlurmGpuError(f"cannot start {binary}: {exc}") from exc
        if signalled:
            children[0].send_signal(signal.SIGTERM)
        code = _wait(children[0], runtime, binary, globals_, task, grace_s, signalled)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if code < 0:  # the runtime died of a signal: so does this process, as Slurm should see it
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        return 128 - code
    return code


def _wait(child: subprocess.Popen[bytes], runtime: str, binary: str, globals_: Sequence[str], task: Task,
          grace_s: float, signalled: List[float]) -> int:
    removed = runtime == "apptainer"  # its container is the runtime's own process tree: nothing to remove
    while True:
        try:
            code = child.wait(timeout=0.1)
        except subprocess.TimeoutExpired:
            code = None
        if code is not None:
            if signalled and not removed:
                # in case the runtime died before its --rm
                _remove(binary, globals_, container_name(task), runtime)
            return code
        if signalled and not removed and time.monotonic() - signalled[0] > grace_s:
            _remove(binary, globals_, container_name(task), runtime)
            removed = True


def remove_docker_leftovers(config: Any, job_id: str, timeout: float = 10.0) -> List[str]:
    """The Epilog's sweep (root): remove the job's Docker containers (label ``io.slurm-gpu.job``) that
    outlived it, e.g. when ``slurm-gpu container`` was killed before it could; returns their ids. Nothing
    happens where Docker is forbidden or not installed, or its daemon does not answer."""
    from slurm_gpu.core.containers import JOB_LABEL
    from slurm_gpu.state.task_env import is_job_id

    binary = config.containers.docker_bin or shutil.which("docker")
    if not config.containers.docker or not binary or not is_job_id(job_id):
        return []
    host = config.containers.docker_host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if host.startswith("unix://") and not os.path.exists(host[len("unix://"):]):
        return []  # no daemon here: no Epilog pays for asking
    try:
        found = subprocess.run([binary, "-H", host, "ps", "-aq", "--filter", f"label={JOB_LABEL}={job_id}"],
                               capture_output=True, text=True, timeout=timeout, check=False)
        ids = found.stdout.split() if found.returncode == 0 else []
        if ids:
            subprocess.run([binary, "-H", host, "rm", "-f", *ids], capture_output=True, timeout=timeout,
                           check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return ids
