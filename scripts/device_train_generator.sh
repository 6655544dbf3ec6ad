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
export PYTHONUNBUFFERED=1
python3 -c "import torch; assert torch.cuda.is_available(), 'no GPU visible'; print(torch.__version__, torch.cuda.get_device_name())"
mkdir -p runs "$OUT/factor_generator" "$OUT/face_encoder"
timeout $((GEN_S + 120)) python3 scripts/train_generator.py factor-generator --resume --device cuda --threads 8 \
    --stop-after "$GEN_S" --checkpoint-dir runs/factor_generator 2>&1 | tee "$OUT/train.out" | tail -n 40
cp runs/factor_generator/{ema.safetensors,model.safetensors,state.json,train.log} "$OUT/factor_generator/"
# the face encoder: as many steps as fit in ENC_S at the measured rate of the first 100
timeout $((ENC_S + 120)) python3 - "$ENC_S" <<'PY' 2>&1 | tee -a "$OUT/train.out" | tail -n 20
import sys, time, torch
sys.path.insert(0, ".")
from legato_core.generator.factor_training import FaceEncoderTrainingConfig, train_face_encoder
budget = float(sys.argv[1])
t0 = time.time(); train_face_encoder(FaceEncoderTrainingConfig(steps=100), log=lambda m: None, device="cuda")
steps = max(500, int(100 * budget / max(time.time() - t0, 1e-3)) // 100 * 100)
print(f"face encoder: {steps} steps")
cfg = FaceEncoderTrainingConfig(steps=steps)
enc = train_face_encoder(cfg, device="cuda")
enc.save_pretrained("runs/face_encoder", name="face_encoder",
                    extra={"training": cfg.__dict__, "steps_done": steps, "device": "cuda"})
PY
cp runs/face_encoder/face_encoder.{safetensors,json} "$OUT/face_encoder/"
ls -la "$OUT" "$OUT"/*
