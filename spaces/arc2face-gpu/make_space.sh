#!/usr/bin/env bash
# Assemble the GPU Space in DEST: the library, the app and the shipped assets of this repository, plus this
# folder's README.md (front matter), requirements.txt and space_app.py at the Space's root.
set -euo pipefail
DEST=${1:?usage: make_space.sh DEST}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
mkdir -p "$DEST"
cp -r "$ROOT/legato_core" "$ROOT/assets" "$ROOT/app.py" "$DEST/"
cp "$HERE/README.md" "$HERE/requirements.txt" "$HERE/space_app.py" "$DEST/"
find "$DEST" -name __pycache__ -type d -prune -exec rm -rf {} +
echo "Space files in $DEST (app_file: space_app.py)"
