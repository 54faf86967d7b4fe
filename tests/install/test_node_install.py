"""`slurm-gpu node install` into a scratch tree: every file, mode and owner, idempotence, the TaskProlog
run as another user from a checkout it cannot read, the units through systemd-analyze, --uninstall."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from slurm_gpu.core.errors import EXIT_CONFIG
from slurm_gpu.state.task_env import write_task_env

pytestmark = pytest.mark.install

SG = str(Path(sys.executable).with_name("slurm-gpu"))
UUID = "MIG-0a1b2c3d-4e5f-5a6b-8c7d-0e1f2a3b4c5d"
USER = "nobody"


@pytest.fixture
def tree():
    """A scratch tree every user can walk into (pytest's tmp_path sits below a 0700 directory)."""
    if os.geteuid() != 0:
        pytest.skip("node install needs root")
    path = Path(tempfile.mkdtemp(prefix="sg-install-", dir="/var/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def args_for(tree: Path, *extra: str):
    return ["--prefix", str(tree / "usr"), "--slurm-etc", str(tree / "etc/slurm"),
            "--systemd-dir", str(tree / "systemd"), "--config-path", str(tree / "etc/slurm-gpu/config.yaml"),
            *extra]


def install(tree: Path, *extra: str, user: str = ""):
    cmd = [SG, "node", "install", *args_for(tree, *extra), "--json"]
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    doc = json.loads(proc.stdout) if proc.returncode == 0 else None
    return proc, doc


def test_install_twice_then_uninstall(tree):
    proc, doc = install(tree, "--state-dir", str(tree / "state"))
    assert proc.returncode == 0, proc.stderr
    assert doc["schema"] == "slurm-gpu.node.install/v1" and not doc["unchanged"]
    assert doc["slurm_conf"][:3] == [f"Prolog={tree}/etc/slurm/prolog.d/50-slurm-gpu",
                                     f"Epilog={tree}/etc/slurm/epilog.d/50-slurm-gpu",
                                     f"TaskProlog={tree}/etc/slurm/task-prolog.d/slurm-gpu"]
    for rel, mode in (("etc/slurm/prolog.d/50-slurm-gpu", 0o755),
                      ("etc/slurm/task-prolog.d/slurm-gpu", 0o755),
                      ("etc/slurm-gpu/config.yaml", 0o644), ("state", 0o755),
                      ("usr/lib/slurm-gpu/slurm_gpu/hooks/task_prolog.py", 0o644),
                      ("systemd/slurmd.service.d/slurm-gpu.conf", 0o644)):
        st = os.stat(tree / rel)
        assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (mode, 0, 0), rel
    prolog = (tree / "etc/slurm/prolog.d/50-slurm-gpu").read_text()
    hook = prolog.splitlines()[-1].split()[1]
    assert os.path.isabs(hook) and os.access(hook, os.X_OK), prolog
    assert f"export SLURM_GPU_CONFIG={tree}/etc/slurm-gpu/config.yaml\n" in prolog
    drop_in = (tree / "systemd/slurmd.service.d/slurm-gpu.conf").read_text()
    assert "Environment=HWLOC_COMPONENTS=-opencl" in drop_in
    assert os.readlink(tree / "systemd/timers.target.wants/slurm-gpu-reconcile.timer") == \
        str(tree / "systemd/slurm-gpu-reconcile.timer")
    assert os.readlink(tree / "usr/bin/slurm-gpu") == SG
    # The hook server starts with the node, and so does the publish loop of count admission (the default).
    hooks_unit = (tree / "systemd/slurm-gpu-hooks.service").read_text()
    assert hooks_unit.split("ExecStart=")[1].split("\n")[0].endswith(" serve"), hooks_unit
    assert "KillMode=process" in hooks_unit and "RuntimeDirectoryMode=0700" in hooks_unit
    assert os.readlink(tree / "systemd/multi-user.target.wants/slurm-gpu-hooks.service") == \
        str(tree / "systemd/slurm-gpu-hooks.service")
    assert "publish --watch" in (tree / "systemd/slurm-gpu-publish.service").read_text()
    assert os.readlink(tree / "systemd/multi-user.target.wants/slurm-gpu-publish.service") == \
        str(tree / "systemd/slurm-gpu-publish.service")
    assert any("start slurm-gpu-publish" in step for step in doc["next"]), doc["next"]
    # The configuration is the loader's: the hooks can read it.
    from slurm_gpu.node.config import load_config
    assert load_config(str(tree / "etc/slurm-gpu/config.yaml"), node="n1").state_dir == str(tree / "state")

    proc, again = install(tree, "--state-dir", str(tree / "state"))
    assert proc.returncode == 0 and again["changed"] == []
    assert sorted(again["unchanged"]) == sorted(doc["changed"])
    text = subprocess.run([SG, "node", "install", *args_for(tree)], capture_output=True, text=True).stdout
    assert text.startswith("nothing to change")

    # A file changed by hand is put back, and only it.
    (tree / "etc/slurm/epilog.d/50-slurm-gpu").chmod(0o700)
    proc, fixed = install(tree)
    assert fixed["changed"] == [f"{tree}/etc/slurm/epilog.d/50-slurm-gpu"], fixed

    proc, gone = install(tree, "--uninstall")
    assert proc.returncode == 0, proc.stderr
    assert gone["kept"] == [f"{tree}/etc/slurm-gpu/config.yaml"]
    left = sorted(str(p.relative_to(tree)) for p in tree.rglob("*") if not p.is_dir())
    assert left == ["etc/slurm-gpu/config.yaml"], left
    proc, twice = install(tree, "--uninstall")
    assert twice["changed"] == []


def test_feature_admission_leaves_the_publish_loop_off(tree):
    config = tree / "features.yaml"
    config.write_text(f"version: 1\nstate_dir: {tree / 'state'}\nadmission:\n  mode: features\n")
    proc, doc = install(tree, "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    assert (tree / "systemd/slurm-gpu-publish.service").is_file()
    assert not os.path.lexists(tree / "systemd/multi-user.target.wants/slurm-gpu-publish.service")
    assert not any("start slurm-gpu-publish" in step for step in doc["next"]), doc["next"]


def test_task_prolog_runs_as_the_user_from_the_copy(tree):
    """The package's checkout may be private (a clone in /root): the TaskProlog needs only the copy."""
    proc, _ = install(tree, "--state-dir", str(tree / "state"))
    assert proc.returncode == 0, proc.stderr
    user = pwd.getpwnam(USER)
    write_task_env(str(tree / "state"), "41", user.pw_uid, user.pw_gid, [UUID])
    private = tree / "private"
    shutil.copytree(tree / "usr/lib/slurm-gpu", private)  # stands for the checkout, unreadable to the user
    os.chmod(private, 0o700)
    out = subprocess.run(["runuser", "-u", USER, "--", "env", "-i", "SLURM_JOB_ID=41", "SLURM_LOCALID=0",
                          str(tree / "etc/slurm/task-prolog.d/slurm-gpu")],
                         capture_output=True, text=True, timeout=30, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == f"export CUDA_VISIBLE_DEVICES={UUID}", out.stdout + out.stderr


def test_units_pass_systemd_analyze(tree):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    proc, _ = install(tree, "--state-dir", str(tree / "state"))
    assert proc.returncode == 0, proc.stderr
    units = [str(tree / "systemd" / f"slurm-gpu-reconcile.{kind}") for kind in ("service", "timer")]
    check = subprocess.run(["systemd-analyze", "verify", "--man=no", *units], capture_output=True, text=True,
                           timeout=60, env=dict(os.environ, SYSTEMD_LOG_LEVEL="warning"))
    ours = [line for line in check.stderr.splitlines() if "slurm-gpu" in line]
    assert check.returncode == 0 and not ours, check.stderr


def test_clear_errors(tree, monkeypatch):
    bad = tree / "bad.yaml"
    bad.write_text("version: 1\nstate_dir: relative\n")
    proc, _ = install(tree, "--config", str(bad))
    assert proc.returncode == EXIT_CONFIG and "state_dir" in proc.stderr, proc.stderr
    good = tree / "good.yaml"
    good.write_text("version: 1\nstate_dir: /var/lib/elsewhere\n")
    proc, _ = install(tree, "--config", str(good), "--state-dir", str(tree / "state"))
    assert proc.returncode == EXIT_CONFIG and "disagrees" in proc.stderr, proc.stderr
    private = tree / "private"
    private.mkdir(mode=0o700)
    proc = subprocess.run([SG, "node", "install", "--prefix", str(private / "usr"), *args_for(tree)[2:]],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "job users cannot reach" in proc.stderr, proc.stderr
    from slurm_gpu.install import apply
    from slurm_gpu.install.layout import InstallOptions

    monkeypatch.setattr(os, "geteuid", lambda: 65534)  # the checkout itself may be unreadable to nobody
    with pytest.raises(apply.InstallError, match="must run as root"):
        apply.install(InstallOptions(prefix=str(tree / "usr")))
    assert not (tree / "etc").exists()  # nothing written by a failed run
