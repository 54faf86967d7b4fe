"""The hook entry points without a Slurm controller: TaskProlog as Slurm runs it, and the reconcile
command over a configured simulated node (Slurm unreachable, so recorded jobs count as running)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from slurm_gpu.devices import simstate
from slurm_gpu.devices.open import open_driver
from slurm_gpu.hooks import task_prolog
from slurm_gpu.state.journal import Journal

TASK_PROLOG = Path(task_prolog.__file__)
REPO = Path(__file__).resolve().parents[2]


def run_task_prolog(state_dir, **env):
    full = {"PATH": "/usr/bin:/bin", **{k: str(v) for k, v in env.items()}}
    return subprocess.run(["python3", "-I", "-S", str(TASK_PROLOG), str(state_dir)], env=full,
                          capture_output=True, text=True, timeout=30, check=True).stdout


@pytest.fixture
def tasks(tmp_path):
    journal = Journal(str(tmp_path), boot_id="b")
    uuids = [f"MIG-{n}aaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee" for n in range(2)]
    journal.write_task_env("5", os.getuid(), os.getgid(), uuids)
    return tmp_path, uuids


def test_task_prolog_maps_local_id_modulo_instances(tasks):
    state, uuids = tasks
    for local in range(4):
        out = run_task_prolog(state, SLURM_JOB_ID=5, SLURM_LOCALID=local)
        lines = out.splitlines()
        assert lines[0] == f"export CUDA_VISIBLE_DEVICES={uuids[local % 2]}"
        assert lines[1] == f"export SLURM_GPU_MIG_DEVICES={','.join(uuids)}"
        assert lines[2] == f"export NVIDIA_VISIBLE_DEVICES={uuids[local % 2]}"  # what Enroot's hook reads


def test_task_prolog_batch_step_gets_the_first(tasks):
    state, uuids = tasks
    assert run_task_prolog(state, SLURM_JOB_ID=5).splitlines()[0] == f"export CUDA_VISIBLE_DEVICES={uuids[0]}"


def test_task_prolog_prints_nothing_for_jobs_without_mig(tasks):
    state, _ = tasks
    assert run_task_prolog(state, SLURM_JOB_ID=6) == ""
    assert run_task_prolog(state) == ""
    assert run_task_prolog(state, SLURM_JOB_ID="../5") == ""  # never a path outside tasks/


def test_task_prolog_node_substitution(tmp_path):
    (tmp_path / "n7").mkdir()
    journal = Journal(str(tmp_path / "n7" / "state"), boot_id="b")
    journal.write_task_env("9", os.getuid(), os.getgid(), ["MIG-11111111-2222-3333-4444-555555555555"])
    out = run_task_prolog(tmp_path / "{node}" / "state", SLURM_JOB_ID=9, SLURMD_NODENAME="n7")
    assert out.startswith("export CUDA_VISIBLE_DEVICES=MIG-11111111-")


def test_task_prolog_refuses_protocol_injection(tmp_path):
    (tmp_path / "tasks" / str(os.getuid())).mkdir(parents=True)
    (tmp_path / "tasks" / str(os.getuid()) / "3").write_text("MIG-1;rm\nexport X=1\n")
    out = run_task_prolog(tmp_path, SLURM_JOB_ID=3)
    assert out == "print slurm-gpu: the job's MIG device file is malformed\n"


def test_task_prolog_accepts_every_form_the_writer_accepts(tmp_path):
    journal = Journal(str(tmp_path), boot_id="b")
    old = "MIG-GPU-8a8e4a3b-1c4f-2a1b-9c3d-123456789abc/1/0"
    journal.write_task_env("4", os.getuid(), os.getgid(), [old])
    assert run_task_prolog(tmp_path, SLURM_JOB_ID=4).splitlines()[0] == f"export CUDA_VISIBLE_DEVICES={old}"


def test_task_prolog_gives_each_het_component_its_own_instances(tmp_path):
    # Two nodes' state dirs; the leader (100) has instances on n1, component 1 (101) on n2. A step over
    # both groups gives every task the leader's SLURM_JOB_ID and the step's whole node list.
    leader, mine = "MIG-11111111-2222-3333-4444-555555555555", "MIG-22222222-2222-3333-4444-555555555555"
    Journal(str(tmp_path / "n1"), boot_id="b").write_task_env("100", os.getuid(), os.getgid(), [leader])
    Journal(str(tmp_path / "n2"), boot_id="b").write_task_env("101", os.getuid(), os.getgid(), [mine])
    het = {"SLURM_JOB_ID": 100, "SLURM_JOB_ID_HET_GROUP_0": 100, "SLURM_JOB_ID_HET_GROUP_1": 101,
           "SLURM_JOB_NODELIST_HET_GROUP_0": "n1", "SLURM_JOB_NODELIST_HET_GROUP_1": "n2",
           "SLURM_JOB_NODELIST": "n[1-2]"}
    inherited = {"CUDA_VISIBLE_DEVICES": leader, "SLURM_GPU_MIG_DEVICES": leader}
    for node, uuid in (("n1", leader), ("n2", mine)):
        out = run_task_prolog(tmp_path / "{node}", SLURMD_NODENAME=node, **het, **inherited)
        assert out.splitlines()[0] == f"export CUDA_VISIBLE_DEVICES={uuid}"
    # A node where neither has instances: the task loses what srun copied from the batch step.
    out = run_task_prolog(tmp_path / "{node}", SLURMD_NODENAME="n3", **het, **inherited)
    assert out.splitlines() == ["unset CUDA_VISIBLE_DEVICES", "unset SLURM_GPU_MIG_DEVICES"]
    # Both components on one node: told apart by the component's own node list, else none is set.
    Journal(str(tmp_path / "n2"), boot_id="b").write_task_env("100", os.getuid(), os.getgid(), [leader])
    one = {**het, "SLURM_JOB_NODELIST": "n2"}
    assert run_task_prolog(tmp_path / "{node}", SLURMD_NODENAME="n2", **one).startswith(
        f"export CUDA_VISIBLE_DEVICES={mine}")
    out = run_task_prolog(tmp_path / "{node}", SLURMD_NODENAME="n2", **het)
    assert "none is set for this task" in out


def test_task_prolog_keeps_a_cuda_setting_that_is_not_ours(tasks):
    state, _ = tasks
    assert run_task_prolog(state, SLURM_JOB_ID=6, CUDA_VISIBLE_DEVICES="0") == ""


def test_task_prolog_imports_only_the_task_file_format():
    code = (f"import sys, runpy; sys.argv=['x','/nonexistent']; runpy.run_path({str(TASK_PROLOG)!r});"
            "print(sorted(m for m in sys.modules if m.startswith('slurm_gpu')))")
    out = subprocess.run(["python3", "-I", "-S", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(["slurm_gpu", "slurm_gpu.core", "slurm_gpu.core.errors",
                                      "slurm_gpu.state", "slurm_gpu.state.task_env"])


@pytest.fixture
def configured_node(tmp_path):
    state = tmp_path / "gpus.json"
    simstate.init_state(str(state), [("H100-80GB", 2)], sandbox=str(tmp_path / "sb"))
    config = tmp_path / "config.yaml"
    config.write_text(
        "version: 1\n"
        f"driver:\n  kind: sim\n  sim_state: {state}\n  sim_sandbox: {tmp_path / 'sb'}\n"
        f"state_dir: {tmp_path / 'state'}\n"
        f"slurm:\n  bin_dir: {tmp_path / 'no-slurm'}\n"  # the controller cannot be asked
    )
    return tmp_path, str(state), str(config)


def slurm_gpu(config, *args):
    env = {**os.environ, "SLURM_GPU_CONFIG": config}
    return subprocess.run([sys.executable, "-m", "slurm_gpu", *args], env=env, capture_output=True,
                          text=True, timeout=60, cwd=REPO)


def test_reconcile_command_reaps_an_orphan_and_reports_json(configured_node):
    tmp, state, config = configured_node
    orphan = open_driver("sim", sim_state=state).create(0, 19, 2)
    dry = slurm_gpu(config, "reconcile", "--dry-run", "--json", "--node", "n1")
    assert dry.returncode == 0, dry.stderr
    doc = json.loads(dry.stdout)
    assert doc["schema"] == "slurm-gpu.reconcile/v1" and doc["dry_run"] is True
    assert doc["slurm_error"]
    assert [(a["kind"], a["done"]) for a in doc["actions"]] == [("destroy_orphan", False)]
    assert orphan.mig_uuid in doc["actions"][0]["detail"]
    assert len(open_driver("sim", sim_state=state).instances()) == 1

    real = slurm_gpu(config, "reconcile", "--node", "n1")
    assert real.returncode == 0, real.stderr
    assert "destroy_orphan" in real.stdout and "done" in real.stdout
    assert open_driver("sim", sim_state=state).instances() == []
    log = (tmp / "state" / "hooks.log").read_text().splitlines()
    assert json.loads(log[-1])["hook"] == "reconcile"


def hook_entry(config, *args, **env):
    """``python -m slurm_gpu.hooks.entry ARGS``: what the console script slurm-gpu-hook runs."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_JOB_")}
    full.update(SLURM_GPU_CONFIG=config, **env)
    return subprocess.run([sys.executable, "-m", "slurm_gpu.hooks.entry", *args], env=full,
                          capture_output=True, text=True, timeout=60, cwd=REPO)


@pytest.mark.parametrize("form", ["cli", "entry"])
def test_prolog_without_job_environment_fails_without_touching_gpus(configured_node, form):
    _, state, config = configured_node
    proc = slurm_gpu(config, "prolog") if form == "cli" else hook_entry(config, "prolog")
    assert proc.returncode == 1 and "SLURM_JOB_ID" in proc.stderr
    assert open_driver("sim", sim_state=state).instances() == []


def test_hook_entry_imports_no_click(configured_node):
    # A whole prolog up to the Slurm read (configuration, driver, journal, Slurm client), with no CLI.
    _, _, config = configured_node
    code = (
        "import sys\n"
        "from slurm_gpu.hooks.entry import main\n"
        "rc = main(['--config', sys.argv[1], 'prolog'])\n"
        "loaded = sorted(m for m in sys.modules\n"
        "                if m.split('.')[0] == 'click' or m.startswith('slurm_gpu.cli'))\n"
        "print('LOADED', loaded, 'node.agent' in ' '.join(sys.modules), rc)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_GPU_CONFIG")}
    env.update(SLURM_JOB_ID="5", SLURM_JOB_UID=str(os.getuid()), SLURM_JOB_GID=str(os.getgid()))
    out = subprocess.run([sys.executable, "-c", code, config], env=env, capture_output=True, text=True,
                         timeout=60, cwd=REPO)
    assert out.stdout.strip().splitlines()[-1] == "LOADED [] True 1", out.stderr
    assert "no-slurm" in out.stderr  # it got as far as asking Slurm


def test_the_client_path_imports_only_what_asking_the_server_needs():
    # What a served hook's process loads (the launcher's -I -S interpreter): no os, no typing, and no
    # __future__ module (quoted annotations instead), each a fraction of every job's start.
    code = ("import sys; sys.path.insert(0, sys.argv[1])\n"
            "import slurm_gpu.hooks.entry, slurm_gpu.hooks.client\n"
            "print(sorted(m for m in ('os', 'typing', '__future__', 'socket') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code, str(REPO)], capture_output=True, text=True,
                         timeout=60, cwd="/")
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_hook_entry_command_line(configured_node):
    _, _, config = configured_node
    assert hook_entry(config, "--help").returncode == 0
    for bad in ([], ["task-prolog"], ["prolog", "epilog"], ["--config"]):
        proc = hook_entry(config, *bad)
        assert proc.returncode == 2 and proc.stderr.startswith("usage: slurm-gpu-hook"), (bad, proc.stderr)
    job = {"SLURM_JOB_ID": "5", "SLURM_JOB_UID": str(os.getuid()), "SLURM_JOB_GID": str(os.getgid())}
    proc = hook_entry(config, "--config", config + ".missing", "epilog", **job)
    assert proc.returncode == 1 and "does not exist" in proc.stderr


def test_shipped_hook_scripts_are_thin_and_use_absolute_paths():
    for rel in ("prolog.d/50-slurm-gpu", "epilog.d/50-slurm-gpu", "task-prolog.d/slurm-gpu"):
        path = REPO / rel
        assert os.access(path, os.X_OK), rel
        for line in path.read_text().splitlines():
            if line.startswith("exec "):
                assert line.split()[1].startswith('"$'), line
            elif "=" in line and not line.startswith("#"):
                assert line.split("=", 1)[1].startswith("/"), line
    # The root hooks start through the hook entry (no click), not the CLI.
    for hook in ("prolog", "epilog"):
        text = (REPO / f"{hook}.d/50-slurm-gpu").read_text()
        assert "SLURM_GPU_HOOK=/usr/local/bin/slurm-gpu-hook\n" in text
        assert text.endswith(f'exec "$SLURM_GPU_HOOK" {hook}\n')


def test_a_log_line_that_cannot_be_written_never_fails_a_hook(tmp_path, capsys):
    from types import SimpleNamespace

    from slurm_gpu.hooks.runtime import log_event

    (tmp_path / "file").write_text("")
    config = SimpleNamespace(log=SimpleNamespace(file=str(tmp_path / "file" / "hooks.log")),
                             state_dir=str(tmp_path))
    log_event(SimpleNamespace(node="n1", config=config), "prolog", {"action": "created"})
    assert '"action":"created"' in capsys.readouterr().err
