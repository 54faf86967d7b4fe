"""The simulated NVML follows the driver's rules, checked through the real NvmlDriver code path."""

from __future__ import annotations

import ctypes
import json
import multiprocessing
import os
import shutil
import stat
import subprocess
import tempfile
import time

import pynvml
import pytest

from slurm_gpu.core.catalog import load_catalog
from slurm_gpu.core.errors import BadInputError, DriverError, StateError
from slurm_gpu.devices.open import open_driver
from slurm_gpu.devices.simnvml import SimNvml
from slurm_gpu.devices.simprocs import attach_process, reset_gpu
from slurm_gpu.devices.simstate import describe, init_state, load_state, reset_state

H100 = load_catalog().model("H100-80GB")
A100 = load_catalog().model("A100-40GB")
IN_USE = pynvml.NVML_ERROR_IN_USE
INSUFFICIENT = pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES
INVALID = pynvml.NVML_ERROR_INVALID_ARGUMENT


def pid_of(model, name):
    return model.profile(name).profile_id


@pytest.fixture
def state(tmp_path):
    path = tmp_path / "sim.json"
    init_state(str(path), [("H100-80GB", 1), ("A100-40GB", 1)])
    return str(path)


@pytest.fixture
def drv(state):
    d = open_driver("sim", state)
    yield d
    d.close()


def test_gi_ids_lowest_free_and_not_tied_to_placement(drv):
    one = pid_of(H100, "1g.10gb")
    created = [drv.create(0, one, start) for start in (6, 0, 3)]
    assert [i.gi_id for i in created] == [1, 2, 3]
    assert all(i.ci_id == 0 for i in created)
    drv.destroy(0, 2)
    again = drv.create(0, one, 5)
    assert again.gi_id == 2 and again.start == 5
    assert sorted(i.gi_id for i in drv.instances(0)) == [1, 2, 3]
    assert len({i.mig_uuid for i in drv.instances(0)}) == 3


def test_mig_device_handle_indices_are_sparse(drv, state):
    one = pid_of(H100, "1g.10gb")
    a, b, c = (drv.create(0, one, s) for s in (0, 1, 2))
    drv.destroy(0, b.gi_id)
    nv = SimNvml(state)
    nv.nvmlInit()
    h = nv.nvmlDeviceGetHandleByIndex(0)
    assert nv.nvmlDeviceGetMaxMigDeviceCount(h) == 7
    with pytest.raises(pynvml.NVMLError_NotFound):
        nv.nvmlDeviceGetMigDeviceHandleByIndex(h, 1)
    uuid2 = nv.nvmlDeviceGetUUID(nv.nvmlDeviceGetMigDeviceHandleByIndex(h, 2))
    assert uuid2 == c.mig_uuid
    # the driver skips the hole instead of stopping at it
    assert {i.mig_uuid for i in drv.instances(0)} == {a.mig_uuid, c.mig_uuid}
    nv.nvmlShutdown()


def test_in_use_while_a_real_process_runs(drv, state):
    inst = drv.create(0, pid_of(H100, "2g.20gb"), 2)
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        attach_process(state, inst.mig_uuid, sleeper.pid)
        assert drv.processes(0, inst.gi_id, inst.ci_id) == [sleeper.pid]
        with pytest.raises(DriverError) as err:
            drv.destroy(0, inst.gi_id)
        assert err.value.nvml_code == IN_USE
        assert "gi_id=" in str(err.value) and "GPU 0" in str(err.value)
        with pytest.raises(DriverError) as err:
            drv.set_mig_mode(0, False)
        assert err.value.nvml_code == IN_USE
    finally:
        sleeper.kill()
        sleeper.wait()
    assert drv.processes(0, inst.gi_id, inst.ci_id) == []
    drv.destroy(0, inst.gi_id)
    assert drv.instances(0) == []


def test_attach_needs_a_live_process_and_a_known_uuid(drv, state):
    inst = drv.create(0, pid_of(H100, "1g.10gb"), 0)
    with pytest.raises(BadInputError):
        attach_process(state, "MIG-00000000-0000-0000-0000-000000000000", os.getpid())
    dead = subprocess.Popen(["true"])
    dead.wait()
    with pytest.raises(BadInputError):
        attach_process(state, inst.mig_uuid, dead.pid)


@pytest.mark.parametrize(
    "first, second, code",
    [
        (("3g.40gb", 0), ("4g.40gb", 0), INSUFFICIENT),  # overlap
        (("3g.40gb", 0), ("2g.20gb", 2), INSUFFICIENT),  # overlap inside
        (("1g.20gb", 6), ("1g.10gb", 6), INSUFFICIENT),  # overlap at the top slice
        (("7g.80gb", 0), ("1g.10gb", 7), INVALID),  # no 1g placement at 7
        (("1g.10gb", 0), ("3g.40gb", 2), INVALID),  # 3g only at 0 or 4
    ],
)
def test_placement_rules(drv, first, second, code):
    drv.create(0, pid_of(H100, first[0]), first[1])
    with pytest.raises(DriverError) as err:
        drv.create(0, pid_of(H100, second[0]), second[1])
    assert err.value.nvml_code == code
    assert len(drv.instances(0)) == 1


def test_compute_slices_and_max_instances_exhaust(drv):
    # 4g@0 + 3g@4 uses all 7 compute slices; a 2g@... has nowhere to go anyway, but 1g.20gb count
    # limits: four 1g.20gb fill memory, a fifth profile-15 instance is refused by max_instances.
    drv.create(0, pid_of(H100, "4g.40gb"), 0)
    drv.create(0, pid_of(H100, "3g.40gb"), 4)
    with pytest.raises(DriverError) as err:
        drv.create(0, pid_of(H100, "1g.10gb"), 0)
    assert err.value.nvml_code == INSUFFICIENT
    me = pid_of(A100, "1g.5gb+me")
    drv.create(1, me, 0)
    with pytest.raises(DriverError) as err:
        drv.create(1, me, 1)  # one +me instance per GPU
    assert err.value.nvml_code == INSUFFICIENT


def test_mig_mode_pending_on_ampere_immediate_on_hopper(drv, state):
    assert drv.set_mig_mode(1, False) == (True, False, pynvml.NVML_SUCCESS)
    gpu = drv.gpus()[1]
    assert gpu.mig_current and not gpu.mig_pending
    assert reset_gpu(state, 1) == (0, 0)
    assert not drv.gpus()[1].mig_current
    assert drv.instances(1) == []
    with pytest.raises(DriverError) as err:
        drv.create(1, pid_of(A100, "1g.5gb"), 0)
    assert err.value.nvml_code == pynvml.NVML_ERROR_NOT_SUPPORTED
    assert drv.set_mig_mode(0, False) == (False, False, pynvml.NVML_SUCCESS)
    assert drv.set_mig_mode(0, True) == (True, True, pynvml.NVML_SUCCESS)


def test_mig_mode_refused_while_instances_exist(drv):
    drv.create(1, pid_of(A100, "3g.20gb"), 4)
    with pytest.raises(DriverError) as err:
        drv.set_mig_mode(1, False)
    assert err.value.nvml_code == IN_USE
    assert drv.gpus()[1].mig_pending


def test_gpu_instance_undone_when_compute_instance_fails(drv, monkeypatch):
    monkeypatch.setenv(
        "SLURM_GPU_SIM_FAULTS", "nvmlGpuInstanceCreateComputeInstance@1=INSUFFICIENT_RESOURCES"
    )
    with pytest.raises(DriverError) as err:
        drv.create(0, pid_of(H100, "3g.40gb"), 0)
    assert err.value.nvml_code == INSUFFICIENT
    assert "nvmlGpuInstanceCreateComputeInstance" in str(err.value)
    assert drv.instances(0) == []
    # only the first call failed: the same placement works now
    assert drv.create(0, pid_of(H100, "3g.40gb"), 0).start == 0


def test_failed_undo_is_reported(drv, monkeypatch):
    monkeypatch.setenv(
        "SLURM_GPU_SIM_FAULTS",
        "nvmlGpuInstanceCreateComputeInstance=UNKNOWN;nvmlGpuInstanceDestroy@1=IN_USE",
    )
    with pytest.raises(DriverError) as err:
        drv.create(0, pid_of(H100, "1g.10gb"), 0)
    assert "also failed" in str(err.value)
    monkeypatch.delenv("SLURM_GPU_SIM_FAULTS")
    leftover = drv.instances(0)
    assert [(i.ci_id, i.mig_uuid) for i in leftover] == [(None, None)]  # a half-created GI is visible
    drv.destroy(0, leftover[0].gi_id)
    assert drv.instances(0) == []


def test_fault_delay_and_bad_spec(state):
    nv = SimNvml(state, faults="nvmlDeviceGetCount=delay:0.2")
    nv.nvmlInit()
    t0 = time.monotonic()
    assert nv.nvmlDeviceGetCount() == 2
    assert time.monotonic() - t0 >= 0.2
    for bad in ("nvmlDeviceGetCount", "nvmlDeviceGetCount@0=IN_USE", "x=NO_SUCH_ERROR", "x=delay:abc"):
        with pytest.raises(BadInputError):
            SimNvml(state, faults=bad)


def test_state_file_corruption_is_state_error(state):
    with pytest.raises(StateError, match="does not exist"):
        load_state(state + ".missing")
    doc = json.loads(open(state).read())
    doc["body"]["gpus"][0]["mig_current"] = 0  # changed without a new checksum
    with open(state, "w") as fh:
        json.dump(doc, fh)
    with pytest.raises(StateError, match="checksum") as err:
        open_driver("sim", state)
    assert state in str(err.value)
    with open(state, "w") as fh:
        fh.write("{not json")
    with pytest.raises(StateError, match="not valid JSON"):
        SimNvml(state).nvmlInit()


def test_state_file_is_private_and_atomic(drv, state, tmp_path):
    drv.create(0, pid_of(H100, "1g.10gb"), 0)
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left



def test_state_file_is_canonical_and_a_writer_reads_what_it_wrote(drv, state):
    from slurm_gpu.devices import simstate

    drv.create(0, pid_of(H100, "1g.10gb"), 0)
    text = open(state).read()
    doc = json.loads(text)
    assert text == json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n"
    with simstate.locked_state(state) as body:
        body["next_serial"] += 1
    body["gpus"].clear()  # the writer's own body, changed after the write: not what readers get
    cached = simstate.read_state(state)
    simstate._cache.clear()  # as another process reads it
    assert cached == simstate.read_state(state) and cached["gpus"]

def test_uninitialised_and_unknown_calls_raise_nvml_errors(state):
    nv = SimNvml(state)
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        nv.nvmlDeviceGetCount()
    nv.nvmlInit()
    with pytest.raises(pynvml.NVMLError_FunctionNotFound):
        nv.nvmlDeviceGetPowerUsage(nv.nvmlDeviceGetHandleByIndex(0))
    assert (
        nv.NVML_ERROR_IN_USE == IN_USE
        and nv.c_nvmlGpuInstancePlacement_t is pynvml.c_nvmlGpuInstancePlacement_t
    )


def test_profile_index_is_not_profile_id(state):
    nv = SimNvml(state)
    nv.nvmlInit()
    h = nv.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):  # 19 is an id, not an index
        nv.nvmlDeviceGetGpuInstanceProfileInfo(h, 19)
    info = nv.nvmlDeviceGetGpuInstanceProfileInfo(h, pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE)
    assert info.id == 19 and info.sliceCount == 1 and info.instanceCount == 7


def test_stale_gpu_instance_handle_is_rejected(state):
    nv = SimNvml(state)
    nv.nvmlInit()
    h = nv.nvmlDeviceGetHandleByIndex(0)
    placement = pynvml.c_nvmlGpuInstancePlacement_t(0, 1)
    gi = nv.nvmlDeviceCreateGpuInstanceWithPlacement(h, 19, ctypes.byref(placement))
    nv.nvmlGpuInstanceDestroy(gi)
    nv.nvmlDeviceCreateGpuInstanceWithPlacement(h, 19, ctypes.byref(placement))  # same gi_id again
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nv.nvmlGpuInstanceGetInfo(gi)


def test_placements_need_a_big_enough_array(state):
    nv = SimNvml(state)
    nv.nvmlInit()
    h = nv.nvmlDeviceGetHandleByIndex(0)
    count = ctypes.c_uint(0)
    nv.nvmlDeviceGetGpuInstancePossiblePlacements(h, 19, None, ctypes.byref(count))
    assert count.value == 7
    small = (pynvml.c_nvmlGpuInstancePlacement_t * 3)()
    count.value = 3
    with pytest.raises(pynvml.NVMLError_InsufficientSize):
        nv.nvmlDeviceGetGpuInstancePossiblePlacements(h, 19, small, ctypes.byref(count))


def test_reset_state_and_describe(drv, state):
    inst = drv.create(0, pid_of(H100, "7g.80gb"), 0)
    info = describe(state)
    assert info["gpus"][0]["instances"][0]["mig_uuid"] == inst.mig_uuid
    assert info["gpus"][1]["model"] == "A100-40GB"
    reset_state(state)
    assert drv.instances() == []
    assert describe(state)["gpus"][0]["uuid"] == info["gpus"][0]["uuid"]


def test_init_state_rejects_bad_input(tmp_path):
    with pytest.raises(BadInputError):
        init_state(str(tmp_path / "s.json"), [])
    with pytest.raises(BadInputError):
        init_state(str(tmp_path / "s.json"), [("H100-80GB", 0)])
    with pytest.raises(BadInputError):  # UnknownModelError is a BadInputError
        init_state(str(tmp_path / "s.json"), [("Z9000", 1)])


# ------------------------------------------------------------------ concurrency


def _grab_any(state_path, queue):
    drv = open_driver("sim", state_path)
    got = []
    for start in range(7):
        try:
            got.append(drv.create(0, 19, start).start)
        except DriverError as exc:
            if exc.nvml_code != INSUFFICIENT:
                raise
    queue.put(got)


def _grab_same(state_path, queue):
    drv = open_driver("sim", state_path)
    try:
        drv.create(0, 9, 4)
        queue.put("ok")
    except DriverError as exc:
        queue.put(exc.nvml_code)


@pytest.mark.parametrize("target, expect", [(_grab_any, None), (_grab_same, "one")])
def test_concurrent_creates_never_overlap(state, target, expect):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    workers = [ctx.Process(target=target, args=(state, queue)) for _ in range(6)]
    for w in workers:
        w.start()
    results = [queue.get(timeout=60) for _ in workers]
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    instances = open_driver("sim", state).instances(0)
    slots = sorted((i.start, i.end) for i in instances)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(slots, slots[1:]))
    assert len({i.gi_id for i in instances}) == len(instances)
    if expect == "one":
        assert sorted(results, key=str) == sorted(["ok"] + [INSUFFICIENT] * 5, key=str)
    else:
        starts = sorted(s for got in results for s in got)
        assert starts == list(range(7))  # every slot taken exactly once


# ------------------------------------------------------------------ capability files


def test_capability_minors_and_device_files(tmp_path):
    sandbox = tmp_path / "sandbox"
    path = str(tmp_path / "sim.json")
    init_state(path, [("A100-80GB", 2)], sandbox=str(sandbox))
    lines = (sandbox / "mig-minors").read_text().splitlines()
    assert "gpu1/gi1/access 147" in lines and "gpu1/gi1/ci0/access 148" in lines
    drv = open_driver("sim", path)
    inst = drv.create(1, 9, 4)
    assert inst.gi_cap_minor == 3 + 135 * 1 + 9 * inst.gi_id
    assert inst.ci_cap_minor == inst.gi_cap_minor + 1 + inst.ci_id
    assert drv.instances(1) == [inst]
    if os.geteuid() != 0:
        pytest.skip("device nodes need root (mknod)")
    major = describe(path)["cap_major"]
    assert 240 <= major <= 254
    for minor in (inst.gi_cap_minor, inst.ci_cap_minor):
        st = os.stat(sandbox / "dev" / "nvidia-caps" / f"nvidia-cap{minor}")
        assert stat.S_ISCHR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o444
        assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (major, minor)
    parent = os.stat(sandbox / "dev" / "nvidia1")
    assert (os.major(parent.st_rdev), os.minor(parent.st_rdev)) == (195, 1)
    drv.destroy(1, inst.gi_id)
    left = sorted(p.name for p in (sandbox / "dev" / "nvidia-caps").iterdir())
    assert left == ["nvidia-cap1", "nvidia-cap2"]


def test_no_permission_for_unprivileged_users():
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to another user")
    directory = tempfile.mkdtemp()  # pytest's tmp_path sits under a 0700 directory
    os.chmod(directory, 0o755)
    path = os.path.join(directory, "sim.json")
    init_state(path, [("H100-80GB", 1)])
    os.chmod(path, 0o644)
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.close(reader)
        code = b"?"
        try:
            os.setgid(65534)
            os.setuid(65534)
            drv = open_driver("sim", path)
            drv.gpus()  # queries are allowed
            codes = []
            for attempt in (lambda: drv.create(0, 19, 0), lambda: drv.set_mig_mode(0, False)):
                try:
                    attempt()
                except DriverError as exc:
                    codes.append(str(exc.nvml_code))
            code = ",".join(codes).encode()
        finally:
            os.write(writer, code)
            os._exit(0)
    os.close(writer)
    answer = os.read(reader, 16)
    os.waitpid(child, 0)
    shutil.rmtree(directory)
    no_permission = str(pynvml.NVML_ERROR_NO_PERMISSION)
    assert answer.decode() == f"{no_permission},{no_permission}"
