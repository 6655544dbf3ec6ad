#!/usr/bin/env bash
# One prepared run for a lent GPU (the workplace's `device` tool; never CI): continue the factor generator from
# its last committed checkpoint, train a face encoder, and bring both back under $OUT.
#
#   device run, command: bash scripts/device_train_generator.sh 420 5000      (timeout_s 600)
#
# Arguments: seconds of generator training, face-encoder steps (defaults 420 and 5000, as the committed encoder),
# the generator schedule's last step and the step its cosine lr decay starts (defaults 40000 and 30000: the
# committed checkpoint's own schedule has already decayed, so a resumed run needs one of its own).
# The device image's python3 holds torch; nothing is installed. What comes back (at most 8 files, 16 MiB each): the
# checkpoint's ema/model weights, state.json and train.log, the face encoder, and the log of this script. The
# optimiser state (17 MB) stays there: a resumed run restarts Adam from the raw weights, as from a committed
# checkpoint. Copy the files into runs/factor_generator and runs/face_encoder here, then package and evaluate.
set -euo pipefail
GEN_S=${1:-420}
ENC_STEPS=${2:-5000}
GEN_STEPS=${3:-40000}
DECAY_START=${4:-30000}
OUT=${OUT:?run this through the device tool, which sets OUT}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu PYTHON=.venv/bin/python: a dry run of this script on a CPU machine
PYTHON=${PYTHON:-python3}
RUNS=${RUNS:-runs}      # working directories (there: empty, so the generator starts from checkpoints/)
THREADS=${THREADS:-8}
export PYTHONUNBUFFERED=1
[ "$DEVICE" = cpu ] || $PYTHON -c "import torch; assert torch.cuda.is_available(), 'no GPU visible'; print(torch.__version__, torch.cuda.get_device_name())"
mkdir -p "$RUNS" "$OUT/factor_generator" "$OUT/face_encoder"
timeout $((GEN_S + 120)) $PYTHON scripts/train_generator.py factor-generator --resume --device "$DEVICE" --threads "$THREADS" \
    --stop-after "$GEN_S" --steps "$GEN_STEPS" --decay-start "$DECAY_START" --checkpoint-dir "$RUNS/factor_generator" 2>&1 | tee "$OUT/train.out" | tail -n 40
cp "$RUNS"/factor_generator/{ema.safetensors,model.safetensors,state.json,train.log} "$OUT/factor_generator/"
timeout 300 $PYTHON scripts/train_generator.py face-encoder --device "$DEVICE" --threads "$THREADS" \
    --steps "$ENC_STEPS" --out "$RUNS/face_encoder" 2>&1 | tee -a "$OUT/train.out" | tail -n 5
cp "$RUNS"/face_encoder/face_encoder.{safetensors,json} "$OUT/face_encoder/"
ls -la "$OUT" "$OUT"/*
