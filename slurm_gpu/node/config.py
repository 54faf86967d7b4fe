"""The node configuration: one versioned YAML file, strictly checked, returned as immutable values.

The file is ``/etc/slurm-gpu/config.yaml`` unless ``SLURM_GPU_CONFIG`` or an explicit path names another.
Only when neither does and the default file is absent are the built-in defaults used: a file that was
asked for by name must exist. Unknown keys, a missing or foreign ``version`` and wrong types are errors
(``ConfigError`` naming the key and the file). Any string may contain ``{node}``, replaced by the node
name, so several ``slurmd -N`` nodes on one host can share one file.

>>> cfg = load_config(path=None, node="gpu01", environ={"SLURM_GPU_CONFIG": ""})
>>> cfg.driver.kind, cfg.state_dir, cfg.lock_timeout_s
('nvml', '/var/lib/slurm-gpu', 120.0)
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from slurm_gpu.core.errors import ConfigError
from slurm_gpu.core.vocab import ADMISSION_MODES, DEFAULT_ADMISSION
from slurm_gpu.devices.api import DRIVER_KINDS
from slurm_gpu.node import CONFIG_ENV, DEFAULT_CONFIG_PATH

__all__ = [
    "Config",
    "DriverConfig",
    "PolicyConfig",
    "SlurmConfig",
    "FeaturesConfig",
    "AdmissionConfig",
    "LogConfig",
    "MonitoringConfig",
    "ContainersConfig",
    "cdi_dir",
    "load_config",
    "parse_config",
    "node_name",
    "DEFAULT_CONFIG_PATH",
    "CONFIG_ENV",
    "CONFIG_VERSION",
]

CONFIG_VERSION = 1

# Slurm node names: letters, digits, '-', '_', '.'; never '/' since they end up in paths.
_NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
_POLICY_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}\Z")


@dataclass(frozen=True)
class DriverConfig:
    kind: str = "nvml"  # "nvml": the real GPUs; "sim": the simulated driver's state file
    sim_state: Optional[str] = None
    sim_sandbox: Optional[str] = None
    # Fault rules for the simulated driver (SLURM_GPU_SIM_FAULTS syntax), for tests of the hooks.
    sim_faults: Optional[str] = None


@dataclass(frozen=True)
class PolicyConfig:
    name: str = "default"
    max_count_per_node: int = 8


@dataclass(frozen=True)
class SlurmConfig:
    bin_dir: str = "/usr/bin"
    conf: Optional[str] = None


@dataclass(frozen=True)
class FeaturesConfig:
    publish: bool = True


@dataclass(frozen=True)
class AdmissionConfig:
    # "counts": migp counts; "features": fit features, exact with one start per pass (docs/admission.md)
    mode: str = DEFAULT_ADMISSION


@dataclass(frozen=True)
class LogConfig:
    file: Optional[str] = None


@dataclass(frozen=True)
class MonitoringConfig:
    # dcgm-exporter's --hpc-job-mapping-dir: the hooks keep <dir>/<gpu>.<gi_id> holding the owning job id
    hpc_job_mapping_dir: Optional[str] = None


@dataclass(frozen=True)
class ContainersConfig:
    """``slurm-gpu container`` and the per-job CDI spec (docs/containers.md)."""

    cdi: bool = True  # the Prolog writes <cdi_dir>/slurm-gpu-job<id>.json
    cdi_dir: Optional[str] = None  # None: /var/run/cdi (nvml), <sim_sandbox>/cdi (sim)
    docker: bool = True  # false: `slurm-gpu container docker` refuses (a root daemon outside the job)
    apptainer_bin: Optional[str] = None  # None: found on PATH
    podman_bin: Optional[str] = None
    docker_bin: Optional[str] = None
    docker_host: Optional[str] = None  # the daemon the Epilog asks for the job's leftovers (None: default)
    stop_grace_s: float = 10.0  # after a signal, how long a container may take before it is removed


@dataclass(frozen=True)
class Config:
    """The whole configuration. ``path`` is the file it came from (None: built-in defaults);
    ``node`` the node name used for ``{node}``."""

    version: int = CONFIG_VERSION
    driver: DriverConfig = field(default_factory=DriverConfig)
    state_dir: str = "/var/lib/slurm-gpu"
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)
    # A burst of Prologs on one node queues on the lock; well under the shipped PrologEpilogTimeout (300 s).
    lock_timeout_s: float = 120.0
    log: LogConfig = field(default_factory=LogConfig)
    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)
    containers: ContainersConfig = field(default_factory=ContainersConfig)
    node: str = ""
    path: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


# --- the schema: key -> kind, per section; a section is a nested dict ----------------------------------
# Kinds: "path" (absolute), "opt_path" (absolute or null), "opt_str" (a string or null), "str", "bool",
# "pos_int", "pos_number", or a tuple of allowed strings.

_SCHEMA: Dict[str, Any] = {
    "version": "version",
    "driver": {"kind": DRIVER_KINDS, "sim_state": "opt_path", "sim_sandbox": "opt_path",
               "sim_faults": "opt_str"},
    "state_dir": "path",
    "policy": {"name": "policy_name", "max_count_per_node": "pos_int"},
    "slurm": {"bin_dir": "path", "conf": "opt_path"},
    "features": {"publish": "bool"},
    "admission": {"mode": ADMISSION_MODES},
    "lock_timeout_s": "pos_number",
    "log": {"file": "opt_path"},
    "monitoring": {"hpc_job_mapping_dir": "opt_path"},
    "containers": {"cdi": "bool", "cdi_dir": "opt_path", "docker": "bool", "apptainer_bin": "opt_path",
                   "podman_bin": "opt_path", "docker_bin": "opt_path", "docker_host": "opt_str",
                   "stop_grace_s": "pos_number"},
}

DEFAULT_CDI_DIR = "/var/run/cdi"  # where podman, Docker and NVIDIA's toolkit look (with /etc/cdi)


def cdi_dir(config: Config) -> Optional[str]:
    """Where the job CDI specs go: ``containers.cdi_dir``, else /var/run/cdi on real GPUs and the
    simulated driver's sandbox otherwise (its device files are there); None when ``containers.cdi`` is off."""
    if not config.containers.cdi:
        return None
    if config.containers.cdi_dir:
        return config.containers.cdi_dir
    if config.driver.kind == "sim":
        sandbox = config.driver.sim_sandbox
        return os.path.join(sandbox, "cdi") if sandbox else None
    return DEFAULT_CDI_DIR


def node_name(node: Optional[str] = None, environ: Optional[Mapping[str, str]] = None) -> str:
    """The node name for ``{node}``: the argument, else ``SLURMD_NODENAME``, else the short hostname."""
    env = os.environ if environ is None else environ
    name = node or env.get("SLURMD_NODENAME") or ""
    if not name:
        import socket

        name = socket.gethostname().split(".")[0]
    if not _NODE_NAME.match(name):
        raise ConfigError(f"not a usable node name: {name!r}")
    return name


def _is_abs_path(value: Any) -> bool:
    return isinstance(value, str) and os.path.isabs(value) and "\0" not in value


def _is_pos_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= 1


def _is_pos_number(value: Any) -> bool:
    return not isinstance(value, (bool, str)) and isinstance(value, (int, float)) and 0 < value < float("inf")


# kind -> (accepts null, is the value valid, what it becomes, what was expected)
_KINDS: Dict[str, Tuple[bool, Callable[[Any], bool], Callable[[Any], Any], str]] = {
    "path": (False, _is_abs_path, os.path.normpath, "an absolute path"),
    "opt_path": (True, _is_abs_path, os.path.normpath, "an absolute path or null"),
    "opt_str": (True, lambda v: isinstance(v, str), str, "a string or null"),
    "policy_name": (False, lambda v: isinstance(v, str) and bool(_POLICY_NAME.match(v)), str,
                    "a policy name (lower-case letters, digits, '-', '_')"),
    "bool": (False, lambda v: isinstance(v, bool), bool, "true or false"),
    "pos_int": (False, _is_pos_int, int, "an integer >= 1"),
    "pos_number": (False, _is_pos_number, float, "a number > 0"),
}


def _check_value(kind: Any, value: Any, key: str, where: str) -> Any:
    if isinstance(kind, tuple):
        if value not in kind:
            raise ConfigError(f"{where}: {key} must be one of {', '.join(kind)}, not {value!r}")
        return value
    if kind == "version":
        if isinstance(value, bool) or value != CONFIG_VERSION:
            raise ConfigError(f"{where}: version {value!r} is not supported (this release reads version 1)")
        return value
    nullable, valid, convert, expected = _KINDS[kind]
    if value is None and nullable:
        return None
    if not valid(value):
        raise ConfigError(f"{where}: {key} must be {expected}, not {value!r}")
    return convert(value)


def _substitute(value: Any, node: str) -> Any:
    if isinstance(value, str):
        return value.replace("{node}", node)
    if isinstance(value, dict):
        return {k: _substitute(v, node) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, node) for v in value]
    return value


def _check_section(schema: Mapping[str, Any], data: Any, prefix: str, where: str) -> Dict[str, Any]:
    if not isinstance(data, dict):
        what = prefix or "the top level"
        raise ConfigError(f"{where}: {what} must be a mapping, not {type(data).__name__}")
    out: Dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in schema:
            known = ", ".join(sorted(schema))
            raise ConfigError(f"{where}: unknown key {dotted!r} (known here: {known})")
        kind = schema[key]
        if isinstance(kind, dict):
            out[key] = _check_section(kind, {} if value is None else value, dotted, where)
        else:
            out[key] = _check_value(kind, value, dotted, where)
    return out


def parse_config(
    data: Any,
    where: str = "<config>",
    node: Optional[str] = None,
    environ: Optional[Mapping[str, str]] = None,
) -> Config:
    """Check a parsed YAML document and build the ``Config`` (``where`` names the file in messages)."""
    name = node_name(node, environ)
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a mapping with 'version: 1', not {type(data).__name__}")
    if "version" not in data:
        raise ConfigError(f"{where}: 'version: 1' is required")
    checked = _check_section(_SCHEMA, _substitute(data, name), "", where)
    sections = {
        "driver": DriverConfig,
        "policy": PolicyConfig,
        "slurm": SlurmConfig,
        "features": FeaturesConfig,
        "admission": AdmissionConfig,
        "log": LogConfig,
        "monitoring": MonitoringConfig,
        "containers": ContainersConfig,
    }
    kwargs: Dict[str, Any] = {k: v for k, v in checked.items() if k not in sections}
    for key, cls in sections.items():
        kwargs[key] = cls(**checked.get(key, {}))
    config = Config(node=name, path=None if where.startswith("<") else where, **kwargs)
    if config.driver.kind == "sim" and config.driver.sim_state is None:
        raise ConfigError(f"{where}: driver.kind 'sim' needs driver.sim_state (the simulated GPUs' file)")
    return config


def _yaml_loader() -> Any:
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class StrictLoader(base):  # type: ignore[misc, valid-type]
        """Safe loading that refuses a key given twice (PyYAML would keep the last silently)."""

    def construct_mapping(loader: Any, node: Any, deep: bool = False) -> Any:
        seen = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1}")
            seen.add(key)
        return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return StrictLoader


def _config_path(path: Optional[str], environ: Mapping[str, str]) -> Tuple[str, bool]:
    """The file to read and whether it was named explicitly (argument or environment)."""
    if path:
        return os.fspath(path), True
    env_path = environ.get(CONFIG_ENV, "")
    if env_path:
        return env_path, True
    return DEFAULT_CONFIG_PATH, False


def load_config(
    path: Optional[str] = None, node: Optional[str] = None, environ: Optional[Mapping[str, str]] = None
) -> Config:
    """Read and check the configuration file (see the module docstring for which one)."""
    env = os.environ if environ is None else environ
    config_path, explicit = _config_path(path, env)
    try:
        with open(config_path, "rb") as f:
            st = os.fstat(f.fileno())
            raw = f.read()
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"configuration file {config_path} does not exist") from None
        return Config(node=node_name(node, env))
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {config_path}: {exc}") from exc
    if st.st_mode & 0o002:
        # Root acts on what this file says (paths it writes, commands it runs): no one else may edit it.
        raise ConfigError(f"{config_path} is writable by every user: refusing it (chmod o-w)")
    import yaml

    try:
        data = yaml.load(raw, Loader=_yaml_loader())  # noqa: S506 - a safe loader subclass
    except ConfigError as exc:
        raise ConfigError(f"{config_path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{config_path}: not valid YAML: {exc}") from None
    return parse_config(data, where=config_path, node=node, environ=env)
