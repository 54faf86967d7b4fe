"""The Ansible role (``ansible/roles/slurm_gpu``) run for real: Debian's ansible-playbook against a copy of a
fresh Debian 12 root (``testbed.roots.DEBIAN_12``, no Python in it) through the ``community.general.chroot``
connection, the host being GPU node and controller at once; a second run must report ``changed=0``; and
``ansible-lint`` (production profile) must pass on ``ansible/``.

Needs root, debootstrap (the root is built once and cached), a reachable Debian mirror and package index
(the role installs python3 and the wheel's dependencies inside the root), Debian's ``ansible`` package and
``ansible-lint`` in the virtual environment (scripts/setup.sh installs both).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slurm_gpu.testbed import roots

pytestmark = [pytest.mark.ansible, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
PLAYBOOK = "/usr/bin/ansible-playbook"  # Debian's: it carries community.general (chroot connection)
CLUSTER = {"version": 1, "nodes": [{"names": "node1", "gpus": "H100-80GB:2"}]}


def _has_node_install() -> bool:
    """Whether this package has ``slurm-gpu node install`` (the role runs it where it exists)."""
    res = subprocess.run([sys.executable, "-m", "slurm_gpu", "node", "install", "--help"],
                         capture_output=True, text=True, timeout=60, check=False)
    return res.returncode == 0


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """A Debian 12 root after the playbook ran on it twice: (root, first run, second run, extra vars)."""
    if os.geteuid() != 0:
        pytest.skip("chroot and debootstrap need root")
    for tool in (PLAYBOOK, shutil.which("debootstrap")):
        if not tool or not os.path.exists(tool):
            pytest.skip("Debian's ansible and debootstrap are needed (scripts/setup.sh installs them)")
    work = tmp_path_factory.mktemp("ansible")
    had_build = (REPO / "build").exists()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(work / "dist"),
                    str(REPO)], check=True, capture_output=True, timeout=300)
    if not had_build:
        shutil.rmtree(REPO / "build", ignore_errors=True)  # setuptools builds in the checkout
    wheel = next((work / "dist").glob("slurm_gpu-*.whl"))
    root = f"/var/tmp/slurm-gpu-ansible-{os.getpid()}"
    roots.copy(roots.ensure(roots.DEBIAN_12), root)
    try:
        os.makedirs(f"{root}/etc/slurm", exist_ok=True)
        Path(f"{root}/etc/slurm/slurm.conf").write_text("ClusterName=site\n")  # the site's own
        (work / "inventory.ini").write_text(
            "[slurm_gpu_nodes]\n"
            f"node1 ansible_connection=community.general.chroot ansible_host={root} "
            "ansible_python_interpreter=/usr/bin/python3\n"
            "[slurm_gpu_controllers]\nnode1\n")
        node_install = _has_node_install()
        extra = {"slurm_gpu_wheel": str(wheel), "slurm_gpu_node_install": node_install,
                 "slurm_gpu_start_units": False,  # no systemd runs in a chroot
                 "slurm_gpu_slurm_conf_include": True, "slurm_gpu_cgroup": "v2", "slurm_gpu_cluster": CLUSTER,
                 "slurm_gpu_config": {"policy": {"max_count_per_node": 4}}}
        if node_install:
            extra["slurm_gpu_os_packages"] = ["python3", "python3-venv", "python3-setuptools", "systemd"]
        (work / "vars.json").write_text(json.dumps(extra))
        env = dict(os.environ, ANSIBLE_CONFIG=str(ANSIBLE_DIR / "ansible.cfg"),
                   ANSIBLE_ROLES_PATH=str(ANSIBLE_DIR / "roles"), ANSIBLE_NOCOLOR="1",
                   ANSIBLE_LOCAL_TEMP=str(work / "tmp"), PATH="/usr/sbin:/usr/bin:/sbin:/bin")
        runs = []
        with roots.mounted(root):
            for _ in range(2):
                start = time.monotonic()
                args = [PLAYBOOK, "-i", str(work / "inventory.ini"), "-e", f"@{work / 'vars.json'}",
                        str(ANSIBLE_DIR / "site.yml")]
                res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900, check=False)
                runs.append((res, time.monotonic() - start))
        yield root, runs, extra
    finally:
        roots.remove(root)


def _recap(res):
    """The PLAY RECAP counters of node1."""
    found = re.search(r"^node1\s*:\s*(.*)$", res.stdout, re.M)
    assert found, res.stdout[-3000:] + res.stderr[-2000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", found.group(1))}


def test_the_role_installs_on_a_fresh_debian_12_and_a_second_run_changes_nothing(deployed):
    root, ((first, t1), (second, t2)), extra = deployed
    print(f"first run {t1:.1f} s, second run {t2:.1f} s")
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    assert _recap(first)["failed"] == 0 and _recap(first)["changed"] > 0
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-2000:]
    assert _recap(second)["changed"] == 0, second.stdout[-4000:]
    # The package runs from its venv inside the root.
    version = roots.chroot_run(root, ["/opt/slurm-gpu/bin/slurm-gpu", "--version"])
    assert version.returncode == 0 and version.stdout.startswith("slurm-gpu "), version
    # config.yaml: root's, 0644, what the variables say, and accepted by the package's own loader.
    conf = f"{root}/etc/slurm-gpu/config.yaml"
    st = os.stat(conf)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o644)
    loaded = roots.chroot_run(root, ["/opt/slurm-gpu/bin/python", "-c",
                                     "from slurm_gpu.node.config import load_config; "
                                     "c = load_config('/etc/slurm-gpu/config.yaml', node='node1'); "
                                     "print(c.policy.max_count_per_node, c.state_dir)"])
    assert loaded.stdout.split() == ["4", "/var/lib/slurm-gpu"], loaded
    # The controller's Slurm files are exactly what the generator makes for that inventory.
    from slurm_gpu.confgen import render as confgen
    from slurm_gpu.confgen.inventory import inventory_from_dict

    options = confgen.Options(prolog="/etc/slurm/prolog.d/*", epilog="/etc/slurm/epilog.d/*",
                              task_prolog="/etc/slurm/task-prolog.d/slurm-gpu", cgroup_plugin="cgroup/v2")
    inventory = inventory_from_dict(CLUSTER)
    for kind, path in (("gres", "gres.conf"), ("cgroup", "cgroup.conf"), ("job-submit", "job_submit.lua"),
                       ("slurm", "slurm-gpu.conf")):
        assert Path(f"{root}/etc/slurm/{path}").read_text() == confgen.render(kind, inventory, options), path
    assert Path(f"{root}/etc/slurm/slurm.conf").read_text().splitlines() == [
        "ClusterName=site", "Include /etc/slurm/slurm-gpu.conf"]
    if extra["slurm_gpu_node_install"]:
        enabled = roots.chroot_run(root, ["systemctl", "is-enabled", "slurm-gpu-reconcile.timer"])
        assert enabled.stdout.strip() == "enabled", enabled


def test_ansible_lint_passes_on_the_role_and_playbook():
    lint = Path(sys.executable).parent / "ansible-lint"
    if not lint.exists():
        pytest.skip("ansible-lint is not installed in this environment (scripts/setup.sh installs it)")
    res = subprocess.run([str(lint)], cwd=ANSIBLE_DIR, capture_output=True, text=True, timeout=300,
                         check=False)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "Profile 'production' was required, and it passed" in res.stdout + res.stderr
