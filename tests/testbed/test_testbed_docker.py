"""docker-slurm/ without Docker: the containers' spec and roles, their slurm.conf without cgroup plugins,
and the image's build context and cache key (what the Dockerfile copies, what invalidates the image)."""

from __future__ import annotations

import fnmatch
import os

import pytest

from slurm_gpu.core.errors import BadInputError
from slurm_gpu.testbed import container
from slurm_gpu.testbed import docker as dk
from slurm_gpu.testbed.files import write_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_spec_from_env_defaults_and_settings():
    spec = container.spec_from_env({})
    assert (spec.dir, spec.nodes, spec.gpus, spec.port_base, spec.cgroups) == (
        "/var/lib/slurm-gpu-cluster", 2, "H100-80GB:4", 17000, False)
    spec = container.spec_from_env({"SLURM_GPU_NODES": "3", "SLURM_GPU_PORT_BASE": "23400",
                                    "SLURM_GPU_GPUS": "H100-80GB:1;A100-40GB:1"})
    assert (spec.nodes, spec.port_base, spec.node_gpus(2)) == (3, 23400, "A100-40GB:1")
    with pytest.raises(BadInputError):
        container.spec_from_env({"SLURM_GPU_NODES": "two"})
    with pytest.raises(BadInputError):
        container.spec_from_env({"SLURM_GPU_GPUS": "H999:1"})


def test_roles_run_the_daemons_in_the_foreground():
    spec = container.spec_from_env({"SLURM_GPU_PORT_BASE": "23400"})
    assert container.command(spec, ["controller"]) == ["slurmctld", "-D", "-f", spec.conf]
    assert container.command(spec, ["compute", "2"]) == ["slurmd", "-D", "-N", "sg23400n2", "-f", spec.conf]
    for bad in (["compute", "3"], ["compute", "0"], ["compute"], ["login"]):
        with pytest.raises(BadInputError):
            container.command(spec, bad)
    assert container.main(["login"]) == 2


@pytest.mark.skipif(os.geteuid() != 0, reason="the simulated GPUs' sandbox needs mknod (root)")
def test_container_cluster_has_no_cgroup_plugins(tmp_path):
    spec = container.spec_from_env({})
    paths = write_config(type(spec)(**{**spec.__dict__, "dir": str(tmp_path)}))
    with open(paths["slurm.conf"], encoding="utf-8") as fh:
        conf = fh.read().splitlines()
    assert "ProctrackType=proctrack/linuxproc" in conf and "TaskPlugin=task/none" in conf
    assert not [line for line in conf if "cgroup" in line.split("#")[0]]
    assert "JobSubmitPlugins=lua" in conf and any(line.startswith("Prolog=") for line in conf)


def _dockerignore_allows(rel: str) -> bool:
    """Whether /.dockerignore lets ``rel`` into the build context (its rules, last match wins)."""
    allowed = True
    with open(os.path.join(REPO, ".dockerignore"), encoding="utf-8") as fh:
        rules = [line.strip() for line in fh if line.strip() and not line.startswith("#")]
    for rule in rules:
        negate = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/")
        parts = rel.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if pattern.startswith("**/"):
            hit = pattern[3:] in parts
        else:
            hit = any(fnmatch.fnmatch(p, pattern) for p in prefixes)
        if hit:
            allowed = negate
    return allowed


def test_build_context_is_what_dockerignore_lets_through_and_keys_the_image(tmp_path):
    files = dk.context_files(REPO)
    for rel in ("docker-slurm/Dockerfile", "pyproject.toml", "slurm_gpu/testbed/container.py",
                "templates/slurm.conf.j2", "slurm_gpu/templates/job_submit.lua.j2"):
        assert rel in files
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]
    # the Dockerfile is read by the builder, not copied into the image
    assert [f for f in files if not _dockerignore_allows(f)] == ["docker-slurm/Dockerfile"]
    ctx = dk.build_context(REPO, str(tmp_path / "ctx"), cas=[os.path.join(REPO, "docker-slurm", "README.md")])
    assert os.path.isfile(os.path.join(ctx, "docker-slurm", "ca-certificates", "README.md"))
    key = dk.image_key(REPO, "bookworm", "bookworm-x")
    assert dk.image_key(ctx, "bookworm", "bookworm-x") == key  # the copy holds the same content
    assert dk.image_key(REPO, "trixie", "bookworm-x") != key
    assert dk.image_key(REPO, "bookworm", "bookworm-y") != key
    with open(os.path.join(ctx, "slurm_gpu", "testbed", "container.py"), "a", encoding="utf-8") as fh:
        fh.write("\n")
    assert dk.image_key(ctx, "bookworm", "bookworm-x") != key


def test_cached_image_is_found_by_content_key(tmp_path, monkeypatch):
    monkeypatch.setenv(dk.IMAGE_CACHE_ENV, str(tmp_path))
    assert dk.cached_image(REPO) is None
    key = dk.image_key(REPO, "bookworm", dk.SUITE_ROOTS["bookworm"].name, dk._local_cas())
    (tmp_path / f"bookworm-{key}.tar").write_bytes(b"")
    (tmp_path / "bookworm-0000000000000000.tar").write_bytes(b"")
    assert dk.cached_image(REPO) == str(tmp_path / f"bookworm-{key}.tar")
    assert dk.cached_image(REPO, "trixie") is None
    assert dk.cached_image(REPO, "jessie") is None
