#!/usr/bin/env bash
# Installs crmsync with its test dependencies into .venv, runs the lint/type checks, then the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh test
bash scripts/lint.sh  # ruff, ruff format --check, mypy, lint-imports: fails before the 6-minute suite
exec .venv/bin/python -m pytest -q "$@"
