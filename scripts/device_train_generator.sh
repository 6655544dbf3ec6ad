#!/usr/bin/env bash
# One prepared run for a lent GPU (the workplace's `device` tool; never CI): continue the factor generator from
# its last committed checkpoint, train a face encoder, and bring both back under $OUT.
#
#   device run, command: bash scripts/device_train_generator.sh 420 120      (timeout_s 600)
#
# Arguments: seconds of generator training, seconds of face-encoder training (defaults 420 and 120). The device
# image's python3 holds torch; nothing is installed. What comes back (at most 8 files, 16 MiB each): the
# checkpoint's ema/model weights, state.json and train.log, the face encoder, and the log of this script. The
# optimiser state (17 MB) stays there: a resumed run restarts Adam from the raw weights, as from a committed
# checkpoint. Copy the files into runs/factor_generator and runs/face_encoder here, then package and evaluate.
set -euo pipefail
GEN_S=${1:-420}
ENC_S=${2:-120}
OUT=${OUT:?run this through the device tool, which sets OUT}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu PYTHON=.venv/bin/python: a dry run of this script on a CPU machine
PYTHON=${PYTHON:-python3}
RUNS=${RUNS:-runs}      # working directories (there: empty, so the generator starts from checkpoints/)
THREADS=${THREADS:-8}
export PYTHONUNBUFFERED=1 DEVICE THREADS RUNS
[ "$DEVICE" = cpu ] || $PYTHON -c "import torch; assert torch.cuda.is_available(), 'no GPU visible'; print(torch.__version__, torch.cuda.get_device_name())"
mkdir -p "$RUNS" "$OUT/factor_generator" "$OUT/face_encoder"
timeout $((GEN_S + 120)) $PYTHON scripts/train_generator.py factor-generator --resume --device "$DEVICE" --threads "$THREADS" \
    --stop-after "$GEN_S" --checkpoint-dir "$RUNS/factor_generator" 2>&1 | tee "$OUT/train.out" | tail -n 40
cp "$RUNS"/factor_generator/{ema.safetensors,model.safetensors,state.json,train.log} "$OUT/factor_generator/"
# the face encoder: as many steps as fit in ENC_S at the measured rate of the first 100
timeout $((ENC_S + 120)) $PYTHON - "$ENC_S" <<'PY' 2>&1 | tee -a "$OUT/train.out" | tail -n 20
import os, sys, time
import torch
sys.path.insert(0, ".")
torch.set_num_threads(int(os.environ["THREADS"]))
from legato_core.generator.factor_training import FaceEncoderTrainingConfig, train_face_encoder
budget = float(sys.argv[1])
device = os.environ["DEVICE"]
t0 = time.time(); train_face_encoder(FaceEncoderTrainingConfig(steps=40), log=lambda m: None, device=device)
steps = max(100, int(40 * budget / max(time.time() - t0, 1e-3)) // 100 * 100)
print(f"face encoder: {steps} steps")
cfg = FaceEncoderTrainingConfig(steps=steps)
enc = train_face_encoder(cfg, device=device)
enc.save_pretrained(os.environ["RUNS"] + "/face_encoder", name="face_encoder",
                    extra={"training": cfg.__dict__, "steps_done": steps, "device": device})
PY
cp "$RUNS"/face_encoder/face_encoder.{safetensors,json} "$OUT/face_encoder/"
ls -la "$OUT" "$OUT"/*
