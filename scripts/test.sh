#!/usr/bin/env bash
# Set up and run the test suite (CPU, offline, ~10 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh requirements-dev.txt
. .venv/bin/activate
ruff check .
python -m pytest -q "$@"
