"""Training the factor-conditioned face-world generator on fresh renders, resumable across sessions.

The face world knows the exact identity factors and view of every picture and renders hundreds of faces per
second, so every step draws new people and new views (no pool to overfit) and the generator regresses the
picture from its true factors. Losses reward edges, and none can be gamed: L1 at two scales plus L1 between
the images' finite-difference gradients. Checkpoints (model, EMA, optimiser) go to one folder with a JSON log;
``resume`` continues from it, and the data stream is a function of (seed, step), so a resumed run sees what
an uninterrupted one would have.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ..faceworld import VIEW_DIM, encode_view, render_faces, sample_identities, sample_views
from ..faceworld.factors import FACTOR_DIM, identity_vector
from ..ranges import GENERATOR_TRAIN, VALIDATION
from .evaluation import pixel_fidelity
from .modeling import GeneratorConfig, StyleFaceGenerator
from .view_encoder import ViewEncoder

CHECKPOINT_FILES = ("model.safetensors", "ema.safetensors", "optimizer.safetensors", "state.json")


def factor_generator_config() -> GeneratorConfig:
    """The architecture of the factor-conditioned generator: more channels at 16-64 px, face-frame coords."""
    return GeneratorConfig(embedding_dim=FACTOR_DIM, conditioning="factors", coord_octaves=3,
                           channels={4: 256, 8: 128, 16: 96, 32: 64, 64: 24})


@dataclass
class FactorTrainingConfig:
    steps: int = 40_000
    batch_size: int = 32
    lr: float = 2e-3
    warmup: int = 200
    decay_start: int | None = None  # from here the lr falls (cosine) to lr_floor * lr at ``steps``
    lr_floor: float = 0.05
    ema: float = 0.999
    gradient_weight: float = 1.0
    seed: int = 0
    checkpoint_every: int = 250
    eval_every: int = 250
    eval_images: int = 64
    prior_samples: int = 4096  # people whose mean latent is w_avg
    generator: dict = field(default_factory=lambda: asdict(factor_generator_config()))


def training_batch(step: int, batch: int, seed: int,
                   device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(factor vectors, view vectors, images) for one step: a function of (seed, step) alone, rendered on
    ``device`` (the face world is plain torch: on a GPU it keeps up with training)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    ids = (GENERATOR_TRAIN.start + torch.randint(len(GENERATOR_TRAIN), (batch,), generator=gen)).tolist()
    views = torch.randint(1_000_000_000, (batch,), generator=gen).tolist()
    identity = {k: v.to(device) for k, v in sample_identities(ids).items()}
    view = {k: v.to(device) for k, v in sample_views(ids, views).items()}
    return identity_vector(identity), encode_view(view), render_faces(identity, view)


def validation_batch(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fixed monitoring faces from the validation range (never the evaluation range)."""
    ids = list(range(VALIDATION.start + 90_000, VALIDATION.start + 90_000 + n))
    identity, view = sample_identities(ids), sample_views(ids, list(range(n)))
    return identity_vector(identity), encode_view(view), render_faces(identity, view)


def image_loss(out: torch.Tensor, target: torch.Tensor, gradient_weight: float) -> torch.Tensor:
    l1 = (out - target).abs().mean() + (F.avg_pool2d(out, 2) - F.avg_pool2d(target, 2)).abs().mean()
    gx = (out[..., :, 1:] - out[..., :, :-1]) - (target[..., :, 1:] - target[..., :, :-1])
    gy = (out[..., 1:, :] - out[..., :-1, :]) - (target[..., 1:, :] - target[..., :-1, :])
    return l1 + gradient_weight * (gx.abs().mean() + gy.abs().mean())


def learning_rate(cfg: FactorTrainingConfig, step: int) -> float:
    lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup)
    if cfg.decay_start is not None and step >= cfg.decay_start:
        frac = min(1.0, (step - cfg.decay_start) / max(1, cfg.steps - cfg.decay_start))
        lr *= cfg.lr_floor + (1 - cfg.lr_floor) * 0.5 * (1 + torch.cos(torch.tensor(frac * torch.pi)).item())
    return lr


def _save_optimizer(opt: torch.optim.Optimizer, path: Path) -> None:
    tensors = {}
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            tensors[f"{i}.{k}"] = torch.as_tensor(v).contiguous().cpu()
    save_file(tensors, path)


def _load_optimizer(opt: torch.optim.Optimizer, path: Path, device: str = "cpu") -> None:
    flat = load_file(path, device=device)
    state: dict[int, dict] = {}
    for key, v in flat.items():
        i, k = key.split(".", 1)
        state.setdefault(int(i), {})[k] = v
    sd = opt.state_dict()
    sd["state"] = state
    opt.load_state_dict(sd)


def save_checkpoint(directory: Path, model: StyleFaceGenerator, ema: StyleFaceGenerator,
                    opt: torch.optim.Optimizer, state: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / "tmp"
    tmp.mkdir(exist_ok=True)
    save_file({k: v.contiguous().cpu() for k, v in model.state_dict().items()}, tmp / "model.safetensors")
    save_file({k: v.contiguous().cpu() for k, v in ema.state_dict().items()}, tmp / "ema.safetensors")
    _save_optimizer(opt, tmp / "optimizer.safetensors")
    (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n")
    for name in CHECKPOINT_FILES:  # replace file by file only once all are written
        (tmp / name).replace(directory / name)
    tmp.rmdir()


@torch.no_grad()
def monitor(ema: StyleFaceGenerator, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> dict[str, float]:
    factors, views, truth = batch
    return pixel_fidelity(ema.render(ema.map_identity(factors), views).cpu(), truth.cpu())


def train_factor_generator(cfg: FactorTrainingConfig, directory: Path, resume: bool = False,
                           stop_after_s: float | None = None, log=print, device: str = "cpu") -> StyleFaceGenerator:
    """Train (or resume) into ``directory``; returns the EMA generator (on the CPU). Stops at ``cfg.steps`` or the
    budget. ``device``: where the model trains and the faces are rendered; checkpoints are the same on any
    device."""
    directory = Path(directory)
    torch.manual_seed(cfg.seed)
    model = StyleFaceGenerator(GeneratorConfig.from_dict(cfg.generator)).train()
    ema = copy.deepcopy(model).eval()
    step, history, seconds = 0, [], 0.0
    if resume and (directory / "state.json").exists():
        model.load_state_dict(load_file(directory / "model.safetensors"))
        ema.load_state_dict(load_file(directory / "ema.safetensors"))
    model.to(device)
    ema.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    if resume and (directory / "state.json").exists():
        if (directory / "optimizer.safetensors").exists():
            _load_optimizer(opt, directory / "optimizer.safetensors", device)
        state = json.loads((directory / "state.json").read_text())
        step, history, seconds = state["step"], state["history"], state["train_seconds"]
        log(f"resumed at step {step} ({seconds / 60:.0f} min trained)")
    val = tuple(x.to(device) for x in validation_batch(cfg.eval_images))
    t0, start_seconds = time.time(), seconds

    def state_now() -> dict:
        return {"step": step, "train_seconds": round(seconds, 1), "config": asdict(cfg), "history": history,
                "torch_threads": torch.get_num_threads()}

    while step < cfg.steps:
        for group in opt.param_groups:
            group["lr"] = learning_rate(cfg, step)
        factors, views, target = training_batch(step, cfg.batch_size, cfg.seed, device)
        out = model.synthesize(model.map_identity(factors), views)
        loss = image_loss(out, target, cfg.gradient_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            decay = min(cfg.ema, (1 + step) / (10 + step))
            for pe, p in zip(ema.parameters(), model.parameters(), strict=True):
                pe.lerp_(p, 1 - decay)
        step += 1
        seconds = start_seconds + time.time() - t0
        if step % cfg.eval_every == 0 or step == cfg.steps:
            row = {"step": step, "loss": round(loss.item(), 5), "minutes": round(seconds / 60, 1),
                   **{k: round(v, 3) for k, v in monitor(ema, val).items()}}
            history.append(row)
            log(json.dumps(row))
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            save_checkpoint(directory, model, ema, opt, state_now())
        if stop_after_s is not None and time.time() - t0 > stop_after_s:
            save_checkpoint(directory, model, ema, opt, state_now())
            log(f"time budget reached at step {step}")
            break
    return finish_factor_generator(ema.cpu(), cfg)


def finish_factor_generator(ema: StyleFaceGenerator, cfg: FactorTrainingConfig) -> StyleFaceGenerator:
    """Fit the latent statistics (w_avg, prior) a trained generator ships with, from its training range."""
    gen = torch.Generator().manual_seed(cfg.seed)
    ids = GENERATOR_TRAIN.start + torch.randint(len(GENERATOR_TRAIN), (cfg.prior_samples,), generator=gen)
    ema.fit_prior(identity_vector(sample_identities(ids.tolist())), samples=cfg.prior_samples)
    return ema


def load_checkpoint_generator(directory: Path) -> tuple[StyleFaceGenerator, dict]:
    """A checkpoint's EMA generator, finished for shipping, and its state (step, seconds, config, history)."""
    state = json.loads((Path(directory) / "state.json").read_text())
    known = FactorTrainingConfig.__dataclass_fields__
    cfg = FactorTrainingConfig(**{k: v for k, v in state["config"].items() if k in known})
    ema = StyleFaceGenerator(GeneratorConfig.from_dict(cfg.generator)).eval()
    ema.load_state_dict(load_file(Path(directory) / "ema.safetensors"))
    return finish_factor_generator(ema, cfg), state


def package_generator(checkpoint_dir: Path, encoder_dir: Path, out: Path) -> dict:
    """A checkpoint's EMA generator (latent statistics fitted) plus a face encoder, saved as one directory that
    ``EmbeddedFaceBackend.from_pretrained`` (and ``generator evaluate --model``) loads; returns the checkpoint's
    state. The metadata says which script, seed, steps and time made it."""
    encoder_dir, out = Path(encoder_dir), Path(out)
    files = [encoder_dir / "face_encoder.safetensors", encoder_dir / "face_encoder.json"]
    if not all(f.exists() for f in files):
        raise FileNotFoundError(f"no face encoder in {encoder_dir} (stage face-encoder of scripts/train_generator.py)")
    generator, state = load_checkpoint_generator(checkpoint_dir)
    generator.save_pretrained(out, extra={
        "script": "scripts/train_generator.py factor-generator", "seed": state["config"]["seed"],
        "steps_done": state["step"], "train_seconds": state["train_seconds"],
        "identity_input": "face-world factors (legato_core.faceworld.factors)",
        "train_ids": [GENERATOR_TRAIN.start, GENERATOR_TRAIN.stop]})
    for f in files:
        shutil.copy(f, out / f.name)
    (out / "training_log.json").write_text(json.dumps(state["history"], indent=1) + "\n")
    return state


@dataclass
class FaceEncoderTrainingConfig:
    steps: int = 5000
    batch_size: int = 64
    lr: float = 2e-3
    width: int = 32
    seed: int = 1


def train_face_encoder(cfg: FaceEncoderTrainingConfig, log=print,
                       checkpoint: Callable[[ViewEncoder, int], None] | None = None,
                       checkpoint_every: int = 500, device: str = "cpu") -> ViewEncoder:
    """Image -> (identity factors, view) by regression on fresh renders with known factors (for inversion).

    ``checkpoint(encoder, step)`` is called every ``checkpoint_every`` steps, so a long CPU run that is stopped
    still leaves a usable encoder behind."""
    torch.manual_seed(cfg.seed)
    enc = ViewEncoder(FACTOR_DIM + VIEW_DIM, cfg.width).to(device).train()
    opt = torch.optim.AdamW(enc.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.05)
    t0 = time.time()
    for step in range(cfg.steps):
        factors, views, images = training_batch(step, cfg.batch_size, cfg.seed + 100, device)
        loss = F.mse_loss(enc(images), torch.cat([factors, views], dim=1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 250 == 0 or step == cfg.steps - 1:
            log(json.dumps({"step": step, "mse": round(loss.item(), 5), "minutes": round((time.time() - t0) / 60, 1)}))
        if checkpoint is not None and step and step % checkpoint_every == 0:
            checkpoint(enc.eval(), step)
            enc.train()
    return enc.cpu().eval()
