"""cgroup v2 device isolation: layout detection, the seal's device program, and the agent on a v2 tree.

Three levels, each where it can run:
- pure: mountinfo parsing, minor ranges, program size;
- a fake cgroup v2 tree (a plain directory with ``cgroup.controllers`` and Slurm's stepd scope): where
  the seal goes, and that a directory the kernel does not know as a cgroup is refused with the reason;
- the real kernel: a cgroup v2 hierarchy (the unified mount of a hybrid host, or the host's own on a v2
  host) with the seal's program attached and processes moved into it, opening real device nodes. A
  denied device fails with EPERM; an allowed one passes the check and fails with ENXIO (no driver
  behind the simulated GPU's numbers). Skipped with the reason when not root, no cgroup2 mount is
  writable, or bpf(2) is refused.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pytest

from slurm_gpu.core.errors import StateError
from slurm_gpu.devices import access, cgroups, ebpf, simstate
from slurm_gpu.devices.open import open_driver
from slurm_gpu.node.agent import NodeAgent
from slurm_gpu.node.context import AgentPolicy, JobContext
from slurm_gpu.state.journal import Journal
from tests.fakes import FakeSlurm

HYBRID = """\
23 1 0:21 / /sys rw,nosuid - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
UNIFIED = """\
25 22 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
99 25 0:50 / /srv/my\\040cg rw - cgroup2 cgroup2 rw
"""


def test_mountinfo_decides_the_hierarchy(tmp_path):
    assert cgroups.parse_mountinfo(HYBRID) == ("/sys/fs/cgroup/devices", "/sys/fs/cgroup/unified")
    assert cgroups.parse_mountinfo(UNIFIED) == (None, "/sys/fs/cgroup")
    assert cgroups.parse_mountinfo("garbage\n1 2 3\n") == (None, None)
    for text, want in ((HYBRID, cgroups.CgroupLayout("v1", "/sys/fs/cgroup/devices")),
                       (UNIFIED, cgroups.CgroupLayout("v2", "/sys/fs/cgroup")), ("", None)):
        info = tmp_path / "mountinfo"
        info.write_text(text)
        assert cgroups.detect(str(info)) == want
        assert cgroups.layout_of("auto", str(info)) == want
    assert cgroups.detect(str(tmp_path / "absent")) is None
    # This host: whatever it runs, the answer names a mounted hierarchy.
    here = cgroups.detect()
    if here is not None:
        assert os.path.isdir(here.root)


def test_a_configured_path_is_v2_when_it_is_a_cgroup2_root(tmp_path):
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "cgroup.controllers").write_text("cpu memory pids\n")
    assert cgroups.layout_of(str(tmp_path / "v2")) == cgroups.CgroupLayout("v2", str(tmp_path / "v2"))
    assert cgroups.layout_of(str(tmp_path)) == cgroups.CgroupLayout("v1", str(tmp_path))
    assert cgroups.layout_of(None) is None and cgroups.layout_of("") is None


def test_denied_minors_become_few_ranges():
    # Two H100s (GPU minors 0 and 1, 135 cap minors each); the job owns GI 1 / CI 0 of GPU 0.
    caps = {0: list(range(3, 138)), 1: list(range(138, 273))}
    mine = type("I", (), {"gi_cap_minor": 12, "ci_cap_minor": 13})()
    denied = access.seal_devices(caps.items(), {0}, [mine], 240)
    assert (195, 1) in denied and (195, 0) not in denied
    assert ebpf.deny_ranges(denied) == {195: [(1, 1)], 240: [(3, 11), (14, 272)]}
    # 5 instructions of preamble, per major 1 + 2 per range (+1 for a single minor), 2 exits of 2.
    assert len(ebpf.deny_program(denied)) // 8 == 5 + (1 + 1 + 1) + (1 + 2 + 2 + 1) + 4
    rules = access.seal_rules(caps.items(), {0}, [mine], 240)
    assert rules[:2] == ["c 240:3 rwm", "c 240:4 rwm"] and "c 195:1 rwm" in rules
    assert len(rules) == len(denied)


def _fake_v2(tmp_path, node="n1"):
    root = tmp_path / "cg2"
    scope = root / "system.slice" / f"{node}_slurmstepd.scope"
    scope.mkdir(parents=True)
    for d in (root, scope):
        (d / "cgroup.controllers").write_text("cpu memory pids\n")
        (d / "cgroup.procs").write_text("")
    return root, scope


def test_fake_v2_tree_finds_slurms_scope_and_refuses_a_directory_that_is_no_cgroup(tmp_path):
    root, scope = _fake_v2(tmp_path)
    assert cgroups.v2_scope(str(root), "n1") == str(scope)
    assert cgroups.v2_scope(str(root), "n2") is None  # no node-less slurmstepd.scope either
    (root / "system.slice" / "slurmstepd.scope").mkdir()
    (root / "system.slice" / "slurmstepd.scope" / "cgroup.procs").write_text("")
    assert cgroups.v2_scope(str(root), "n2") == str(root / "system.slice" / "slurmstepd.scope")
    with pytest.raises(StateError, match="not a cgroup v2 directory"):
        access.seal("7", 1000, [(195, 0)], str(root), node="n1")
    assert (scope / "job_7").is_dir()  # made for Slurm to adopt, as on v1
    assert access.job_cgroup("7", 1000, str(root), node="n1") is None  # the kernel gave it no cgroup.procs
    (scope / "job_7" / "cgroup.procs").write_text("")
    assert access.job_cgroup("7", 1000, str(root), node="n1") == str(scope / "job_7")
    # No scope (slurmd not started on v2, or another cgroup plugin): nothing to seal, no error.
    assert access.seal("8", 1000, [(195, 0)], str(tmp_path / "cg2" / "system.slice"), node="n1") is None


def _agent(tmp_path, cgroup_root):
    state = str(tmp_path / "sim.json")
    simstate.init_state(state, [("H100-80GB", 2)], sandbox=str(tmp_path / "sb"))
    policy = AgentPolicy(admission="features", release_wait_s=0.3, release_poll_s=0.05,
                         caps_dir=str(tmp_path / "sb/dev/nvidia-caps"), cgroup_root=cgroup_root)
    return NodeAgent("n1", open_driver("sim", sim_state=state), Journal(str(tmp_path / "state"), boot_id="b"),
                     FakeSlurm("n1"), policy)


def test_agent_on_a_fake_v2_tree_reports_an_unsealable_job_and_still_serves_it(tmp_path):
    root, _scope = _fake_v2(tmp_path)
    agent = _agent(tmp_path, str(root))
    agent.slurm.add(40, "1g.10gb", 1, slices=1)
    out = agent.prepare(JobContext("40", os.getuid(), os.getgid()))
    assert out.action == "created" and len(out.mig_uuids) == 1
    assert any("device cgroup not sealed" in p and "not a cgroup v2 directory" in p for p in out.problems)


# ---------------------------------------------------------------- the real kernel

def _unified_mount():
    _devices, unified = cgroups.parse_mountinfo(open("/proc/self/mountinfo").read())
    return unified


@pytest.fixture(scope="module")
def v2_root():
    """A real cgroup v2 subtree standing in for a node's: ``<mount>/slurm_gpu_test_<pid>`` with Slurm's
    stepd scope for node n1 below it."""
    if os.geteuid() != 0:
        pytest.skip("cgroup v2 device programs need root")
    unified = _unified_mount()
    if unified is None:
        pytest.skip("no cgroup2 file system mounted")
    top = os.path.join(unified, f"slurm_gpu_test_{os.getpid()}")
    try:
        os.makedirs(os.path.join(top, "system.slice", "n1_slurmstepd.scope"))
    except OSError as exc:
        pytest.skip(f"cannot make a cgroup under {unified}: {exc}")
    probe = os.path.join(top, "probe")
    os.mkdir(probe)
    try:
        ebpf.seal_cgroup(probe, [(1, 3)])
    except StateError as exc:
        pytest.skip(f"bpf(2) device programs refused here: {exc}")
    finally:
        os.rmdir(probe)
    yield top
    for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
        os.rmdir(dirpath)


_OPENER = """
import json, os, sys
with open(os.path.join(sys.argv[1], "cgroup.procs"), "w") as fh:
    fh.write(str(os.getpid()))
out = {}
for path in sys.argv[2:]:
    try:
        os.close(os.open(path, os.O_RDONLY))
        out[path] = 0
    except OSError as exc:
        out[path] = exc.errno
print(json.dumps(out))
"""


def _open_in(cgroup_dir, paths):
    """errno of opening each path from a process inside ``cgroup_dir`` (0: opened)."""
    res = subprocess.run([sys.executable, "-c", _OPENER, cgroup_dir, *paths], capture_output=True,
                         text=True, timeout=30, check=True)
    return json.loads(res.stdout)


def test_the_seal_is_enforced_by_the_kernel_for_each_job(tmp_path, v2_root):
    agent = _agent(tmp_path, v2_root)
    me = JobContext("50", os.getuid(), os.getgid())
    agent.slurm.add(50, "1g.10gb", 1, slices=1)
    out = agent.prepare(me)
    assert out.action == "created" and not out.problems, out
    job_dir = os.path.join(v2_root, "system.slice", "n1_slurmstepd.scope", "job_50")
    assert out.message.endswith(f"sealed {job_dir}")
    agent.slurm.add(51, None, 0, slices=0)  # a GPU-less job, sealed before job 52's instance exists
    agent.prepare(JobContext("51", os.getuid(), os.getgid()))
    agent.slurm.add(52, "1g.10gb", 1, slices=1)
    other = agent.prepare(JobContext("52", os.getuid(), os.getgid()))
    insts = {i.mig_uuid: i for i in agent.driver.instances()}
    caps, dev = agent.policy.caps_dir, os.path.dirname(agent.policy.caps_dir)

    def files(inst):
        return [f"{dev}/nvidia{inst.gpu_index}", f"{caps}/nvidia-cap{inst.gi_cap_minor}",
                f"{caps}/nvidia-cap{inst.ci_cap_minor}"]

    mine, theirs = files(insts[out.mig_uuids[0]]), files(insts[other.mig_uuids[0]])
    idle_gpu = f"{dev}/nvidia{1 - insts[out.mig_uuids[0]].gpu_index}"
    seen = _open_in(job_dir, mine + theirs[1:] + [idle_gpu, "/dev/null"])
    assert [seen[p] for p in mine] == [errno.ENXIO] * 3  # past the check: no driver behind the number
    assert [seen[p] for p in theirs[1:] + [idle_gpu]] == [errno.EPERM] * 3
    assert seen["/dev/null"] == 0
    gpu_less = _open_in(os.path.join(os.path.dirname(job_dir), "job_51"), mine + theirs)
    assert set(gpu_less.values()) == {errno.EPERM}
    # A Prolog run again replaces its program instead of adding one.
    cg = os.open(job_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        before = ebpf.attached(cg)[1]
        access.seal("50", me.uid, [(195, 0)], v2_root, node="n1")
        flags, after = ebpf.attached(cg)
    finally:
        os.close(cg)
    assert len(before) == len(after) == 1 and before != after and flags == ebpf.BPF_F_ALLOW_MULTI
    for job in ("50", "51", "52"):
        agent.release(JobContext(job, os.getuid(), os.getgid()))
        assert not os.path.exists(os.path.join(os.path.dirname(job_dir), f"job_{job}"))


def _attach_like_slurm(cgroup: str, denied) -> None:
    """What Slurm's cgroup/v2 attaches for gres with device files: its own program, BPF_F_ALLOW_OVERRIDE."""
    prog = ebpf.load(ebpf.deny_program(denied), "Slurm_Cgroup_v2")
    cg = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
    try:
        ebpf.attach(cg, prog, flags=ebpf.BPF_F_ALLOW_OVERRIDE)
    finally:
        os.close(cg)
        os.close(prog)


def test_slurms_own_programs_below_the_job_add_to_the_seal_and_one_on_it_is_named(tmp_path, v2_root):
    os.mknod(str(tmp_path / "gpu0"), 0o20666, os.makedev(195, 0))
    os.mknod(str(tmp_path / "gpu1"), 0o20666, os.makedev(195, 1))
    scope = os.path.join(v2_root, "system.slice", "n1_slurmstepd.scope")
    job = access.seal("60", 0, [(195, 0)], v2_root, node="n1")
    step = os.path.join(job, "step_0", "user")
    os.makedirs(step)
    _attach_like_slurm(step, [(195, 1)])
    seen = _open_in(step, [str(tmp_path / "gpu0"), str(tmp_path / "gpu1")])
    assert seen == {str(tmp_path / "gpu0"): errno.EPERM, str(tmp_path / "gpu1"): errno.EPERM}
    # Slurm's program on job_<id> itself (gres with File= on a node): the seal says why it cannot join.
    other = os.path.join(scope, "job_61")
    os.mkdir(other)
    _attach_like_slurm(other, [(195, 1)])
    with pytest.raises(StateError, match="without BPF_F_ALLOW_MULTI"):
        access.seal("61", 0, [(195, 0)], v2_root, node="n1")
    for path in (step, os.path.dirname(step), job, other):
        os.rmdir(path)


def test_cgroup_conf_names_the_plugin_asked_for():
    from slurm_gpu.cli.config import CGROUP_CHOICES
    from slurm_gpu.confgen import render as confgen
    from slurm_gpu.confgen.inventory import inventory_from_dict

    inv = inventory_from_dict({"version": 1, "nodes": [{"names": "n1", "gpus": "H100-80GB:1"}]})
    text = {k: confgen.render("cgroup", inv, confgen.Options(cgroup_plugin=v))
            for k, v in CGROUP_CHOICES.items()}
    assert "CgroupPlugin=cgroup/v2" in text["v2"] and "device program on job_<id>" in text["v2"]
    assert "CgroupPlugin=cgroup/v1" in text["v1"] and "device program" not in text["v1"]
    assert "CgroupPlugin=autodetect" in text["auto"] and "ConstrainDevices=yes" in text["auto"]


def test_a_program_the_verifier_refuses_is_named_with_its_reason(v2_root):
    no_exit = ebpf.deny_program([(195, 0)])[:-16]  # the last two instructions: r0 = 0; exit
    with pytest.raises(StateError, match=r"cannot load a device program \(Invalid argument\): .*(jump|exit)"):
        ebpf.load(no_exit)
