#!/usr/bin/env bash
# Set up and run the test suite (CPU, offline, about 15 minutes on 2 cores; `-m slow` adds the thorough checks).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh requirements-dev.txt
. .venv/bin/activate
ruff check .
python -m pytest -q "$@"
