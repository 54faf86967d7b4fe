from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap

import pytest

from slurm_gpu.core.errors import ConfigError
from slurm_gpu.node.config import DEFAULT_CONFIG_PATH, Config, load_config, node_name, parse_config

FULL = """\
version: 1
driver:
  kind: sim
  sim_state: /var/lib/slurm-gpu-sim/{node}/state.json
  sim_sandbox: /var/lib/slurm-gpu-sim/{node}/sandbox
state_dir: /var/lib/slurm-gpu/{node}
policy:
  name: default
  max_count_per_node: 4
slurm:
  bin_dir: /opt/slurm/bin
  conf: /etc/slurm/slurm.conf
features:
  publish: false
lock_timeout_s: 12.5
log:
  file: /var/log/slurm-gpu/{node}.log
"""


def _write(tmp_path, text, name="config.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_full_file_with_node_substitution(tmp_path):
    path = _write(tmp_path, FULL)
    cfg = load_config(path, node="gpu07")
    assert cfg.path == path and cfg.node == "gpu07"
    assert cfg.driver.kind == "sim"
    assert cfg.driver.sim_state == "/var/lib/slurm-gpu-sim/gpu07/state.json"
    assert cfg.driver.sim_sandbox == "/var/lib/slurm-gpu-sim/gpu07/sandbox"
    assert cfg.state_dir == "/var/lib/slurm-gpu/gpu07"
    assert (cfg.policy.name, cfg.policy.max_count_per_node) == ("default", 4)
    assert (cfg.slurm.bin_dir, cfg.slurm.conf) == ("/opt/slurm/bin", "/etc/slurm/slurm.conf")
    assert cfg.features.publish is False
    assert cfg.lock_timeout_s == 12.5
    assert cfg.log.file == "/var/log/slurm-gpu/gpu07.log"
    # two slurmd -N nodes on one host share the file but get their own paths
    assert load_config(path, node="gpu08").state_dir == "/var/lib/slurm-gpu/gpu08"


def test_minimal_file_gives_defaults_and_config_is_immutable(tmp_path):
    cfg = load_config(_write(tmp_path, "version: 1\n"), node="n1")
    assert dataclasses.replace(cfg, path=None) == Config(node="n1")
    assert cfg.driver.kind == "nvml" and cfg.features.publish is True and cfg.slurm.conf is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.state_dir = "/tmp"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.driver.kind = "sim"  # type: ignore[misc]
    assert cfg.to_dict()["driver"] == {"kind": "nvml", "sim_state": None, "sim_sandbox": None,
                                       "sim_faults": None}


def test_empty_sections_are_allowed(tmp_path):
    cfg = load_config(_write(tmp_path, "version: 1\nlog:\nslurm: {}\n"), node="n1")
    assert cfg.log.file is None and cfg.slurm.bin_dir == "/usr/bin"


@pytest.mark.parametrize(
    "text, message",
    [
        ("version: 1\nstate_dri: /x\n", "unknown key 'state_dri'"),
        ("version: 1\ndriver:\n  kind: nvml\n  simstate: /x\n", "unknown key 'driver.simstate'"),
        ("driver: {kind: nvml}\n", "'version: 1' is required"),
        ("version: 2\n", "version 2 is not supported"),
        ("version: '1'\n", "version '1' is not supported"),
        ("version: true\n", "version True is not supported"),
        ("", "must be a mapping"),
        ("- version: 1\n", "must be a mapping"),
        ("version: 1\ndriver: nvml\n", "driver must be a mapping"),
        ("version: 1\ndriver: {kind: cuda}\n", "driver.kind must be one of nvml, sim"),
        ("version: 1\ndriver: {kind: sim}\n", "needs driver.sim_state"),
        ("version: 1\nstate_dir: relative/dir\n", "state_dir must be an absolute path"),
        ("version: 1\nstate_dir: null\n", "state_dir must be an absolute path, not None"),
        ("version: 1\nslurm: {conf: 3}\n", "slurm.conf must be an absolute path or null"),
        ("version: 1\nslurm: {use_pyslurm: auto}\n", "unknown key 'slurm.use_pyslurm'"),
        ("version: 1\npolicy: {max_count_per_node: 0}\n", "max_count_per_node must be an integer >= 1"),
        ("version: 1\npolicy: {max_count_per_node: true}\n", "max_count_per_node must be an integer >= 1"),
        ("version: 1\npolicy: {max_count_per_node: 2.5}\n", "max_count_per_node must be an integer >= 1"),
        ("version: 1\npolicy: {name: 'Bad Name'}\n", "policy.name must be a policy name"),
        ("version: 1\nfeatures: {publish: 'yes'}\n", "features.publish must be true or false"),
        ("version: 1\nlock_timeout_s: 0\n", "lock_timeout_s must be a number > 0"),
        ("version: 1\nlock_timeout_s: .inf\n", "lock_timeout_s must be a number > 0"),
        ("version: 1\nversion: 1\n", "duplicate key 'version' at line 2"),
        ("version: 1\nlog: {file: /a, file: /b}\n", "duplicate key 'file'"),
        ("version: 1\ndriver: {kind: [}\n", "not valid YAML"),
        ("version: 1\nstate_dir: !!python/object:os.system x\n", "not valid YAML"),
    ],
)
def test_errors_name_the_key_and_the_file(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, node="n1")
    assert message in str(info.value)
    assert path in str(info.value)


def test_which_file_is_read(tmp_path):
    env_file = _write(tmp_path, "version: 1\nstate_dir: /from/env\n", "env.yaml")
    arg_file = _write(tmp_path, "version: 1\nstate_dir: /from/arg\n", "arg.yaml")
    env = {"SLURM_GPU_CONFIG": env_file, "SLURMD_NODENAME": "n1"}
    assert load_config(environ=env).state_dir == "/from/env"
    assert load_config(environ=env).path == env_file
    assert load_config(arg_file, environ=env).state_dir == "/from/arg"
    # a file named explicitly (argument or environment) must exist
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "missing.yaml"), environ=env)
    with pytest.raises(ConfigError, match="missing.yaml does not exist"):
        load_config(environ={"SLURM_GPU_CONFIG": str(tmp_path / "missing.yaml")})


@pytest.mark.skipif(os.path.exists(DEFAULT_CONFIG_PATH), reason="this host has a real configuration file")
def test_absent_default_file_gives_defaults():
    cfg = load_config(environ={"SLURMD_NODENAME": "n9"})
    assert cfg == Config(node="n9") and cfg.path is None


def test_world_writable_file_is_refused(tmp_path):
    path = _write(tmp_path, "version: 1\n")
    os.chmod(path, 0o666)
    with pytest.raises(ConfigError, match="writable by every user"):
        load_config(path, node="n1")
    os.chmod(path, 0o644)
    assert load_config(path, node="n1").version == 1


def test_node_name_sources():
    assert node_name("a1", {"SLURMD_NODENAME": "b2"}) == "a1"
    assert node_name(None, {"SLURMD_NODENAME": "b2"}) == "b2"
    import socket

    assert node_name(None, {}) == socket.gethostname().split(".")[0]
    for bad in ("../etc", "a/b", "-x", "a b", "n\n"):
        with pytest.raises(ConfigError, match="node name"):
            node_name(bad, {})


def test_parse_config_without_a_file():
    cfg = parse_config({"version": 1, "state_dir": "/s/{node}//x/"}, node="n3")
    assert cfg.state_dir == "/s/n3/x" and cfg.path is None
    with pytest.raises(ConfigError, match="<config>: unknown key 'x'"):
        parse_config({"version": 1, "x": 1}, node="n3")


def test_import_is_light():
    # hooks import the config on every job: yaml must not be loaded until a file is read
    code = "import sys, slurm_gpu.node.config; print('yaml' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
