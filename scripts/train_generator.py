"""Train the embedded generator (mapping + style synthesis) and its view encoder; writes assets/generator/.

    python scripts/train_generator.py data           # render ids [20000, 26000) x 12 views (cached in runs/)
    python scripts/train_generator.py view-encoder   # regression of view factors, seed 0
    python scripts/train_generator.py generator      # needs assets/arcface; seed 0

Evaluate with `python -m legato_core generator evaluate --identities 200 --first-identity 1000000 --json`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from legato_core.generator.training import (  # noqa: E402
    GeneratorTrainingConfig,
    embed_all,
    render_training_data,
    train_generator,
    train_view_encoder,
)
from legato_core.identity import IdentityModel  # noqa: E402
from legato_core.ranges import GENERATOR_TRAIN  # noqa: E402

IDS = range(GENERATOR_TRAIN.start, GENERATOR_TRAIN.start + 6000)
VIEWS = 12


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("stage", choices=["data", "view-encoder", "generator"])
    ap.add_argument("--cache", type=Path, default=ROOT / "runs" / "generator_data.safetensors")
    ap.add_argument("--out", type=Path, default=ROOT / "assets" / "generator")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--time-budget", type=float, help="fit the generator's schedule to this many seconds")
    ap.add_argument("--init-from", help="continue training from a saved generator directory")
    ap.add_argument("--lr", type=float)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = render_training_data(IDS, VIEWS, args.cache)
    if args.stage == "view-encoder":
        enc = train_view_encoder(data, steps=args.steps or 3000)
        enc.save_pretrained(args.out, extra={"train_ids": [IDS.start, IDS.stop], "views_per_id": VIEWS, "seed": 0})
    elif args.stage == "generator":
        arcface = IdentityModel.from_pretrained("arcface")
        embeddings = embed_all(arcface, data["images"])
        cfg = GeneratorTrainingConfig(time_budget_s=args.time_budget, init_from=args.init_from)
        if args.lr:
            cfg.lr = args.lr
        if args.steps:
            cfg.steps = args.steps
        model, info = train_generator(data, embeddings, arcface, cfg, ROOT / "runs" / "generator_ckpt")
        model.save_pretrained(args.out, extra={"train_ids": [IDS.start, IDS.stop], "views_per_id": VIEWS,
                                               "steps_done": info["steps_done"], "train_seconds": info["train_seconds"],
                                               "identity_model": "arcface"})
        (args.out / "training_log.json").write_text(json.dumps(info, indent=2) + "\n")


if __name__ == "__main__":
    main()
