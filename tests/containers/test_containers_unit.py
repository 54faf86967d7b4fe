"""The container command and the per-job CDI spec without a cluster: command lines, refusals, the spec the
node agent writes and removes (simulated driver, real device nodes when root), the schema."""

from __future__ import annotations

import json
import os
import stat

import pytest
from fakes import FakeSlurm

from slurm_gpu.core import cdi
from slurm_gpu.core.containers import Task, check_options, container_argv, split_command
from slurm_gpu.core.errors import BadInputError, ConfigError, StateError
from slurm_gpu.devices import simstate
from slurm_gpu.devices.open import open_driver
from slurm_gpu.node import containers as nc
from slurm_gpu.node.agent import NodeAgent
from slurm_gpu.node.config import Config, ContainersConfig, DriverConfig, cdi_dir, parse_config
from slurm_gpu.node.context import AgentPolicy, JobContext
from slurm_gpu.state.journal import Journal

pytestmark = pytest.mark.containers
SCHEMA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "cdi")
UUID = "MIG-5c3a0000-0000-4000-8000-000000000001"
NODES = (cdi.DeviceNode("/dev/nvidia2", "/dev/nvidia2", 195, 2),
         cdi.DeviceNode("/dev/nvidia-caps/nvidia-cap282", "/dev/nvidia-caps/nvidia-cap282", 240, 282),
         cdi.DeviceNode("/dev/nvidia-caps/nvidia-cap283", "/dev/nvidia-caps/nvidia-cap283", 240, 283))
SHARED = (cdi.DeviceNode("/dev/nvidiactl", "/dev/nvidiactl", 195, 255),)
DEV = cdi.JobDevice(0, UUID, 2, NODES)


def task(**kw) -> Task:
    fields = dict(job_id="42", step_id="0", local_id=1, uid=1001, gid=1002, cwd="/home/u/run", device=DEV,
                  shared=SHARED, libraries=("/usr/lib/x86_64-linux-gnu/libcuda.so.1",))
    fields.update(kw)
    return Task(**fields)


def validate(spec: dict) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT7

    with open(os.path.join(SCHEMA_DIR, "schema.json"), encoding="utf-8") as fh:
        schema = json.load(fh)
    with open(os.path.join(SCHEMA_DIR, "defs.json"), encoding="utf-8") as fh:
        defs = Resource.from_contents(json.load(fh), default_specification=DRAFT7)
    jsonschema.Draft7Validator(schema, registry=Registry().with_resource("defs.json", defs)).validate(spec)


# ------------------------------------------------------------------------------------------ CDI spec
def test_job_spec_names_validates_and_reads_back():
    old = cdi.JobDevice(1, "MIG-GPU-1f2e/1/0", 2, NODES)  # pre-R470 UUIDs are no CDI name
    spec = cdi.job_spec("42", [DEV, old], SHARED)
    validate(spec)
    assert [d["name"] for d in spec["devices"]] == [UUID, "job42-0", "job42-1"]
    assert spec["containerEdits"]["deviceNodes"][0]["path"] == "/dev/nvidiactl"
    env = spec["devices"][0]["containerEdits"]["env"]
    assert env == [f"CUDA_VISIBLE_DEVICES={UUID}", f"NVIDIA_VISIBLE_DEVICES={UUID}"]
    assert cdi.parse_job_spec(spec, "42") == (DEV, old)
    assert cdi.shared_nodes(spec) == SHARED
    assert cdi.cdi_name("42", DEV) == f"slurm-gpu.io/mig={UUID}"
    assert cdi.cdi_name("42", old) == "slurm-gpu.io/mig=job42-1"


@pytest.mark.parametrize("spec", [{"kind": "nvidia.com/gpu", "devices": []}, [],
                                  {"kind": "slurm-gpu.io/mig", "devices": [{"name": "job42-1"}]}])
def test_foreign_or_broken_specs_are_refused(spec):
    with pytest.raises(StateError):
        cdi.parse_job_spec(spec, "42")


def test_agent_writes_the_spec_with_the_instance_and_removes_it(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("device nodes need root (mknod)")
    state = str(tmp_path / "sim.json")
    sandbox = tmp_path / "sb"
    simstate.init_state(state, [("H100-80GB", 2)], sandbox=str(sandbox))
    driver = open_driver("sim", sim_state=state)
    policy = AgentPolicy(admission="features", release_wait_s=0.3, release_poll_s=0.05, cgroup_root=None,
                         caps_dir=str(sandbox / "dev/nvidia-caps"), cdi_dir=str(tmp_path / "cdi"))
    agent = NodeAgent("n1", driver, Journal(str(tmp_path / "state"), boot_id="b"), FakeSlurm("n1"), policy)
    agent.slurm.add(10, "3g.40gb", 2, slices=8)
    try:
        out = agent.prepare(JobContext("10", 1001, 1002))
        assert out.action == "created" and not out.problems, out
        path = tmp_path / "cdi" / "slurm-gpu-job10.json"
        st = os.stat(path)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 1002, 0o640)
        spec = json.loads(path.read_text())
        validate(spec)
        devices = cdi.parse_job_spec(spec, "10")
        assert [d.mig_uuid for d in devices] == list(out.mig_uuids)
        live = {i.mig_uuid: i for i in driver.instances()}
        for dev in devices:
            inst = live[dev.mig_uuid]
            assert [n.path for n in dev.nodes] == [
                f"/dev/nvidia{dev.gpu_minor}", f"/dev/nvidia-caps/nvidia-cap{inst.gi_cap_minor}",
                f"/dev/nvidia-caps/nvidia-cap{inst.ci_cap_minor}"]
            assert all(n.host_path == str(sandbox) + n.path for n in dev.nodes)
        assert agent.release(JobContext("10", 1001, 1002)).action == "released"
        assert not path.exists()
        # an Epilog that never ran: reconcile drops the spec of a job the journal no longer knows
        agent.slurm.add(11, "1g.10gb", 1, slices=1)
        assert agent.prepare(JobContext("11", 1001, 1002)).action == "created"
        (tmp_path / "cdi" / "slurm-gpu-job99.json").write_text("{}")
        (tmp_path / "cdi" / "nvidia.yaml").write_text("{}")
        agent.reconcile()
        assert sorted(os.listdir(tmp_path / "cdi")) == ["nvidia.yaml", "slurm-gpu-job11.json"]
    finally:
        driver.close()


def test_cdi_dir_defaults():
    assert cdi_dir(Config()) == "/var/run/cdi"
    sim = Config(driver=DriverConfig(kind="sim", sim_state="/s/g.json", sim_sandbox="/s/sb"))
    assert cdi_dir(sim) == "/s/sb/cdi"
    assert cdi_dir(Config(containers=ContainersConfig(cdi=False))) is None
    cfg = parse_config({"version": 1, "containers": {"docker": False, "cdi_dir": "/etc/cdi"}}, node="n1")
    assert cfg.containers.docker is False and cdi_dir(cfg) == "/etc/cdi"
    with pytest.raises(ConfigError):
        parse_config({"version": 1, "containers": {"dockr": False}}, node="n1")


# ------------------------------------------------------------------------------------------ command lines
def test_apptainer_gets_a_private_dev_with_only_the_instance():
    args = ["exec", "--unsquash", "img.sif", "--", "python", "x.py", "--device", "cuda"]
    argv = container_argv("apptainer", "/usr/bin/apptainer", args, task())
    assert argv[:3] == ["/usr/bin/apptainer", "exec", "--contain"]
    binds = [argv[i + 1] for i, a in enumerate(argv) if a == "--bind"]
    assert binds[:4] == ["/dev/nvidia2", "/dev/nvidia-caps/nvidia-cap282", "/dev/nvidia-caps/nvidia-cap283",
                         "/dev/nvidiactl"]
    assert "/usr/lib/x86_64-linux-gnu/libcuda.so.1:/.singularity.d/libs/libcuda.so.1:ro" in binds
    assert "/home/u/run" in binds and argv[argv.index("--pwd") + 1] == "/home/u/run"
    assert f"CUDA_VISIBLE_DEVICES={UUID}" in argv and f"NVIDIA_VISIBLE_DEVICES={UUID}" in argv
    assert "--nv" not in argv
    assert argv[-6:] == ["--unsquash", "img.sif", "python", "x.py", "--device", "cuda"]


def test_sandbox_nodes_bind_from_their_host_path():
    dev = cdi.JobDevice(0, UUID, 0, (cdi.DeviceNode("/dev/nvidia0", "/sb/dev/nvidia0", 195, 0),))
    argv = container_argv("apptainer", "apptainer", ["exec", "i.sif"], task(device=dev, shared=()))
    assert "/sb/dev/nvidia0:/dev/nvidia0" in argv


def test_podman_rootless_keeps_the_user_and_names_the_task():
    args = ["--root", "/s", "run", "--network", "none", "img", "--", "id"]
    argv = container_argv("podman", "podman", args, task())
    assert argv[:4] == ["podman", "--root", "/s", "run"]
    assert "--userns=keep-id" in argv and "--rm" in argv
    assert argv[argv.index("--name") + 1] == "slurm-gpu-42-0-1"
    assert argv[argv.index("--label") + 1] == "io.slurm-gpu.job=42"
    devices = [argv[i + 1] for i, a in enumerate(argv) if a == "--device"]
    assert devices == [f"{n.host_path}:{n.path}:rw" for n in NODES + SHARED]
    assert argv[argv.index("-w") + 1] == "/home/u/run" and "/home/u/run:/home/u/run" in argv
    assert argv[-4:] == ["--network", "none", "img", "id"]
    name = f"slurm-gpu.io/mig={UUID}"
    cdi_argv = container_argv("podman", "podman", ["run", "img"], task(cdi_name=name))
    assert [cdi_argv[i + 1] for i, a in enumerate(cdi_argv) if a == "--device"] == [name]


def test_docker_runs_as_the_job_user():
    argv = container_argv("docker", "docker", ["-H", "unix:///s", "run", "img"], task())
    assert argv[argv.index("--user") + 1] == "1001:1002" and "--userns=keep-id" not in argv
    assert argv[-1] == "img"


@pytest.mark.parametrize("runtime,args", [
    ("docker", ["run", "--privileged", "img"]), ("podman", ["run", "--device=/dev/nvidia1", "img"]),
    ("docker", ["run", "--gpus", "all", "img"]), ("apptainer", ["exec", "--nv", "i.sif"]),
    ("docker", ["run", "-e", "NVIDIA_VISIBLE_DEVICES=all", "img"]),
    ("podman", ["run", "--env=CUDA_VISIBLE_DEVICES=0", "i"]),
    ("docker", ["run", "--runtime", "nvidia", "img"]),
    ("podman", ["run", "img", "python", "--device", "cuda"]),
    ("apptainer", ["exec", "--bind", "/dev:/dev", "i.sif"]),
    ("podman", ["run", "-v=/dev/nvidia-caps:/c", "i"]),
    ("docker", ["run", "--mount", "type=bind,source=/dev,target=/d", "img"]),
])
def test_widening_options_are_refused(runtime, args):
    with pytest.raises(BadInputError) as err:
        container_argv(runtime, runtime, args, task())
    if "python" in args:
        assert "after --" in str(err.value)


def test_split_command_needs_a_foreground_subcommand():
    assert split_command("podman", ["--root", "/x", "run", "img", "--", "a", "--", "b"]) == (
        ["--root", "/x"], "run", ["img"], ["a", "--", "b"])
    for runtime, args in (("podman", ["create", "img"]), ("apptainer", ["instance", "start", "i.sif"]),
                          ("docker", [])):
        with pytest.raises(BadInputError):
            split_command(runtime, args)
    check_options("docker", ["-e", "FOO=1", "-v", "/var/tmp/sb/dev:/sb", "--mount", "type=tmpfs,dst=/t"],
                  True)


# ------------------------------------------------------------------------------------------ refusals
def _config(tmp_path, **containers) -> Config:
    return Config(driver=DriverConfig(kind="sim", sim_state=str(tmp_path / "g.json"),
                                      sim_sandbox=str(tmp_path / "sb")),
                  containers=ContainersConfig(**containers), node="n1")


def test_outside_a_job_or_another_job_or_forbidden_docker(tmp_path):
    config = _config(tmp_path)
    with pytest.raises(nc.ContainerRefused, match="not inside a Slurm job"):
        nc.resolve_task("podman", config, {}, "")
    with pytest.raises(nc.ContainerRefused, match="is not the job this process runs in"):
        nc.resolve_task("podman", config, {"SLURM_JOB_ID": "7"},
                        f"4:devices:/slurm/uid_{os.getuid()}/job_8/step_0")
    with pytest.raises(nc.ContainerRefused, match="cannot be proven"):
        nc.resolve_task("docker", config, {"SLURM_JOB_ID": "7"}, "4:devices:/")
    with pytest.raises(nc.ContainerRefused, match="has no MIG instance"):
        nc.resolve_task("podman", config, {"SLURM_JOB_ID": "7"}, "")
    with pytest.raises(nc.ContainerRefused, match="docker is forbidden"):
        nc.resolve_task("docker", _config(tmp_path, docker=False), {"SLURM_JOB_ID": "7"}, "")


def test_task_picks_localid_mod_n_from_the_spec(tmp_path):
    config = _config(tmp_path)
    devs = [cdi.JobDevice(k, f"MIG-{k}aaa", 0, NODES) for k in range(2)]
    os.makedirs(tmp_path / "sb" / "cdi")
    spec_path = tmp_path / "sb" / "cdi" / "slurm-gpu-job7.json"
    spec_path.write_text(json.dumps(cdi.job_spec("7", devs)))
    os.chmod(spec_path, 0o640)
    if os.geteuid() != 0:
        with pytest.raises(StateError, match="not root's own"):
            nc.resolve_task("podman", config, {"SLURM_JOB_ID": "7"}, "")
        return
    env = {"SLURM_JOB_ID": "7", "SLURM_LOCALID": "3", "SLURM_STEP_ID": "2"}
    got = nc.resolve_task("apptainer", config, env, "")
    assert (got.device.mig_uuid, got.local_id, got.step_id, got.cdi_name) == ("MIG-1aaa", 3, "2", None)


def test_cli_help_and_refusal_exit_code(tmp_path, monkeypatch):
    from cli_runner import cli_runner

    from slurm_gpu.cli.main import main

    def invoke(args):
        return cli_runner().invoke(main, args)

    res = invoke(["container", "--help"])
    assert res.exit_code == 0 and "Example" in res.output and "--json" in res.output
    cfg = tmp_path / "config.yaml"
    cfg.write_text("version: 1\ncontainers:\n  docker: false\n")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    res = invoke(["--config", str(cfg), "container", "docker", "run", "img"])
    assert res.exit_code == 3 and "docker is forbidden" in res.stderr
    res = invoke(["--config", str(cfg), "container", "--json", "podman", "run", "img"])
    assert res.exit_code == 3 and "not inside a Slurm job" in res.stderr


def test_cli_passes_the_runtime_command_untouched(monkeypatch):
    from cli_runner import cli_runner

    import slurm_gpu.hooks.container as entry
    from slurm_gpu.cli.main import main

    seen = {}

    def execute(runtime, args, dry_run=False, as_json=False, config_path=None):
        seen.update(runtime=runtime, args=args, json=as_json)
        return 7

    monkeypatch.setattr(entry, "execute", execute)
    args = ["--root", "/x", "run", "-v", "a:b", "img", "--", "python", "x.py", "--device", "cuda"]
    res = cli_runner().invoke(main, ["container", "--json", "podman", *args])
    assert res.exit_code == 7 and seen == {"runtime": "podman", "args": tuple(args), "json": True}


def test_epilog_sweep_asks_no_daemon_that_is_not_there(tmp_path):
    absent = f"unix://{tmp_path}/none.sock"
    cfg = Config(containers=ContainersConfig(docker_bin="/bin/false", docker_host=absent))
    assert nc.remove_docker_leftovers(cfg, "42") == []
    forbidden = Config(containers=ContainersConfig(docker=False, docker_bin="/bin/false"))
    assert nc.remove_docker_leftovers(forbidden, "42") == []
    assert nc.remove_docker_leftovers(cfg, "../42") == []
