#!/usr/bin/env bash
# Set up and start the demo on the embedded default (CPU, offline): http://127.0.0.1:7860
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh requirements.txt
. .venv/bin/activate
export GRADIO_ANALYTICS_ENABLED=False
exec python app.py "$@"
