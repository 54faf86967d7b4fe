#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the whole test suite: lint, types, unit and property tests, and the
# integration tests that start a real local Slurm cluster with simulated GPUs.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
.venv/bin/ruff check .
# Types (strict on the core; pyproject.toml [tool.mypy]); the layer contracts run in tests/test_architecture.py.
.venv/bin/mypy
# pytest's exit code 5 (no tests collected) is a failure here too.
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
