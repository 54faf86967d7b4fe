"""The Ansible role (``ansible/roles/slurm_gpu``) run for real: Debian's ansible-playbook against a copy of a
fresh Debian 12 root (``testbed.roots.DEBIAN_12``, no Python in it) through the ``community.general.chroot``
connection, the host being GPU node and controller at once; a second run must report ``changed=0``; then
munged, slurmctld and ``slurmd -N`` start inside the root on what the role left there (the simulated GPU
driver behind it) and a ``--gres=gpu:1g.10gb`` job must see its MIG instance. ``ansible-lint``:
test_ansible_lint.py.

Needs root, debootstrap (the root is built once and cached), a reachable Debian mirror and package index
(the role installs python3 and the wheel's dependencies inside the root), Debian's ``ansible`` package and
``ansible-lint`` in the virtual environment (scripts/setup.sh installs both).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slurm_gpu.testbed import roots

# slurm too: it starts slurmctld and slurmd (inside the root), like the cluster suite.
pytestmark = [pytest.mark.ansible, pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
PLAYBOOK = "/usr/bin/ansible-playbook"  # Debian's: it carries community.general (chroot connection)
NODE = f"ans{os.getpid() % 10000}"  # slurmd names its cgroups after the node: unique per run
PORT = 16400 + (os.getpid() % 50) * 4
HOST = socket.gethostname().split(".")[0]
_NODE_LINE = {"NodeHostname": HOST, "NodeAddr": "127.0.0.1", "Port": PORT + 1}
CLUSTER = {"version": 1, "nodes": [{"names": NODE, "gpus": "H100-80GB:2", "cpus": 2, "slurm": _NODE_LINE}]}
# The site's own slurm.conf; the role adds `Include /etc/slurm/slurm-gpu.conf`.
SLURM_CONF = [
    "ClusterName=ansible", f"SlurmctldHost={HOST}(127.0.0.1)", f"SlurmctldPort={PORT}",
    f"SlurmdPort={PORT + 1}", "SlurmUser=root", "SlurmdUser=root", "AuthType=auth/munge",
    "StateSaveLocation=/var/spool/slurmctld", "SlurmdSpoolDir=/var/spool/slurmd",
    "SlurmctldPidFile=/run/slurmctld.pid", "SlurmdPidFile=/run/slurmd.pid",
    "SlurmctldLogFile=/var/log/slurmctld.log", "SlurmdLogFile=/var/log/slurmd.log",
    f"FirstJobId={PORT * 100 + 1}", "SlurmdParameters=config_overrides", "SelectType=select/cons_tres",
    "SelectTypeParameters=CR_CPU", "ReturnToService=2", "MpiDefault=none",
    "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
    "MinJobAge=600", "KillWait=2", "SlurmdTimeout=60",
    f"PartitionName=gpu Nodes={NODE},slurm-gpu-placeholder Default=YES MaxTime=10 State=UP",
]
SIM_STATE = "/var/lib/slurm-gpu-sim/state.json"


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
        Path(f"{root}/etc/slurm/slurm.conf").write_text("\n".join(SLURM_CONF) + "\n")
        (work / "inventory.ini").write_text(
            "[slurm_gpu_nodes]\n"
            f"{NODE} ansible_connection=community.general.chroot ansible_host={root} "
            "ansible_python_interpreter=/usr/bin/python3\n"
            f"[slurm_gpu_controllers]\n{NODE}\n")
        extra = {"slurm_gpu_wheel": str(wheel),
                 "slurm_gpu_start_units": False,  # no systemd runs in a chroot: the units are enabled only
                 # systemctl enables units in a chroot; a real node has systemd, munge and Slurm already
                 "slurm_gpu_os_packages": ["python3", "python3-venv", "python3-setuptools", "systemd",
                                           "munge", "slurmctld", "slurmd", "slurm-client", "lua5.1"],
                 # the host is cgroup v1 (a hybrid one: Slurm's cgroup/v2 refuses it)
                 "slurm_gpu_slurm_conf_include": True, "slurm_gpu_cgroup": "v1", "slurm_gpu_cluster": CLUSTER,
                 "slurm_gpu_config": {"policy": {"max_count_per_node": 4},
                                      "driver": {"kind": "sim", "sim_state": SIM_STATE}}}
        (work / "vars.json").write_text(json.dumps(extra))
        env = dict(os.environ, ANSIBLE_CONFIG=str(ANSIBLE_DIR / "ansible.cfg"),
                   ANSIBLE_ROLES_PATH=str(ANSIBLE_DIR / "roles"), ANSIBLE_NOCOLOR="1",
                   ANSIBLE_LOCAL_TEMP=str(work / "tmp"), PATH="/usr/sbin:/usr/bin:/sbin:/bin")
        runs = []
        with roots.mounted(root):
            try:
                for _ in range(2):
                    start = time.monotonic()
                    args = [PLAYBOOK, "-i", str(work / "inventory.ini"), "-e", f"@{work / 'vars.json'}",
                            str(ANSIBLE_DIR / "site.yml")]
                    res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900,
                                         check=False)
                    runs.append((res, time.monotonic() - start))
                yield root, runs, extra
            finally:
                _stop_daemons(root)
    finally:
        roots.remove(root)
        for top in Path("/sys/fs/cgroup").glob(f"*/slurm_{NODE}"):
            for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [top]:
                try:
                    d.rmdir()
                except OSError:
                    pass


def _stop_daemons(root: str) -> None:
    """slurmd, slurmctld and munged of the root, by their pid files."""
    import signal

    for pid_file in ("run/slurmd.pid", "run/slurmctld.pid", "run/munge/munged.pid"):
        try:
            pid = int(Path(root, pid_file).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        for _ in range(50):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)


def _recap(res):
    """The PLAY RECAP counters of the node."""
    found = re.search(rf"^{NODE}\s*:\s*(.*)$", res.stdout, re.M)
    assert found, res.stdout[-3000:] + res.stderr[-2000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", found.group(1))}


def test_the_role_installs_on_a_fresh_debian_12_and_a_second_run_changes_nothing(deployed):
    root, ((first, t1), (second, t2)), _extra = deployed
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
                              task_prolog="/etc/slurm/task-prolog.d/slurm-gpu", cgroup_plugin="cgroup/v1")
    inventory = inventory_from_dict(CLUSTER)
    for kind, path in (("gres", "gres.conf"), ("cgroup", "cgroup.conf"), ("job-submit", "job_submit.lua"),
                       ("slurm", "slurm-gpu.conf")):
        assert Path(f"{root}/etc/slurm/{path}").read_text() == confgen.render(kind, inventory, options), path
    assert Path(f"{root}/etc/slurm/slurm.conf").read_text().splitlines() == [
        *SLURM_CONF, "Include /etc/slurm/slurm-gpu.conf"]
    # node install: the hooks with absolute paths, the TaskProlog every user can read, the units enabled.
    for path, mode in (("etc/slurm/prolog.d/50-slurm-gpu", 0o755), ("etc/slurm/epilog.d/50-slurm-gpu", 0o755),
                       ("etc/slurm/task-prolog.d/slurm-gpu", 0o755)):
        st = os.stat(f"{root}/{path}")
        assert (st.st_uid, stat.S_IMODE(st.st_mode) & 0o755) == (0, mode), path
    from slurm_gpu.install.layout import HOOK_LAUNCHER

    # the venv's interpreter starts slurm-gpu-hook's code (install.layout.hook_command), its package first
    prolog = Path(f"{root}/etc/slurm/prolog.d/50-slurm-gpu").read_text()
    site = re.search(r"/opt/slurm-gpu/lib/python3\.\d+/site-packages", prolog)
    assert site, prolog
    launcher = HOOK_LAUNCHER.format(root=f'"{site.group(0)}"')
    assert f"exec /opt/slurm-gpu/bin/python3 -I -S -c '{launcher}' prolog" in prolog, prolog
    assert os.path.isdir(f"{root}/usr/local/lib/slurm-gpu/slurm_gpu")
    for unit in ("slurm-gpu-reconcile.timer", "slurm-gpu-publish.service"):
        enabled = roots.chroot_run(root, ["systemctl", "is-enabled", unit])
        assert enabled.stdout.strip() == "enabled", (unit, enabled)


def _in_root(root: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    res = roots.chroot_run(root, list(args), timeout=timeout)
    assert res.returncode == 0, f"{' '.join(args)}: {res.stdout}{res.stderr}"
    return res


def test_a_mig_job_runs_on_what_the_role_installed(deployed):
    root, ((first, _t1), _second), _extra = deployed
    assert first.returncode == 0
    hub = "/opt/slurm-gpu/bin/slurm-gpu"
    os.makedirs(f"{root}{os.path.dirname(SIM_STATE)}", exist_ok=True)
    _in_root(root, hub, "sim", "init", "--gpus", "H100-80GB:2", "--sim-state", SIM_STATE)
    for folder in ("run/munge", "var/spool/slurmctld"):
        os.makedirs(f"{root}/{folder}", exist_ok=True)
    _in_root(root, "chown", "munge:munge", "/run/munge")
    _in_root(root, "runuser", "-u", "munge", "--", "/usr/sbin/munged")
    _in_root(root, "/usr/sbin/slurmctld")
    _in_root(root, "/usr/sbin/slurmd", "-N", NODE)
    for _ in range(60):
        if roots.chroot_run(root, ["sinfo", "-h", "-n", NODE, "-o", "%T"]).stdout.strip() == "idle":
            break
        time.sleep(0.5)
    else:
        logs = _tail(root, "var/log/slurmctld.log") + _tail(root, "var/log/slurmd.log")
        pytest.fail(f"{NODE} never idle: {logs}")
    job = _in_root(root, "sbatch", "--parsable", "--gres=gpu:1g.10gb", "-o", "/tmp/mig.out", "--wrap",
                   "echo CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES").stdout.strip().split(";")[0]
    # One tick of the re-plan loop the role enabled (slurm-gpu-publish.service; no systemd in the root):
    # the pending job's profile is published, then Slurm starts it.
    _in_root(root, hub, "publish", "--node", NODE)
    for _ in range(120):  # gone from squeue: ended, Epilog included
        if not roots.chroot_run(root, ["squeue", "-h", "-j", job, "-o", "%T"]).stdout.strip():
            break
        time.sleep(0.5)
    seen = _tail(root, "tmp/mig.out")
    assert re.fullmatch(r"CUDA_VISIBLE_DEVICES=MIG-[0-9a-f-]{36}\n", seen), (
        f"job {job}: {seen!r}\n{_tail(root, 'var/log/slurmd.log')}")
    # The Epilog gave the instance back.
    gpus = json.loads(_in_root(root, hub, "inventory", "--sim-state", SIM_STATE, "--json").stdout)["gpus"]
    assert all(not g.get("instances") for g in gpus), gpus


def _tail(root: str, path: str) -> str:
    file = Path(root, path)
    return file.read_text(errors="replace")[-3000:] if file.exists() else ""
