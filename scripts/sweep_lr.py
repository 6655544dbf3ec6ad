"""Learning-rate sweep for every benchmark method on *validation* ids (never evaluation ids).

    python scripts/sweep_lr.py --targets 2 --steps 60

For each method and learning rate: train on each validation target, measure ID_target and retention with the
judge, and pick the rate with the lowest ID_target among those keeping retention >= 0.9 (else the best
retention - ID_target). Writes docs/lr_sweep.json; the chosen rates are what docs/benchmark.md uses.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from legato_core import faceworld  # noqa: E402
from legato_core.backends.embedded import EmbeddedFaceBackend  # noqa: E402
from legato_core.baselines.benchmark import default_config  # noqa: E402
from legato_core.baselines.methods import run_method  # noqa: E402
from legato_core.metrics import unlearning_report  # noqa: E402
from legato_core.ranges import VALIDATION  # noqa: E402

GRID = {
    "legato": [3e-4, 1e-3, 3e-3],
    "guide": [3e-5, 1e-4, 3e-4],
    "salun": [3e-5, 1e-4, 3e-4],
    "uno": [3e-5, 1e-4, 3e-4],
    "uno-s": [3e-5, 1e-4, 3e-4],
    "lora": [3e-4, 1e-3, 3e-3],
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", type=int, default=2)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--methods", default=",".join(GRID))
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "lr_sweep.json")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    backend = EmbeddedFaceBackend.from_pretrained()
    cfg = default_config(False)
    cfg.steps = args.steps
    ids = [VALIDATION.start + 5000 + i for i in range(args.targets)]
    latents = [backend.invert(faceworld.render([i], 0))[0] for i in ids]
    rows, chosen = [], {}
    for m in args.methods.split(","):
        scores = []
        for lr in GRID[m]:
            reps = []
            for w in latents:
                res = run_method(m, backend, w, cfg, lr=lr)
                reps.append(unlearning_report(backend, res.knob, w, 1.0, n_views=4, n_retain=100, n_fd=100,
                                              curve_points=2, trainable_parameters=res.trainable_parameters))
            row = {"method": m, "lr": lr, "id_target": statistics.mean(r["id_target"] for r in reps),
                   "retention_mean": statistics.mean(r["retention_mean"] for r in reps)}
            rows.append(row)
            scores.append(row)
            print(json.dumps(row), flush=True)
        ok = [r for r in scores if r["retention_mean"] >= 0.9]
        best = min(ok, key=lambda r: r["id_target"]) if ok else max(
            scores, key=lambda r: r["retention_mean"] - r["id_target"])
        chosen[m] = best["lr"]
    out = {"validation_ids": ids, "steps": args.steps, "grid": GRID, "rows": rows, "chosen": chosen}
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(chosen))


if __name__ == "__main__":
    main()
