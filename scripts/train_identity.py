"""Train a face-world identity network and write assets/<name>/ (weights, config, calibrated threshold).

    python scripts/train_identity.py arcface   # seed 0, ids [0, 4000)
    python scripts/train_identity.py judge     # seed 1, ids [10000, 14000)

Both are then evaluated on ids >= 1,000,000 by `python -m legato_core identity evaluate` (see the model cards).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from legato_core.identity.training import (  # noqa: E402
    IdentityTrainingConfig,
    calibrate_threshold,
    train_identity_model,
)

PRESETS = {
    "arcface": IdentityTrainingConfig(architecture="arcface", train_ids=(0, 4000), seed=0, margin=0.4),
    "judge": IdentityTrainingConfig(architecture="judge", train_ids=(10_000, 14_000), seed=1, margin=0.3,
                                    val_ids=(100_300, 100_600)),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("name", choices=sorted(PRESETS))
    ap.add_argument("--steps", type=int)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--init-from", help="continue training from these weights (a directory with config.json)")
    ap.add_argument("--lr", type=float)
    args = ap.parse_args()
    cfg = PRESETS[args.name]
    if args.steps:
        cfg.steps = args.steps
    cfg.threads = args.threads
    if args.init_from:
        cfg.init_from = args.init_from
    if args.lr:
        cfg.lr = args.lr
    model, info = train_identity_model(cfg)
    cal = calibrate_threshold(model, range(101_000, 101_500))
    out = args.out or ROOT / "assets" / args.name
    model.save_pretrained(out, extra={"calibration": cal, "train_seconds": round(info["train_seconds"], 1)})
    (out / "training_log.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps({"threshold": model.threshold, **cal}, indent=2))


if __name__ == "__main__":
    main()
