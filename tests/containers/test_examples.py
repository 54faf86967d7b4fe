"""examples/: the PyTorch and TensorFlow job scripts. They check on real MIG hardware that the framework
sees exactly one device of the job's profile; here (no GPU, the CPU build of PyTorch) only what needs none:
the check itself, what the scripts print, their exit codes and the job scripts' syntax."""

from __future__ import annotations

import doctest
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.containers
EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        "examples")
sys.path.insert(0, EXAMPLES)
import migcheck  # noqa: E402

UUID = "MIG-5c3a0000-0000-4000-8000-000000000001"


def test_check_doctests_and_sizes():
    assert doctest.testmod(migcheck).failed == 0
    h100_1g = migcheck.Device("NVIDIA H100 80GB HBM3 MIG 1g.10gb", 9984 * 2**20)
    assert migcheck.check([h100_1g], "gpu:1g.10gb:1", UUID) == []
    assert migcheck.check([h100_1g], "3g.40gb", UUID)  # wrong size and name
    assert "one MIG instance per process" in migcheck.check([h100_1g, h100_1g], "1g.10gb", UUID)[0]
    assert "not a MIG UUID" in migcheck.check([h100_1g], "1g.10gb", "0")[0]
    with pytest.raises(ValueError):
        migcheck.parse_profile("big")


def test_pytorch_script_reports_what_torch_sees_without_a_gpu():
    pytest.importorskip("torch")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=UUID, NVIDIA_VISIBLE_DEVICES=UUID, SLURM_LOCALID="0")
    proc = subprocess.run([sys.executable, os.path.join(EXAMPLES, "pytorch_mig.py"), "1g.10gb"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout.splitlines()[-1])
    assert doc["framework"] == "pytorch" and doc["version"].startswith("2.")
    assert doc["CUDA_VISIBLE_DEVICES"] == UUID == doc["NVIDIA_VISIBLE_DEVICES"]
    assert doc["devices"] == [] and doc["ok"] is False
    assert doc["problems"] == [f"the framework sees no CUDA device (CUDA_VISIBLE_DEVICES={UUID})"]


@pytest.mark.parametrize("script", ["pytorch_mig.py", "tensorflow_mig.py"])
def test_scripts_usage_without_the_framework(script):
    path = os.path.join(EXAMPLES, script)
    assert subprocess.run([sys.executable, path, "--help"], capture_output=True, timeout=30).returncode == 0
    assert subprocess.run([sys.executable, path], capture_output=True, timeout=30).returncode == 2


@pytest.mark.parametrize("script", ["job-pytorch.sh", "job-tensorflow.sh"])
def test_job_scripts_parse_and_use_the_container_command(script):
    path = os.path.join(EXAMPLES, script)
    assert subprocess.run(["sh", "-n", path]).returncode == 0
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    assert "#SBATCH --gres=gpu:" in text and "srun slurm-gpu container " in text
