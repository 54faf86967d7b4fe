"""A click test runner with stdout and stderr apart, on every click the package supports.

click 8.2+ (Python 3.10+) always keeps them apart; click 8.1 (the newest for Python 3.9) needs
``mix_stderr=False``.
"""

from __future__ import annotations

from click.testing import CliRunner


def cli_runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)
    except TypeError:
        return CliRunner()
