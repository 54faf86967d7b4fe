"""What ``slurm-gpu node install`` puts on a node, as a list of ``Item``s (nothing is written here).

With the defaults (``--prefix /usr/local``, ``--slurm-etc /etc/slurm``), for a package installed in the
virtual environment ``/opt/slurm-gpu``:

- ``/usr/local/lib/slurm-gpu/slurm_gpu/``: a copy of the package's sources, readable by every user: the
  TaskProlog runs as the job's user and must not depend on where the package was installed (a clone in
  ``/root`` is mode 0700);
- ``/usr/local/bin/slurm-gpu``, ``/usr/local/bin/slurm-gpu-hook``: links to the entry points;
- ``/etc/slurm/prolog.d/50-slurm-gpu``, ``/etc/slurm/epilog.d/50-slurm-gpu``,
  ``/etc/slurm/task-prolog.d/slurm-gpu``: the hook scripts, every path absolute (Slurm runs them without
  PATH);
- ``/etc/slurm-gpu/config.yaml`` (0644, root; checked by the configuration loader) and the state directory;
- ``/etc/systemd/system/slurm-gpu-reconcile.{service,timer}`` (enabled through ``timers.target.wants``),
  ``slurm-gpu-hooks.service`` (the hook server the Prolog and Epilog start from; enabled through
  ``multi-user.target.wants``), ``slurm-gpu-publish.service`` (``slurm-gpu publish --watch``; enabled
  when the configuration's admission is ``counts``) and the slurmd drop-in
  ``slurmd.service.d/slurm-gpu.conf``: ``HWLOC_COMPONENTS=-opencl`` and a reconcile before slurmd starts.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple

import slurm_gpu
from slurm_gpu.core.vocab import Admission
from slurm_gpu.node import DEFAULT_CONFIG_PATH

__all__ = ["InstallOptions", "Item", "items", "hook_paths", "package_copy", "default_config", "hook_command",
           "HOOK_LAUNCHER", "DEFAULT_PREFIX", "DEFAULT_SLURM_ETC", "DEFAULT_SYSTEMD_DIR", "DEFAULT_STATE_DIR",
           "UNITS"]

DEFAULT_PREFIX = "/usr/local"
DEFAULT_SLURM_ETC = "/etc/slurm"
DEFAULT_SYSTEMD_DIR = "/etc/systemd/system"
DEFAULT_STATE_DIR = "/var/lib/slurm-gpu"
SERVICE = "slurm-gpu-reconcile.service"
TIMER = "slurm-gpu-reconcile.timer"
HOOKS_SERVICE = "slurm-gpu-hooks.service"
PUBLISH_SERVICE = "slurm-gpu-publish.service"
DROP_IN = "slurmd.service.d/slurm-gpu.conf"
UNITS = (SERVICE, TIMER, HOOKS_SERVICE, PUBLISH_SERVICE, DROP_IN, "timers.target.wants/" + TIMER,
         "multi-user.target.wants/" + HOOKS_SERVICE, "multi-user.target.wants/" + PUBLISH_SERVICE)
PUBLISH_INTERVAL_S = 5  # slurm-gpu-publish: how soon new demand reaches an idle node under count admission
# Files of the package the copy carries: sources and data, never bytecode.
_COPIED_SUFFIXES = (".py", ".json", ".j2", ".lua")


@dataclass(frozen=True)
class InstallOptions:
    prefix: str = DEFAULT_PREFIX
    slurm_etc: str = DEFAULT_SLURM_ETC
    config_path: str = DEFAULT_CONFIG_PATH  # where the configuration goes
    config_text: Optional[str] = None  # None: keep the installed file, or write default_config()
    state_dir: Optional[str] = None  # None: the configuration's
    systemd_dir: Optional[str] = DEFAULT_SYSTEMD_DIR  # None: no units (the local test cluster)
    links: bool = True  # <prefix>/bin/slurm-gpu{,-hook} -> the entry points
    # Where the entry points live (default: next to this interpreter) and the TaskProlog's interpreter.
    bin_dir: str = field(default_factory=lambda: os.path.dirname(os.path.abspath(sys.executable)))
    task_python: str = field(default_factory=lambda: _system_python())
    hook_env: Tuple[Tuple[str, str], ...] = ()  # further variables the root hooks export


@dataclass(frozen=True)
class Item:
    """One thing on disk: ``kind`` is ``file`` (``data``), ``dir``, ``link`` (``data`` is the target) or
    ``tree`` (a directory whose files are exactly ``files``: relative path -> content). ``keep`` items
    stay on ``--uninstall`` (the configuration, the state directory)."""

    path: str
    kind: str
    mode: int = 0o644
    data: bytes = b""
    files: Tuple[Tuple[str, bytes], ...] = ()
    what: str = ""
    keep: bool = False


def _system_python() -> str:
    return "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else os.path.realpath(sys.executable)


def package_copy(opts: InstallOptions) -> str:
    """The directory holding the readable copy of the package (``<prefix>/lib/slurm-gpu``)."""
    return os.path.join(opts.prefix, "lib", "slurm-gpu")


def hook_paths(opts: InstallOptions) -> Dict[str, str]:
    """slurm.conf key -> the installed hook script."""
    return {
        "Prolog": os.path.join(opts.slurm_etc, "prolog.d", "50-slurm-gpu"),
        "Epilog": os.path.join(opts.slurm_etc, "epilog.d", "50-slurm-gpu"),
        "TaskProlog": os.path.join(opts.slurm_etc, "task-prolog.d", "slurm-gpu"),
    }


def default_config(state_dir: str) -> str:
    return (
        "# slurm-gpu node configuration (docs/config.md). Written by `slurm-gpu node install`.\n"
        "version: 1\n"
        "driver: {kind: nvml}\n"
        f"state_dir: {state_dir}\n"
        "policy: {name: default, max_count_per_node: 8}\n"
    )


def _package_files() -> Iterator[Tuple[str, bytes]]:
    root = os.path.dirname(os.path.abspath(slurm_gpu.__file__))
    for base, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        for name in sorted(names):
            if name.endswith(_COPIED_SUFFIXES):
                path = os.path.join(base, name)
                with open(path, "rb") as fh:
                    yield os.path.join("slurm_gpu", os.path.relpath(path, root)), fh.read()


def _entry(opts: InstallOptions, name: str) -> List[str]:
    """How to start an entry point: the console script if it exists, else this interpreter's ``-m``."""
    script = os.path.join(opts.bin_dir, name)
    if os.access(script, os.X_OK):
        return [script]
    module = "slurm_gpu.hooks.entry" if name == "slurm-gpu-hook" else "slurm_gpu"
    return [os.path.abspath(sys.executable), "-m", module]


# How Prolog and Epilog start the hook entry: this interpreter with ``-I -S -c``, not the console script
# (whose pip-made wrapper imports ``re``) and without the site module (its walk of site-packages' .pth
# files): a few milliseconds of every hook's start (bench/bench_hooks.py). ``-I``: no PYTHON* variables,
# no user site, no current directory on the path. The code puts the package's own directory first;
# ``slurm_gpu.hooks.entry`` loads the site module only when it runs the hook in its own process. (The
# directory as a JSON string: a Python literal in double quotes, so the shell's single quotes stay plain.)
HOOK_LAUNCHER = "import sys; sys.path.insert(0, {root}); from slurm_gpu.hooks.entry import launch; launch()"


def hook_command() -> List[str]:
    """The argv prefix of ``slurm-gpu-hook`` as the installed Prolog and Epilog run it."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(slurm_gpu.__file__)))
    return [os.path.abspath(sys.executable), "-I", "-S", "-c", HOOK_LAUNCHER.format(root=json.dumps(root))]


def _root_hook(opts: InstallOptions, hook: str, what: str) -> bytes:
    exports = [("SLURM_GPU_CONFIG", opts.config_path), *opts.hook_env]
    lines = [
        "#!/bin/sh",
        f"# slurm-gpu {what}. Written by `slurm-gpu node install`; Slurm runs it as root",
        "# without PATH, so every path is absolute. It exits 0 unless the node is broken.",
        "# (slurm-gpu-hook's code, started as `python -I -S -c` for a faster start than its console script)",
        *(f"export {key}={shlex.quote(value)}" for key, value in exports),
        f"exec {shlex.join([*hook_command(), hook])}",
    ]
    return ("\n".join(lines) + "\n").encode()


def _task_prolog(opts: InstallOptions, state_dir: str) -> bytes:
    script = os.path.join(package_copy(opts), "slurm_gpu", "hooks", "task_prolog.py")
    lines = [
        "#!/bin/sh",
        "# slurm-gpu TaskProlog. Written by `slurm-gpu node install`; runs as the job's user for every task",
        "# and prints `export CUDA_VISIBLE_DEVICES=MIG-...`: the system interpreter (-I -S: no site",
        "# packages, a few milliseconds) on the readable copy of the package; {node} in the state",
        "# directory is the node's name.",
        f"exec {opts.task_python} -I -S -B {script} {state_dir}",
    ]
    return ("\n".join(lines) + "\n").encode()


def _admission(config_text: str) -> str:
    """The configuration's admission mode (the text is already checked by the loader)."""
    import yaml

    from slurm_gpu.node.config import AdmissionConfig

    data = yaml.safe_load(config_text) or {}
    section = data.get("admission") if isinstance(data, dict) else None
    mode = section.get("mode") if isinstance(section, dict) else None
    return str(mode or AdmissionConfig().mode)


def _units(opts: InstallOptions, systemd_dir: str, admission: str) -> List[Item]:
    reconcile = " ".join(_entry(opts, "slurm-gpu") + ["reconcile"])
    env = f"Environment=SLURM_GPU_CONFIG={opts.config_path}\n"
    service = (
        "[Unit]\n"
        "Description=slurm-gpu reconcile: repair drift between the GPUs, the journal and Slurm\n"
        "After=network-online.target munge.service\n\n"
        "[Service]\nType=oneshot\n" + env + f"ExecStart={reconcile}\n"
    )
    timer = (
        "[Unit]\nDescription=slurm-gpu reconcile every 5 minutes\n\n"
        "[Timer]\nOnBootSec=2min\nOnUnitActiveSec=5min\n" + f"Unit={SERVICE}\n\n"
        "[Install]\nWantedBy=timers.target\n"
    )
    drop_in = (
        "# slurm-gpu: hwloc's OpenCL probe holds /dev/nvidia* open and makes NVML refuse MIG changes\n"
        "# (IN_USE); reconcile before slurmd starts, so a crash's leftovers never reach a new job.\n"
        "[Service]\nEnvironment=HWLOC_COMPONENTS=-opencl\n" + env + f"ExecStartPre=-{reconcile}\n"
    )
    server = " ".join(_entry(opts, "slurm-gpu-hook") + ["serve"])
    hooks = (
        "[Unit]\n"
        "Description=slurm-gpu hook server: each Prolog/Epilog starts from it already imported\n"
        "Before=slurmd.service\n\n"
        "[Service]\nType=simple\n" + env + f"ExecStart={server}\n"
        # /run/slurm-gpu (0700) holds the socket; a hook that runs when the server stops or restarts
        # (an upgrade) finishes in its own process; without the server, hooks run in-process.
        "RuntimeDirectory=slurm-gpu\nRuntimeDirectoryMode=0700\nKillMode=process\nRestart=on-failure\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )
    watch = " ".join(_entry(opts, "slurm-gpu") + ["publish", "--watch", str(PUBLISH_INTERVAL_S)])
    publish = (
        "[Unit]\n"
        "Description=slurm-gpu publish: follow the queue with this node's migp counts (count admission)\n"
        "After=network-online.target munge.service slurmd.service\n\n"
        "[Service]\nType=simple\n" + env + f"ExecStart={watch}\nRestart=on-failure\nRestartSec=5\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )
    wants = os.path.join(systemd_dir, "timers.target.wants")
    multi_user = os.path.join(systemd_dir, "multi-user.target.wants")
    enabled = []
    if admission == Admission.COUNTS:  # fit features are republished by the hooks: no loop needed
        enabled.append(Item(os.path.join(multi_user, PUBLISH_SERVICE), "link",
                            data=os.path.join(systemd_dir, PUBLISH_SERVICE).encode(),
                            what="publish loop enabled"))
    return enabled + [
        Item(os.path.join(systemd_dir, SERVICE), "file", 0o644, service.encode(), what="reconcile unit"),
        Item(os.path.join(systemd_dir, TIMER), "file", 0o644, timer.encode(), what="reconcile timer"),
        Item(os.path.join(systemd_dir, HOOKS_SERVICE), "file", 0o644, hooks.encode(),
             what="hook server unit"),
        Item(os.path.join(systemd_dir, PUBLISH_SERVICE), "file", 0o644, publish.encode(),
             what="publish loop unit"),
        Item(os.path.join(systemd_dir, DROP_IN), "file", 0o644, drop_in.encode(), what="slurmd drop-in"),
        Item(os.path.join(wants, TIMER), "link", data=os.path.join(systemd_dir, TIMER).encode(),
             what="timer enabled"),
        Item(os.path.join(multi_user, HOOKS_SERVICE), "link",
             data=os.path.join(systemd_dir, HOOKS_SERVICE).encode(), what="hook server enabled"),
    ]


def items(opts: InstallOptions, config_text: str, state_dir: str) -> List[Item]:
    """Everything to install, in order, for the configuration ``config_text`` (already checked)."""
    copy = package_copy(opts)
    out = [Item(copy, "tree", 0o755, files=tuple(_package_files()), what="package copy for the TaskProlog")]
    if opts.links:
        for name in ("slurm-gpu", "slurm-gpu-hook"):
            source = os.path.join(opts.bin_dir, name)
            link = os.path.join(opts.prefix, "bin", name)
            same_dir = os.path.realpath(os.path.dirname(link)) == os.path.realpath(opts.bin_dir)
            if os.access(source, os.X_OK) and not same_dir:
                out.append(Item(link, "link", data=source.encode(), what=f"{name} on PATH"))
    hooks = hook_paths(opts)
    out += [
        Item(hooks["Prolog"], "file", 0o755, _root_hook(opts, "prolog", "Prolog: create the job's MIG "
                                                       "instances"), what="Prolog"),
        Item(hooks["Epilog"], "file", 0o755, _root_hook(opts, "epilog", "Epilog: destroy the job's MIG "
                                                       "instances"), what="Epilog"),
        Item(hooks["TaskProlog"], "file", 0o755, _task_prolog(opts, state_dir), what="TaskProlog"),
        Item(opts.config_path, "file", 0o644, config_text.encode(), what="configuration", keep=True),
    ]
    if "{node}" not in state_dir:
        # The TaskProlog (job user) walks <state_dir>/tasks/<uid>/: traversable, each user's file private.
        out.append(Item(state_dir, "dir", 0o755, what="state directory", keep=True))
    if opts.systemd_dir:
        out += _units(opts, opts.systemd_dir, _admission(config_text))
    return out
