"""scripts/check-real-gpu.sh on a machine without an NVIDIA GPU: a clear message, nothing checked."""

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "scripts" / "check-real-gpu.sh"


def test_without_a_gpu_it_says_so_and_changes_nothing(tmp_path):
    env = dict(os.environ, PATH="/usr/bin:/bin")  # no nvidia-smi on this machine's PATH
    out = tmp_path / "seen.json"
    result = subprocess.run([str(SCRIPT), str(out)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 77
    assert "read-only" in result.stdout and "no NVIDIA GPU" in result.stdout
    assert not out.exists()


def test_the_script_makes_no_changing_call():
    text = SCRIPT.read_text()
    for forbidden in ("-mig 1", "-mig 0", " -cgi", " -dgi", " -cci", " -dci", "nvidia-smi -r", "set_mig_mode",
                      "--gpu-reset"):
        assert forbidden not in text, forbidden
