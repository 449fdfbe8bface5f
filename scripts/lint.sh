#!/usr/bin/env bash
# Lint, format check, type check and import layers, in that order; stops at the first that fails.
# scripts/test.sh runs it before the tests (so CI does). Settings are in pyproject.toml.
# Fix with: .venv/bin/ruff check --fix; .venv/bin/ruff format
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV_BIN:-.venv/bin}

step() {  # step NAME COMMAND...: run it; on failure say which check failed and how to reproduce it
  local name=$1; shift
  local t0=$SECONDS
  if ! "$@"; then
    echo "lint.sh: $name failed. Reproduce with: $*" >&2
    exit 1
  fi
  echo "lint.sh: $name ok ($((SECONDS - t0)) s)"
}

step "ruff check (lint)" "$BIN/ruff" check --quiet
step "ruff format --check" "$BIN/ruff" format --check --quiet
step "mypy (types)" "$BIN/mypy"
step "lint-imports (layers)" "$BIN/lint-imports" --no-logo
