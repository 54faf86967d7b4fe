"""Put ``layout.items`` on disk, idempotently, or take them away (``--uninstall``).

Every file is written atomically, root-owned, with its mode; a second run compares content, mode, owner
and link targets and changes nothing when they match. The result names each item's path under
``changed`` or ``unchanged`` (and ``kept`` on uninstall: the configuration, a state directory).
"""

from __future__ import annotations

import os
import shutil
from typing import Any, Dict, List, Optional, Tuple

from slurm_gpu.core.errors import BadInputError, ConfigError, SlurmGpuError
from slurm_gpu.install.layout import (
    DEFAULT_STATE_DIR,
    InstallOptions,
    Item,
    default_config,
    hook_paths,
    items,
    package_copy,
)
from slurm_gpu.state.fsutil import atomic_write

__all__ = ["install", "uninstall", "resolve_config", "slurm_conf_lines", "InstallError"]

ROOT = (0, 0)


class InstallError(SlurmGpuError):
    """Something the install needs is not there, or the install cannot write where it must."""


def resolve_config(opts: InstallOptions) -> Tuple[str, str]:
    """``(config_text, state_dir)``: the given configuration, else the installed one, else the default;
    checked by the configuration loader. ``--state-dir`` must agree with a given configuration."""
    import yaml

    from slurm_gpu.node.config import parse_config

    text, where = opts.config_text, "--config"
    if text is None and os.path.exists(opts.config_path):
        with open(opts.config_path, encoding="utf-8") as fh:
            text, where = fh.read(), opts.config_path
    if text is None:
        return default_config(opts.state_dir or DEFAULT_STATE_DIR), opts.state_dir or DEFAULT_STATE_DIR
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {exc}") from None
    parse_config(data, where=where, node="node")  # every key and type checked; {node} stands in
    state_dir = str(data.get("state_dir") or DEFAULT_STATE_DIR)
    if opts.state_dir and os.path.normpath(opts.state_dir) != os.path.normpath(state_dir):
        raise ConfigError(f"--state-dir {opts.state_dir} disagrees with state_dir {state_dir} of {where}: "
                          "give one of them")
    return text, state_dir


def _check_reachable(opts: InstallOptions) -> None:
    """The TaskProlog runs as every job's user: each directory above its copy must let them through."""
    path = os.path.abspath(package_copy(opts))
    while True:
        parent = os.path.dirname(path)
        if parent == path:
            return
        path = parent
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            continue
        if not mode & 0o001:
            raise InstallError(f"{path} is mode {mode & 0o777:04o}: job users cannot reach the TaskProlog's "
                               f"copy under it; choose another --prefix (or chmod o+x {path})")


def _stat(path: str) -> Optional[os.stat_result]:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _file_ok(path: str, mode: int, data: bytes) -> bool:
    st = _stat(path)
    if st is None or not os.path.isfile(path) or os.path.islink(path):
        return False
    if (st.st_uid, st.st_gid) != ROOT or st.st_mode & 0o7777 != mode:
        return False
    with open(path, "rb") as fh:
        return fh.read() == data


def _dir_ok(path: str, mode: int) -> bool:
    st = _stat(path)
    return (st is not None and os.path.isdir(path) and not os.path.islink(path)
            and (st.st_uid, st.st_gid) == ROOT and st.st_mode & 0o7777 == mode)


def _tree_extra(item: Item) -> List[str]:
    """Files under a tree item that the package no longer has (left from another version)."""
    wanted = {rel for rel, _ in item.files}
    extra = []
    for base, _, names in os.walk(item.path):
        for name in names:
            rel = os.path.relpath(os.path.join(base, name), item.path)
            if rel not in wanted:
                extra.append(rel)
    return sorted(extra)


def _ok(item: Item) -> bool:
    if item.kind == "file":
        return _file_ok(item.path, item.mode, item.data)
    if item.kind == "dir":
        return _dir_ok(item.path, item.mode)
    if item.kind == "link":
        return os.path.islink(item.path) and os.readlink(item.path) == item.data.decode()
    return (_dir_ok(item.path, item.mode) and not _tree_extra(item)
            and all(_file_ok(os.path.join(item.path, rel), 0o644, data) for rel, data in item.files))


def _makedirs(path: str) -> None:
    """Create missing parents root-owned 0755 (existing ones are left as they are)."""
    if not os.path.isdir(path):
        _makedirs(os.path.dirname(path))
        os.mkdir(path, 0o755)
        os.chown(path, *ROOT)
        os.chmod(path, 0o755)  # noqa: S103 - directories on every user's way to the hooks


def _put_dir(path: str, mode: int) -> None:
    _makedirs(path)
    os.chown(path, *ROOT)
    os.chmod(path, mode)  # noqa: S103 - the item's own mode (0755: the TaskProlog's way in)


def _put(item: Item) -> None:
    if item.kind == "dir":
        _put_dir(item.path, item.mode)
    elif item.kind == "file":
        _makedirs(os.path.dirname(item.path))
        atomic_write(item.path, item.data, mode=item.mode, owner=ROOT)
    elif item.kind == "link":
        _makedirs(os.path.dirname(item.path))
        if os.path.lexists(item.path):
            if os.path.isdir(item.path) and not os.path.islink(item.path):
                raise InstallError(f"{item.path} is a directory, not the link the install makes")
            os.unlink(item.path)
        os.symlink(item.data.decode(), item.path)
    else:
        _put_dir(item.path, item.mode)
        for rel in _tree_extra(item):
            os.unlink(os.path.join(item.path, rel))
        for rel, data in item.files:
            target = os.path.join(item.path, rel)
            _makedirs(os.path.dirname(target))
            if not _file_ok(target, 0o644, data):
                atomic_write(target, data, mode=0o644, owner=ROOT)


def _require_root(dry_run: bool) -> None:
    if os.geteuid() != 0 and not dry_run:
        raise InstallError("slurm-gpu node install must run as root (it writes Slurm's hooks, "
                           "/etc/slurm-gpu and systemd units); --dry-run shows what it would do")


def install(opts: InstallOptions, dry_run: bool = False) -> Dict[str, Any]:
    """Install everything; ``changed``/``unchanged`` list the items' paths."""
    _require_root(dry_run)
    for name, value in (("--prefix", opts.prefix), ("--slurm-etc", opts.slurm_etc),
                        ("--config's target", opts.config_path)):
        if not os.path.isabs(value):
            raise BadInputError(f"{name} must be an absolute path: {value}", part=value)
    config_text, state_dir = resolve_config(opts)
    if not os.path.isabs(state_dir):
        raise BadInputError(f"the state directory must be an absolute path: {state_dir}", part=state_dir)
    _check_reachable(opts)
    changed, unchanged = [], []
    for item in items(opts, config_text, state_dir):
        if _ok(item):
            unchanged.append(item.path)
            continue
        changed.append(item.path)
        if not dry_run:
            try:
                _put(item)
            except OSError as exc:
                raise InstallError(f"cannot install the {item.what} at {item.path}: {exc}") from exc
    return {"changed": changed, "unchanged": unchanged, "dry_run": dry_run, "state_dir": state_dir,
            "config": opts.config_path, "slurm_conf": slurm_conf_lines(opts),
            "next": _next_steps(opts, changed)}


def _next_steps(opts: InstallOptions, changed: List[str]) -> List[str]:
    if not opts.systemd_dir or not any(p.startswith(opts.systemd_dir + "/") for p in changed):
        return []
    steps = ["systemctl daemon-reload", "systemctl start slurm-gpu-reconcile.timer",
             "systemctl restart slurm-gpu-hooks.service   # hooks start from it (new code after an upgrade)"]
    if any(p.endswith("multi-user.target.wants/slurm-gpu-publish.service") for p in changed):
        steps.append("systemctl start slurm-gpu-publish.service   # count admission: follows the queue")
    slurmd = "systemctl restart slurmd   # picks up the drop-in (HWLOC_COMPONENTS, reconcile at start)"
    return [*steps, slurmd]


def uninstall(opts: InstallOptions, dry_run: bool = False) -> Dict[str, Any]:
    """Remove what ``install`` with the same options put there; the configuration and a non-empty state
    directory are kept (listed under ``kept``)."""
    _require_root(dry_run)
    try:
        config_text, state_dir = resolve_config(opts)
    except ConfigError:
        config_text, state_dir = default_config(DEFAULT_STATE_DIR), opts.state_dir or DEFAULT_STATE_DIR
    changed, unchanged, kept = [], [], []
    for item in reversed(items(opts, config_text, state_dir)):
        if not os.path.lexists(item.path):
            unchanged.append(item.path)
        elif item.keep and not (item.kind == "dir" and not os.listdir(item.path)):
            kept.append(item.path)
        else:
            changed.append(item.path)
            if not dry_run:
                _remove(item)
    return {"changed": changed, "unchanged": unchanged, "kept": kept, "dry_run": dry_run}


def _remove(item: Item) -> None:
    if item.kind == "tree":
        shutil.rmtree(item.path)
    elif item.kind == "dir":
        os.rmdir(item.path)
    else:
        os.unlink(item.path)
    parent = os.path.dirname(item.path)
    # Directories the install made for its own files (prolog.d/, slurmd.service.d/, lib/slurm-gpu's parent
    # stays): removed when empty, never a shared one such as /etc/slurm itself.
    if os.path.basename(parent).endswith((".d", "-gpu")) and os.path.isdir(parent) and not os.listdir(parent):
        os.rmdir(parent)


def slurm_conf_lines(opts: InstallOptions) -> List[str]:
    """The slurm.conf lines that run the installed hooks (``slurm-gpu config slurm`` writes the rest)."""
    return [f"{key}={path}" for key, path in hook_paths(opts).items()] + ["PrologFlags=Alloc,Contain"]
