#!/usr/bin/env bash
# Quickstart: install crmsync, run one daemon cycle against the local CRM (bundled sample leads) with the
# local model, and show the scored leads. No CRM account, no API key.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
.venv/bin/crmsync run --once --config examples/quickstart.toml
.venv/bin/crmsync status --config examples/quickstart.toml
