"""The command lines of ``slurm-gpu container``: a task's MIG instance handed to Apptainer, podman or Docker.

The user writes the runtime's own command (``apptainer exec IMAGE -- CMD``, ``podman [GLOBAL] run [OPTS]
IMAGE -- CMD``, ``docker [GLOBAL] run [OPTS] IMAGE -- CMD``); ``container_argv`` inserts, right after the
subcommand, what exposes exactly the task's instance and keeps the job's identity:

- Apptainer (1.4 has no CDI; ``--nv`` binds every ``/dev/nvidia*``): ``--contain`` (a private /dev with
  the usual nodes only), a ``--bind`` per device node (the parent GPU, the instance's two capability
  files, ``/dev/nvidiactl``, ``/dev/nvidia-uvm*``), the driver libraries bound where ``--nv`` binds them
  (``/.singularity.d/libs``), the working directory, and both variables.
- podman (rootless, the job's user: it stays in the job's cgroup): ``--rm``, a name and label of the task,
  ``--userns=keep-id`` (the job's uid and gid inside), the instance by its CDI name (or a ``--device`` per
  node), the working directory, both variables, the driver libraries under ``/usr/local/nvidia/lib64``.
- Docker (a root daemon): the same through ``--device`` and ``--user uid:gid``.

Options that would widen what the container sees (``--privileged``, ``--device``, ``--gpus``, ``--nv``, a
bind of the host's ``/dev``...) and ones that set the two variables are refused: the container gets the
task's instance and nothing else.
Pure: no I/O here (``node.containers`` finds the devices and runs the command).

>>> dev = JobDevice(0, "MIG-1", 0, (DeviceNode("/dev/nvidia0", "/d/nvidia0", 195, 0),))
>>> task = Task("7", "0", 0, 1000, 1000, "/home/u", dev)
>>> container_argv("apptainer", "apptainer", ["exec", "img.sif", "--", "nvidia-smi", "-L"], task)[:4]
['apptainer', 'exec', '--contain', '--bind']
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

from slurm_gpu.core.cdi import ENV_KEYS, DeviceNode, JobDevice
from slurm_gpu.core.errors import BadInputError

__all__ = ["RUNTIMES", "SUBCOMMANDS", "Task", "split_command", "check_options", "container_argv",
           "container_name", "JOB_LABEL", "APPTAINER_LIBS", "OCI_LIBS"]

RUNTIMES = ("apptainer", "podman", "docker")
# Subcommands that run one container in the foreground and leave nothing behind when it ends.
SUBCOMMANDS = {"apptainer": ("exec", "run", "shell", "test"), "podman": ("run",), "docker": ("run",)}
JOB_LABEL = "io.slurm-gpu.job"
APPTAINER_LIBS = "/.singularity.d/libs"  # in LD_LIBRARY_PATH of every Apptainer container (what --nv uses)
OCI_LIBS = "/usr/local/nvidia/lib64"  # in LD_LIBRARY_PATH of CUDA and NGC images

_WIDENING = {
    "apptainer": ("--nv", "--nvccli", "--rocm", "--device", "--no-mount"),
    "podman": ("--privileged", "--device", "--gpus", "--device-cgroup-rule"),
    "docker": ("--privileged", "--device", "--gpus", "--device-cgroup-rule", "--runtime", "--env-file",
               "--cgroup-parent"),
}
_ENV_OPTIONS = ("-e", "--env")
_BIND_OPTIONS = ("-B", "--bind", "--mount", "-v", "--volume")  # a bind of the host's /dev shows every node


def _option_value(options: Sequence[str], i: int, names: Sequence[str]) -> Optional[str]:
    """The value of option ``options[i]`` if it is one of ``names`` (``--opt=v``, ``-v=x`` or ``--opt v``)."""
    name, sep, value = options[i].partition("=")
    if name not in names:
        return None
    if sep:
        return value
    return options[i + 1] if i + 1 < len(options) else None


def _bind_source(value: str) -> str:
    """``SRC[:DST[:OPTS]]``, or ``--mount type=bind,source=SRC,...`` (``src=`` too)."""
    for part in value.split(","):
        key, sep, val = part.partition("=")
        if sep and key in ("source", "src"):
            return val
    return value.split(":", 1)[0]


@dataclass(frozen=True)
class Task:
    """What one task runs with: its job, step, ``SLURM_LOCALID``, user, working directory, instance, the
    shared driver nodes, the driver libraries (host paths) and the instance's CDI name if the runtime
    should use it."""

    job_id: str
    step_id: str
    local_id: int
    uid: int
    gid: int
    cwd: str
    device: JobDevice
    shared: Tuple[DeviceNode, ...] = ()
    libraries: Tuple[str, ...] = ()
    cdi_name: Optional[str] = None
    binaries: Tuple[str, ...] = field(default=())

    @property
    def nodes(self) -> Tuple[DeviceNode, ...]:
        return self.device.nodes + self.shared


def container_name(task: Task) -> str:
    """``slurm-gpu-<job>-<step>-<localid>``: one per task, so a leftover can be found and removed."""
    step = "".join(c if c.isalnum() else "-" for c in task.step_id)
    return f"slurm-gpu-{task.job_id}-{step}-{task.local_id}"


def split_command(runtime: str, args: Sequence[str]) -> Tuple[List[str], str, List[str], List[str]]:
    """``(global options, subcommand, options and image, command)`` of a runtime command line; the
    command follows the first ``--`` after the subcommand (without one, everything after it is options,
    image and command, as the runtime itself reads them)."""
    if runtime not in RUNTIMES:
        raise BadInputError(f"unknown container runtime {runtime!r} (one of {', '.join(RUNTIMES)})",
                            part=runtime)
    allowed = SUBCOMMANDS[runtime]
    for i, arg in enumerate(args):
        if arg in allowed:
            rest = list(args[i + 1:])
            if "--" in rest:
                cut = rest.index("--")
                return list(args[:i]), arg, rest[:cut], rest[cut + 1:]
            return list(args[:i]), arg, rest, []
        if not arg.startswith("-") and (i == 0 or not args[i - 1].startswith("-")):
            break
    raise BadInputError(f"{runtime}: name one of {', '.join(allowed)} (e.g. `slurm-gpu container {runtime} "
                        f"{allowed[0]} IMAGE -- CMD`)", part=" ".join(args[:3]))


def _option_name(arg: str) -> str:
    return arg.split("=", 1)[0]


def check_options(runtime: str, options: Sequence[str], command_given: bool) -> None:
    """Refuse options that would expose more than the task's instance, or set its variables."""
    for i, arg in enumerate(options):
        name = _option_name(arg)
        if any(name == w or (w == "--device" and name.startswith("--device")) for w in _WIDENING[runtime]):
            hint = "" if command_given else " (if it belongs to the container's command, put that after --)"
            raise BadInputError(f"{runtime} option {name} is not allowed: the container gets exactly this "
                                f"task's MIG instance{hint}", part=arg)
        value = _option_value(options, i, _ENV_OPTIONS)
        if value is not None and value.split("=", 1)[0] in ENV_KEYS:
            raise BadInputError(f"{value.split('=', 1)[0]} is set to the task's MIG instance; it cannot be "
                                "given", part=arg)
        bind = _option_value(options, i, _BIND_OPTIONS)
        source = os.path.normpath(_bind_source(bind)) if bind else ""
        if source == "/dev" or source.startswith("/dev/"):
            raise BadInputError(f"{runtime}: binding {source} is not allowed: the container gets exactly "
                                "this task's MIG instance's device nodes", part=arg)


def _env_flags(flag: str, task: Task) -> List[str]:
    return [x for k, v in task.device.env().items() for x in (flag, f"{k}={v}")]


def _apptainer(task: Task) -> List[str]:
    out = ["--contain"]
    for node in task.nodes:  # Apptainer binds into its /dev only from the same path: "--bind /dev/nvidia0"
        out += ["--bind", node.path if node.host_path == node.path else f"{node.host_path}:{node.path}"]
    for lib in task.libraries:
        out += ["--bind", f"{lib}:{APPTAINER_LIBS}/{os.path.basename(lib)}:ro"]
    for binary in task.binaries:
        out += ["--bind", f"{binary}:/usr/bin/{os.path.basename(binary)}:ro"]
    out += ["--bind", task.cwd, "--pwd", task.cwd]
    return out + _env_flags("--env", task)


def _oci(runtime: str, task: Task) -> List[str]:
    out = ["--rm", "--name", container_name(task), "--label", f"{JOB_LABEL}={task.job_id}"]
    if runtime == "podman":
        out.append("--userns=keep-id")
    else:
        out += ["--user", f"{task.uid}:{task.gid}"]
    if task.cdi_name:
        out += ["--device", task.cdi_name]
        shared = task.shared if runtime == "docker" else ()  # podman takes the spec-wide nodes from CDI
        nodes: Tuple[DeviceNode, ...] = shared
    else:
        nodes = task.nodes
    for node in nodes:
        out += ["--device", f"{node.host_path}:{node.path}:rw"]
    for lib in task.libraries:
        out += ["-v", f"{lib}:{OCI_LIBS}/{os.path.basename(lib)}:ro"]
    for binary in task.binaries:
        out += ["-v", f"{binary}:/usr/bin/{os.path.basename(binary)}:ro"]
    out += ["-v", f"{task.cwd}:{task.cwd}", "-w", task.cwd]
    return out + _env_flags("-e", task)


def container_argv(runtime: str, binary: str, args: Sequence[str], task: Task) -> List[str]:
    """The full command line to run (``binary`` is the runtime's executable)."""
    globals_, sub, options, command = split_command(runtime, args)
    check_options(runtime, globals_ + options, bool(command))
    ours = _apptainer(task) if runtime == "apptainer" else _oci(runtime, task)
    return [binary, *globals_, sub, *ours, *options, *command]
