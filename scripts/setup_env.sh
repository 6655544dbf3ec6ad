#!/usr/bin/env bash
# Create .venv (if missing) and install the project's requirements into it. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip >/dev/null 2>&1 || true
pip install -q torch==2.13.0          # first, so nothing else picks a CUDA build
pip install -q -r "${1:-requirements.txt}"
