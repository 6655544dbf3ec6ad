#!/usr/bin/env bash
# Create .venv (if missing) and install the project's requirements into it. Idempotent, and offline once done:
# after a successful install, .venv/.legato-installed records a hash of the requirements file (with every file it
# includes via -r, and this script); while the hash matches, pip is not run at all, so a start makes no network call.
# Upgrading pip is not part of this script: run `.venv/bin/pip install --upgrade pip` yourself if you want it.
#   bash scripts/setup_env.sh [requirements-file]      (default requirements.txt)
#   LEGATO_REINSTALL=1 bash scripts/setup_env.sh ...    (run pip even when the hash matches)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
REQ=${1:-requirements.txt}
STAMP=.venv/.legato-installed

# the requirements file and, recursively, every file it includes with -r / --requirement
req_files() {
  local f=$1 inc
  [ -f "$f" ] || { echo "setup_env: no such requirements file: $f" >&2; exit 2; }
  echo "$f"
  while read -r inc; do
    req_files "$(dirname "$f")/$inc"
  done < <(sed -n -E 's/^[[:space:]]*(-r|--requirement)[[:space:]=]+([^[:space:]#]+).*/\2/p' "$f")
}

# hash of one requirements file with its includes and this script (which pins torch below)
req_hash() {
  { cat scripts/setup_env.sh; req_files "$1" | while read -r f; do echo "=="; cat "$f"; done; } \
    | sha256sum | cut -d' ' -f1
}

stamped() {  # is "<file> <hash>" recorded?
  [ -f "$STAMP" ] && grep -qxF "$1 $(req_hash "$1")" "$STAMP"
}

[ -x .venv/bin/python ] || "$PY" -m venv .venv
if [ -z "${LEGATO_REINSTALL:-}" ] && stamped "$REQ"; then
  exit 0  # installed from these very files before: nothing to do, nothing to download
fi
. .venv/bin/activate
pip install -q torch==2.13.0          # first, so nothing else picks a CUDA build
pip install -q -r "$REQ"
# record the file and every file it includes: they are installed now
touch "$STAMP"
req_files "$REQ" | while read -r f; do
  f=${f#./}
  line="$f $(req_hash "$f")"
  awk -v f="$f" '$1 != f' "$STAMP" > "$STAMP.tmp"
  echo "$line" >> "$STAMP.tmp"
  mv "$STAMP.tmp" "$STAMP"
done
