"""Render Slurm configuration for MIG nodes (gres.conf, slurm.conf lines, cgroup.conf, job_submit.lua).

The data comes from an :class:`~slurm_gpu.confgen.inventory.Inventory`; the text from jinja2 templates in the
top-level ``templates/`` folder (or ``slurm_gpu/templates`` when installed as package data). Dynamic nodes
get a count-only ``mig`` gres and every fit feature they could ever have; static nodes get typed ``gpu``
gres per MIG device bound to its device files, the way Slurm's ``AutoDetect=nvml`` would.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

from slurm_gpu.core.aliases import cluster_aliases
from slurm_gpu.core.errors import BadInputError
from slurm_gpu.core.vocab import ADMISSION_MODES, DEFAULT_ADMISSION, Admission
from slurm_gpu.slurm.parse import AWAIT_MARK, expand_hostlist

if TYPE_CHECKING:
    import jinja2

    from slurm_gpu.confgen.inventory import Inventory, NodeGroup

__all__ = ["Options", "KINDS", "FILENAMES", "templates_dir", "render", "render_all", "write_files",
           "job_submit_context", "node_features"]

KINDS = ("gres", "slurm", "cgroup", "job-submit")
FILENAMES = {"gres": "gres.conf", "slurm": "slurm.conf", "cgroup": "cgroup.conf",
             "job-submit": "job_submit.lua"}
_TEMPLATES = {"gres": "gres.conf.j2", "slurm": "slurm.conf.j2", "cgroup": "cgroup.conf.j2",
              "job-submit": "job_submit.lua.j2"}
ADMIN_COMMENT_PREFIX = "slurm-gpu:"


SCHEDULER_PARAMETERS = "sched_max_job_start=1,bf_max_job_start=1,bf_interval=5"


@dataclass(frozen=True)
class Options:
    """Site choices that are not part of the inventory."""

    prolog: Optional[str] = None  # paths of the hook programs for slurm.conf; None leaves them out
    epilog: Optional[str] = None
    task_prolog: Optional[str] = None
    dev_dir: str = "/dev"  # where /dev/nvidia* live (a sandbox in the test cluster)
    cgroup_plugin: str = "autodetect"
    # slurm.conf ProctrackType/TaskPlugin: the cgroup plugins isolate jobs (ConstrainDevices); containers
    # without the privileges they need (docker-slurm/) run proctrack/linuxproc and task/none instead.
    proctrack_type: str = "proctrack/cgroup"
    task_plugin: str = "task/cgroup"
    constrain_cores: bool = True
    constrain_ram: bool = True
    header: bool = True  # a comment line naming the generator
    # "counts": typed count gres migp, exact at Slurm's full speed; "features": fit features, exact only
    # with one start per scheduling pass (docs/admission.md).
    admission: str = DEFAULT_ADMISSION
    # None: what the admission needs (features: one start per pass, SCHEDULER_PARAMETERS; counts:
    # nothing); "" leaves SchedulerParameters to the site.
    scheduler_parameters: Optional[str] = None
    # Name of the FUTURE node that keeps MIG jobs pending while every node is busy ("" for none);
    # it belongs in every partition of MIG nodes.
    placeholder: str = "slurm-gpu-placeholder"
    # slurm.conf PrologEpilogTimeout (s): well above the hooks' lock timeout plus the slowest creations.
    prolog_epilog_timeout: int = 300
    # The Slurm release the files are for ("MAJOR.MINOR"): job_submit.lua admits MIG allocations made by
    # srun itself only where that release runs their step (SRUN_ALLOCATIONS_SINCE).
    slurm_version: str = "22.05"
    # The site runs slurmdbd: AccountingStorageTRES records each MIG job's profile or slices (slurmctld
    # refuses to start with a gres TRES and no slurmdbd, so it is left out otherwise).
    accounting: bool = False




# Measured on real Slurm: 24.11 and 26.05 run the step of `srun --gres=gpu:<profile> cmd` on the rewritten
# allocation; 22.05's step asks for the gpu gres again and fails, so job_submit.lua refuses it there (and,
# untested, on 23.02-24.05), pointing to salloc or sbatch.
SRUN_ALLOCATIONS_SINCE = (24, 11)


def slurm_release(text: str) -> Tuple[int, int]:
    """``(major, minor)`` of a release such as ``24.11`` or ``24.11.1``; BadInputError otherwise."""
    parts = text.strip().split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts[:2]):
        raise BadInputError(f"not a Slurm release (MAJOR.MINOR, e.g. 24.11): {text!r}", part=text)
    return int(parts[0]), int(parts[1])


def scheduler_parameters(options: Options) -> str:
    if options.scheduler_parameters is not None:
        return options.scheduler_parameters
    return SCHEDULER_PARAMETERS if options.admission == Admission.FEATURES else ""


def templates_dir() -> Path:
    """The templates folder: next to the package first (installed), then the repository's top level."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "templates", here.parent / "templates"):
        if (candidate / "gres.conf.j2").is_file():
            return candidate
    raise BadInputError(f"no templates folder next to {here} or in {here.parent}", part=str(here))


_ENV: Dict[str, Any] = {}


def _env() -> jinja2.Environment:
    import jinja2

    folder = str(templates_dir())
    env = _ENV.get(folder)
    if env is None:
        # Not HTML: autoescaping would corrupt config syntax; values are validated names and numbers.
        env = jinja2.Environment(  # noqa: S701
            loader=jinja2.FileSystemLoader(folder),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.filters["lua"] = _lua_literal
        _ENV[folder] = env
    return env


def _lua_literal(value: Any) -> str:
    """A Python value as a Lua literal (strings, ints, bools, lists, dicts with string keys)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "{" + ", ".join(_lua_literal(v) for v in value) + "}"
    if isinstance(value, dict):
        pairs = (f"[{_lua_literal(str(k))}] = {_lua_literal(v)}" for k, v in value.items())
        return "{" + ", ".join(pairs) + "}"
    raise BadInputError(f"cannot write {value!r} as Lua", part=repr(value))


def _site_features(group: NodeGroup) -> Tuple[str, ...]:
    return tuple(group.features)


def node_features(group: NodeGroup, max_count: int) -> Tuple[str, ...]:
    """slurm.conf ``Features=`` of a node group: the site's own, then every fit feature (dynamic nodes)."""
    from slurm_gpu.core.features import all_features

    fit = all_features(group.gpus, max_count) if group.mode == "dynamic" else ()
    return tuple(group.features) + fit


def _check(inventory: Inventory) -> None:
    dynamic_names = {p.name for g in inventory.dynamic for m in g.gpus for p in m.profiles}
    for group in inventory.static:
        for device in group.static_devices:
            gres_type = group.static_type(device)
            if gres_type in dynamic_names:
                raise BadInputError(
                    f"static nodes {group.names}: gres type {gres_type!r} is also a dynamic MIG profile; "
                    f"set type_prefix so users can tell them apart", part=gres_type)


def job_submit_context(inventory: Inventory, admission: str = DEFAULT_ADMISSION,
                       slurm_version: str = "22.05") -> Dict[str, Any]:
    """What job_submit.lua needs to know about the cluster's dynamic MIG nodes."""
    from slurm_gpu.core.features import feature_token, node_max_counts
    from slurm_gpu.core.requests import MEMORY_TOLERANCE

    max_count = inventory.max_count_per_node
    profiles: Dict[str, Dict[str, Any]] = {}
    whole: List[str] = []
    memory: Dict[str, List[Dict[str, Any]]] = {}
    for group in inventory.dynamic:
        counts = node_max_counts(group.gpus)
        for model in group.gpus:
            for p in model.profiles:
                entry = profiles.setdefault(p.name, {"token": feature_token(p.name), "slices": 0, "max": 0})
                # Conservative: the most slices any model needs for this name, the most any node could hold.
                entry["slices"] = max(entry["slices"], p.memory_slices)
                entry["max"] = max(entry["max"], min(counts[p.name], max_count))
            full = model.full_profile().name
            if full not in whole:
                whole.append(full)
            if model.key not in memory:
                rows = sorted(model.base_profiles(),
                              key=lambda p: (p.usable_memory_mib, p.compute_slices, p.memory_slices))
                memory[model.key] = [
                    {"name": p.name, "mib": p.usable_memory_mib, "gb": p.name_gb} for p in rows
                ]
    static_types = sorted({g.static_type(d) for g in inventory.static for d in g.static_devices})
    return {
        "max_count": max_count,
        "profiles": dict(sorted(profiles.items())),
        "whole": whole,
        "aliases": cluster_aliases(_dynamic_models(inventory)),
        "memory": list(memory.values()),
        "tolerance": MEMORY_TOLERANCE,
        "static_types": static_types,
        "admin_comment_prefix": ADMIN_COMMENT_PREFIX,
        "await_mark": AWAIT_MARK,
        "admission": admission,
        "gres_name": "migp",
        "srun_allocations": slurm_release(slurm_version) >= SRUN_ALLOCATIONS_SINCE,
    }


def _dynamic_models(inventory: Inventory) -> List[Any]:
    """The dynamic-MIG models of the cluster, in the order job_submit.lua lists them (first seen)."""
    models: Dict[str, Any] = {}
    for group in inventory.dynamic:
        for model in group.gpus:
            models.setdefault(model.key, model)
    return list(models.values())


def _alias_types(inventory: Inventory) -> List[str]:
    """The alias types of the cluster's requests that mean other profiles on other models."""
    return sorted(set(cluster_aliases(_dynamic_models(inventory)).values()))


def migp_counts(group: NodeGroup, aliases: Sequence[str] = ()) -> Dict[str, Any]:
    """Count admission of a dynamic group: every profile's gres type, and each of the cluster's
    ``aliases`` (``core.aliases``) that means one profile on the group's GPUs, with its count on an idle
    node (the target ``core.target.choose_target`` publishes with no demand), the most each could reach,
    and the constant total (the most instances the GPUs hold) that ``PAD_TYPE`` makes up."""
    from slurm_gpu.core.features import node_max_counts
    from slurm_gpu.core.geometry import GpuState, NodeState
    from slurm_gpu.core.target import PAD_TYPE, choose_target, gres_type, node_types, total_slots

    node = NodeState.of(GpuState(i, m) for i, m in enumerate(group.gpus))
    idle = choose_target(node, {}, [])
    total = total_slots(node)
    most = node_max_counts(group.gpus)
    types = [{"type": gres_type(t), "count": idle.get(t, 0), "max": most[p]}
             for t, p in sorted(node_types(node, aliases).items())]
    return {"types": types, "total": total, "pad": total - sum(idle.values()), "pad_type": PAD_TYPE}


def _context(inventory: Inventory, options: Options) -> Dict[str, Any]:
    from slurm_gpu import __version__

    if options.admission not in ADMISSION_MODES:
        raise BadInputError(f"admission must be one of {', '.join(ADMISSION_MODES)}, "
                            f"not {options.admission!r}", part=options.admission)
    counts = options.admission == Admission.COUNTS
    aliases = _alias_types(inventory)
    groups = []
    for g in inventory.groups:
        groups.append({
            "g": g,
            "features": _site_features(g) if counts else node_features(g, inventory.max_count_per_node),
            "migp": migp_counts(g, aliases) if counts and g.mode == "dynamic" else None,
            "static": [{"type": g.static_type(d), "files": d.files(g.dev_dir or options.dev_dir)}
                       for d in g.static_devices],
        })
    return {
        "version": __version__,
        "inventory": inventory,
        "groups": groups,
        "placeholders": _placeholders(inventory, options),
        "options": options,
        "has_dynamic": bool(inventory.dynamic),
        "has_static": bool(inventory.static),
        "counts": counts,
        "scheduler_parameters": scheduler_parameters(options),
        "accounting_tres": accounting_tres(groups, counts) if options.accounting else [],
    }


def accounting_tres(groups: List[Dict[str, Any]], counts: bool) -> List[str]:
    """The gres that slurmdbd records per job (``AccountingStorageTRES``): under count admission every
    migp type, so ``sacct``'s AllocTRES names each job's profile (``gres/migp:1g.10gb=1``); under fit
    features the mig slices (the profile is in the job's AdminComment, ``slurm-gpu:gpu:<profile>:<N>``)."""
    dynamic = [item for item in groups if item["g"].mode == "dynamic"]
    if not dynamic:
        return []
    if not counts:
        return ["gres/mig"]
    types = {t["type"] for item in dynamic for t in item["migp"]["types"]}
    return ["gres/migp", *(f"gres/migp:{t}" for t in sorted(types))]


def _placeholders(inventory: Inventory, options: Options) -> List[Dict[str, Any]]:
    """``State=FUTURE`` nodes, one line per dynamic group, each with the group's own features and its
    most: what keeps a MIG job pending instead of refused while every node that could run it is busy.

    slurmctld refuses a job at submit that no node could run *now* ("Requested node configuration is not
    available", measured on 22.05): under fit features when every fit feature is inactive, under count
    admission when no node publishes the job's type now, and in both when the job also asks for a site
    feature (``--constraint=ib``) that only busy nodes have. A FUTURE node is never scheduled but counts
    as a place the job could run, so such jobs pend. Per group, so that a constraint no real node meets
    (two groups' features together) is still refused.
    """
    dynamic = [g for g in inventory.groups if g.mode == "dynamic"]
    if not dynamic or not options.placeholder:
        return []
    aliases = _alias_types(inventory)
    counts = options.admission == Admission.COUNTS
    total = sum(len(expand_hostlist(g.names)) for g in dynamic) if counts else len(dynamic)
    lines: List[Dict[str, Any]] = []
    first = 1
    for g in dynamic:
        if counts:
            # Every migp type at its most; one placeholder per MIG node: `-N 2` with no node publishing
            # its type is refused unless two nodes could host it.
            count = len(expand_hostlist(g.names))
            features: List[str] = list(_site_features(g))
            most = migp_counts(g, aliases)["types"]
            gres = ",".join(f"migp:{t['type']}:{t['max']}" for t in most)
        else:
            count = 1
            features = list(node_features(g, inventory.max_count_per_node))
            gres = f"mig:{g.mig_count}"
        last = first + count - 1
        # The names earlier releases gave (a partition's Nodes= names them): a single placeholder keeps the
        # bare name, counts' one-per-node placeholders stay numbered 1..N over all groups.
        if total == 1 or (not counts and first == 1):
            name = options.placeholder
        elif count > 1:
            name = f"{options.placeholder}[{first}-{last}]"
        else:
            name = f"{options.placeholder}{first}"
        lines.append({"name": name, "features": features, "gres": gres, "cpus": g.cpus or 1,
                      "memory_mib": g.memory_mib or 1})
        first = last + 1
    return lines


def render(kind: str, inventory: Inventory, options: Optional[Options] = None) -> str:
    """One file's text; ``kind`` is one of :data:`KINDS`."""
    if kind not in _TEMPLATES:
        raise BadInputError(f"unknown config kind {kind!r} (one of {', '.join(KINDS)})", part=kind)
    options = options or Options()
    _check(inventory)
    context = _context(inventory, options)
    if kind == "job-submit":
        context["js"] = job_submit_context(inventory, options.admission, options.slurm_version)
    return _env().get_template(_TEMPLATES[kind]).render(**context)


def render_all(inventory: Inventory, options: Optional[Options] = None) -> Dict[str, str]:
    """File name -> text for every kind."""
    return {FILENAMES[k]: render(k, inventory, options) for k in KINDS}


def write_files(files: Dict[str, str], out_dir: str, mode: int = 0o644) -> List[str]:
    """Write each file atomically (temporary file + rename) into ``out_dir``; returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for name, text in files.items():
        path = os.path.join(out_dir, name)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=out_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.chmod(tmp, mode)  # Slurm daemons read these as the slurm user
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        written.append(path)
    return written
