"""What a cluster on another Slurm version is given, without starting it (tests/versions/ start them)."""

from __future__ import annotations

import pwd

import pytest

from slurm_gpu.core.errors import BadInputError
from slurm_gpu.testbed import rooted
from slurm_gpu.testbed.spec import ClusterSpec, validate


def _files() -> dict:
    return {"slurm.conf": "PrologFlags=Alloc,Contain\nProctrackType=proctrack/cgroup\n"
                          "TaskPlugin=task/cgroup\nNodeName=n1 Gres=mig:32\n",
            "cgroup.conf": "CgroupPlugin=autodetect\nConstrainDevices=yes\n", "gres.conf": "x\n"}


def test_host_cluster_is_unchanged():
    spec = ClusterSpec(dir="/var/tmp/x")
    assert not rooted.in_root(spec)
    assert rooted.adapt(spec, _files()) == _files()
    assert rooted.command(spec, ["sinfo"]) == ["sinfo"]
    assert rooted.command(spec, ["sbatch"], user="root")[:4] == ["runuser", "-u", "root", "--"]


@pytest.mark.parametrize("version", ["24.11", "26.05"])
def test_rooted_cluster_runs_without_cgroups_and_inside_its_root(version):
    spec = ClusterSpec(dir="/var/tmp/x", slurm=version, admission="features")
    validate(spec)
    out = rooted.adapt(spec, _files())
    assert out["slurm.conf"].splitlines()[:3] == ["PrologFlags=Alloc", "ProctrackType=proctrack/linuxproc",
                                                  "TaskPlugin=task/none"]
    assert "NodeName=n1 Gres=mig:32" in out["slurm.conf"] and out["gres.conf"] == "x\n"
    assert out["slurm.conf"].splitlines()[-1] == "MailProg=/bin/true"
    assert "CgroupPlugin=disabled" in out["cgroup.conf"] and "Constrain" not in out["cgroup.conf"]
    argv = rooted.command(spec, ["sbatch", "--wrap", "true"], user="root")
    root = pwd.getpwnam("root")
    assert argv[:4] == ["chroot", f"--userspec={root.pw_uid}:{root.pw_gid}", f"--groups={root.pw_gid}",
                        "/var/tmp/x/root"]
    assert argv[-3:] == ["sbatch", "--wrap", "true"] and "SLURM_CONF=/var/tmp/x/etc/slurm.conf" in argv
    runtime = rooted.hook_runtime(spec, "/venv/bin/python", "/src/slurm_gpu")
    assert runtime["python"] == "/usr/bin/python3" and f"PYTHONPATH={rooted.LIB_DIR}" in runtime["env"]


@pytest.mark.parametrize("version", ["24.11", "26.05"])
def test_count_admission_re_plan_loop_runs_inside_the_root(version):
    """The default admission on every version: each node's `slurm-gpu publish --watch` runs where the
    hooks run, on the root's python3 and that version's Slurm tools (tests/versions run it)."""
    from slurm_gpu.testbed import files

    spec = ClusterSpec(dir="/var/tmp/x", slurm=version)
    validate(spec)
    assert spec.admission == "counts"
    script = files.publisher_script(spec)
    argv = rooted.command(spec, [script, "--node", "n1", "--watch", "2"])
    assert argv[:2] == ["chroot", "/var/tmp/x/root"] and argv[-5:] == [script, "--node", "n1", "--watch", "2"]
    wrapper = files._hook_script(spec, "publish")
    assert f"export PYTHONPATH={rooted.LIB_DIR}" in wrapper
    assert wrapper.rstrip().endswith('exec /usr/bin/python3 -m slurm_gpu publish "$@"'), wrapper


def test_unknown_version_is_refused_before_anything_starts():
    with pytest.raises(BadInputError, match="--slurm"):
        validate(ClusterSpec(dir="/var/tmp/x", slurm="25.11"))
