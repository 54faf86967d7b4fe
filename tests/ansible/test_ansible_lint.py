"""ansible-lint, production profile, on the role and the sample playbook (``ansible/.ansible-lint``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ansible]

ANSIBLE_DIR = Path(__file__).resolve().parents[2] / "ansible"


def test_ansible_lint_passes_on_the_role_and_playbook():
    lint = Path(sys.executable).parent / "ansible-lint"
    if not lint.exists():
        pytest.skip("ansible-lint is not installed in this environment (scripts/setup.sh installs it)")
    res = subprocess.run([str(lint)], cwd=ANSIBLE_DIR, capture_output=True, text=True, timeout=300,
                         check=False)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "Profile 'production' was required, and it passed" in res.stdout + res.stderr
