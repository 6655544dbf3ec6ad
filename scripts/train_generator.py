"""Train the embedded generator (mapping + style synthesis) and its view encoder; writes assets/generator/.

    python scripts/train_generator.py data           # render ids [20000, 26000) x 12 views (cached in runs/)
    python scripts/train_generator.py view-encoder   # regression of view factors, seed 0
    python scripts/train_generator.py generator      # needs assets/arcface; seed 0
    python scripts/train_generator.py factor-generator --resume --threads 1   # fresh renders, resumable
    python scripts/train_generator.py factor-generator --checkpoint-dir runs/layout_generator \
        --init-from checkpoints/factor_generator --seed 1 --resume   # new parts on an older checkpoint
    python scripts/train_generator.py face-encoder --out runs/face_encoder    # image -> factors + view, seed 1
    python scripts/train_generator.py package --checkpoint-dir runs/factor_generator \
        --encoder runs/face_encoder --out runs/packaged_generator             # a loadable generator directory
    python scripts/train_generator.py convert --checkpoint-dir runs/factor_generator --out runs/fast_generator \
        --position-resolution 16 --upsample-rank 64:32 --upsample-rank 32:64  # cheaper; then --resume it

Evaluate with `python -m legato_core generator evaluate --identities 200 --first-identity 1000000 --json`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from legato_core.generator.factor_training import (  # noqa: E402
    FaceEncoderTrainingConfig,
    FactorTrainingConfig,
    package_generator,
    train_face_encoder,
    train_factor_generator,
)
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
COMMITTED_CHECKPOINT = ROOT / "checkpoints" / "factor_generator"  # EMA weights + state, committed to resume from
VIEWS = 12


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("stage", choices=["data", "view-encoder", "generator", "factor-generator",
                                          "face-encoder", "package", "convert"])
    ap.add_argument("--cache", type=Path, default=ROOT / "runs" / "generator_data.safetensors")
    ap.add_argument("--out", type=Path, default=ROOT / "assets" / "generator")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--time-budget", type=float, help="fit the generator's schedule to this many seconds")
    ap.add_argument("--init-from", help="generator: continue from a saved generator directory; factor-generator: "
                    "a fresh run starts from this checkpoint's weights where the names match (new parts are new)")
    ap.add_argument("--feature-weight", type=float, help="factor-generator: extra L1 near the true landmarks")
    ap.add_argument("--detail-weight", type=float,
                    help="factor-generator: extra L1 where glasses, facial hair, moles and freckles are")
    ap.add_argument("--gradient-weight", type=float,
                    help="factor-generator: weight of the L1 between the images' finite-difference gradients")
    ap.add_argument("--adversarial-weight", type=float,
                    help="factor-generator: weight of a patch discriminator's hinge term (0: off)")
    ap.add_argument("--seed", type=int, help="factor-generator: the data stream's and initialisation's seed")
    ap.add_argument("--lr", type=float)
    ap.add_argument("--resume", action="store_true", help="factor-generator: continue from --checkpoint-dir")
    ap.add_argument("--checkpoint-dir", type=Path, default=ROOT / "runs" / "factor_generator")
    ap.add_argument("--stop-after", type=float, help="factor-generator: stop (with a checkpoint) after S seconds")
    ap.add_argument("--decay-start", type=int, help="factor-generator: step where the lr starts its cosine decay")
    ap.add_argument("--encoder", type=Path, help="package: the directory holding face_encoder.safetensors")
    ap.add_argument("--position-resolution", type=int,
                    help="convert: compute coordinates and landmark offsets on grids of at most this size")
    ap.add_argument("--upsample-rank", action="append", default=[], metavar="RES:RANK",
                    help="convert: factor block RES's upsampling conv through RANK channels (repeatable)")
    ap.add_argument("--device", default="cpu",
                    help="factor-generator, face-encoder: cpu or cuda (the faces are rendered there too)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.stage == "factor-generator":
        train_factor(args)
        return
    if args.stage == "package":
        package(args)
        return
    if args.stage == "convert":
        convert(args)
        return
    if args.stage == "face-encoder":  # identity factors + view from an image, for the factor generator's inversion
        cfg = FaceEncoderTrainingConfig(**({"steps": args.steps} if args.steps else {}))
        outputs = ["identity factors (legato_core.faceworld.factors)", "view vector"]

        def save(enc, step: int) -> None:
            extra = {"training": asdict(cfg), "steps_done": step, "device": args.device, "outputs": outputs}
            enc.save_pretrained(args.out, name="face_encoder", extra=extra)

        enc = train_face_encoder(cfg, checkpoint=save, device=args.device)
        save(enc, cfg.steps)
        return
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


def train_factor(args) -> None:
    """The factor-conditioned generator: seeded fresh renders, checkpoints in --checkpoint-dir, a JSON-lines log."""
    seed_dir = COMMITTED_CHECKPOINT
    fresh = not (args.checkpoint_dir / "state.json").exists()
    if args.resume and fresh and args.init_from is None and (seed_dir / "state.json").exists():
        args.checkpoint_dir.mkdir(parents=True, exist_ok=True)  # start from the last committed checkpoint
        for name in ("ema.safetensors", "state.json", "discriminator.safetensors"):
            if (seed_dir / name).exists():
                shutil.copy(seed_dir / name, args.checkpoint_dir / name)
        shutil.copy(seed_dir / "ema.safetensors", args.checkpoint_dir / "model.safetensors")
    cfg = FactorTrainingConfig()
    if args.resume and (args.checkpoint_dir / "state.json").exists():  # the run's own settings (seed, losses...)
        saved = json.loads((args.checkpoint_dir / "state.json").read_text())["config"]
        cfg = FactorTrainingConfig(**{k: v for k, v in saved.items() if k in FactorTrainingConfig.__dataclass_fields__})
    # what the command line says wins
    for name in ("steps", "lr", "decay_start", "seed", "feature_weight", "detail_weight", "gradient_weight",
                 "adversarial_weight"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    log_path = args.checkpoint_dir / "train.log"
    args.checkpoint_dir.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(msg, flush=True)
        with open(log_path, "a") as f:
            f.write(msg + "\n")

    train_factor_generator(cfg, args.checkpoint_dir, resume=args.resume, stop_after_s=args.stop_after, log=log,
                           device=args.device, init_from=Path(args.init_from) if args.init_from else None)


def convert(args) -> None:
    """A training run whose generator is --checkpoint-dir's, converted to a cheaper architecture (resumable)."""
    from legato_core.generator.conversion import convert_checkpoint

    changes: dict = {}
    if args.position_resolution is not None:
        changes["position_resolution"] = args.position_resolution
    if args.upsample_rank:
        changes["upsample_rank"] = {int(r): int(k) for r, k in (item.split(":") for item in args.upsample_rank)}
    if not changes or args.out == ROOT / "assets" / "generator":
        raise SystemExit("convert needs --out RUN_DIR and at least one of --position-resolution, --upsample-rank")
    info = convert_checkpoint(args.checkpoint_dir, args.out, changes)
    print(json.dumps(info))


def package(args) -> None:
    """A factor-generator checkpoint plus a face encoder, saved as a loadable generator directory."""
    if args.encoder is None:
        raise SystemExit("package needs --encoder DIR (the directory stage face-encoder wrote)")
    state = package_generator(args.checkpoint_dir, args.encoder, args.out)
    print(f"wrote {args.out}: generator at step {state['step']} ({state['train_seconds'] / 60:.0f} min) + face encoder")

if __name__ == "__main__":
    main()
