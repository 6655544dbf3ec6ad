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
from ..faceworld.landmarks import LANDMARKS, face_landmarks
from ..faceworld.parts import THIN_PARTS, part_mask
from ..ranges import GENERATOR_TRAIN, VALIDATION
from .discriminator import DiscriminatorConfig, PatchDiscriminator, discriminator_loss, generator_adversarial_loss
from .evaluation import pixel_fidelity
from .modeling import GeneratorConfig, StyleFaceGenerator, face_frame_xy
from .view_encoder import ViewEncoder

# How a packaged factor generator refines an encoder's guess (EmbeddedFaceBackend.invert): pixel L1 plus a light
# arcface feature distance, no identity term. On 40 validation ids (150,000+; step-1,500 stage-2 checkpoint) the
# old defaults (12 steps, lr 0.05, perceptual 0.5, identity 0.5) re-rendered at 24.8 dB; these give 29.8 dB and
# raise the judge's same-person rate from 0.65 (pixels alone) to 0.88 for 0.1 dB. The identity and stronger
# perceptual terms pushed renders towards what identity networks like, away from the picture.
FACTOR_INVERSION = {"refine_steps": 20, "refine_lr": 0.02, "identity_weight": 0.0, "perceptual_weight": 0.1}

CHECKPOINT_FILES = ("model.safetensors", "ema.safetensors", "optimizer.safetensors", "state.json")
# the last loss weights of a run, recorded in a packaged generator's config.json for its model card
LOSS_KEYS = ("gradient_weight", "landmark_weight", "feature_weight", "detail_weight", "adversarial_weight")
DISCRIMINATOR_FILES = ("discriminator.safetensors", "discriminator_optimizer.safetensors")


def factor_generator_config(layout: bool = True) -> GeneratorConfig:
    """The architecture of the factor-conditioned generator: more channels at 16-64 px, face-frame coords, and
    (``layout``) a landmark head whose offsets every block sees."""
    return GeneratorConfig(embedding_dim=FACTOR_DIM, conditioning="factors", coord_octaves=3,
                           channels={4: 256, 8: 128, 16: 96, 32: 64, 64: 24},
                           layout_landmarks=len(LANDMARKS) if layout else 0)


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
    landmark_weight: float = 1.0  # L1 of the layout head's landmarks, in units of 1 / layout_scale face units
    # extra L1 on the pixels near the true landmarks (eyes, brows, nose, mouth: a few % of the image, so plain L1
    # barely sees them); it is still the distance to the true picture, so there is nothing to game
    feature_weight: float = 0.0
    # extra L1 on the pixels the thin parts cover (glasses, facial hair, moles, freckles: found by rendering the
    # same faces without them); the step-17,000 generator still left glasses and goatees out
    detail_weight: float = 0.0
    # a patch discriminator's hinge term (discriminator.py): regression losses leave edges soft; 0 = off. It
    # ramps up over adversarial_warmup steps from the step it was switched on (the discriminator starts fresh)
    adversarial_weight: float = 0.0
    adversarial_warmup: int = 500
    discriminator_lr: float = 2e-4
    discriminator: dict = field(default_factory=lambda: asdict(DiscriminatorConfig()))
    seed: int = 0
    checkpoint_every: int = 250
    eval_every: int = 250
    eval_images: int = 64
    prior_samples: int = 4096  # people whose mean latent is w_avg
    generator: dict = field(default_factory=lambda: asdict(factor_generator_config()))


def detail_mask(identity: dict[str, torch.Tensor], view: dict[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) in {0, 1}: where the thin parts (glasses, facial hair, moles, freckles) change the picture,
    grown by one pixel so that a part drawn one pixel off is penalised too."""
    return part_mask(identity, view, images, THIN_PARTS, grow=1)


def training_batch(step: int, batch: int, seed: int, device: str | torch.device = "cpu",
                   landmarks: bool = False, details: bool = False) -> tuple[torch.Tensor, ...]:
    """(factor vectors, view vectors, images[, landmarks][, detail mask]) for one step: a function of (seed, step)
    alone, rendered on ``device`` (the face world is plain torch: on a GPU it keeps up with training)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    ids = (GENERATOR_TRAIN.start + torch.randint(len(GENERATOR_TRAIN), (batch,), generator=gen)).tolist()
    views = torch.randint(1_000_000_000, (batch,), generator=gen).tolist()
    identity = {k: v.to(device) for k, v in sample_identities(ids).items()}
    view = {k: v.to(device) for k, v in sample_views(ids, views).items()}
    out = identity_vector(identity), encode_view(view), render_faces(identity, view)
    extra = ((face_landmarks(identity, view),) if landmarks else ()) + \
        ((detail_mask(identity, view, out[2]),) if details else ())
    return (*out, *extra)


def validation_batch(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fixed monitoring faces from the validation range (never the evaluation range), with their landmarks."""
    ids = list(range(VALIDATION.start + 90_000, VALIDATION.start + 90_000 + n))
    identity, view = sample_identities(ids), sample_views(ids, list(range(n)))
    return (identity_vector(identity), encode_view(view), render_faces(identity, view),
            face_landmarks(identity, view))


def image_loss(out: torch.Tensor, target: torch.Tensor, gradient_weight: float) -> torch.Tensor:
    l1 = (out - target).abs().mean() + (F.avg_pool2d(out, 2) - F.avg_pool2d(target, 2)).abs().mean()
    gx = (out[..., :, 1:] - out[..., :, :-1]) - (target[..., :, 1:] - target[..., :, :-1])
    gy = (out[..., 1:, :] - out[..., :-1, :]) - (target[..., 1:, :] - target[..., :-1, :])
    return l1 + gradient_weight * (gx.abs().mean() + gy.abs().mean())


def feature_mask(views: torch.Tensor, landmarks: torch.Tensor, size: int = 64, sigma: float = 0.07) -> torch.Tensor:
    """(B, 1, size, size) in [0, 1]: 1 on the true landmarks, falling off as a Gaussian of ``sigma`` face units."""
    x, y = face_frame_xy(views, size)
    d2 = (x.unsqueeze(1) - landmarks[:, :, 0, None, None]).square() + \
        (y.unsqueeze(1) - landmarks[:, :, 1, None, None]).square()
    return torch.exp(-0.5 * d2.amin(dim=1, keepdim=True) / sigma**2)


def feature_loss(out: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean L1 over the masked pixels (weighted by the mask)."""
    return ((out - target).abs() * mask).sum() / (mask.sum() * out.shape[1]).clamp(min=1e-6)


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
                    opt: torch.optim.Optimizer, state: dict,
                    discriminator: tuple[PatchDiscriminator, torch.optim.Optimizer] | None = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / "tmp"
    tmp.mkdir(exist_ok=True)
    save_file({k: v.contiguous().cpu() for k, v in model.state_dict().items()}, tmp / "model.safetensors")
    save_file({k: v.contiguous().cpu() for k, v in ema.state_dict().items()}, tmp / "ema.safetensors")
    _save_optimizer(opt, tmp / "optimizer.safetensors")
    files = CHECKPOINT_FILES
    if discriminator is not None:
        disc, d_opt = discriminator
        save_file({k: v.contiguous().cpu() for k, v in disc.state_dict().items()}, tmp / DISCRIMINATOR_FILES[0])
        _save_optimizer(d_opt, tmp / DISCRIMINATOR_FILES[1])
        files = files + DISCRIMINATOR_FILES
    (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n")
    for name in files:  # replace file by file only once all are written
        (tmp / name).replace(directory / name)
    tmp.rmdir()


def landmark_loss(model: StyleFaceGenerator, w: torch.Tensor, views: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Mean L1 between the layout head's landmarks and the face world's, in 1 / layout_scale face units."""
    return (model.predict_landmarks(w, views) - truth).abs().mean() * model.config.layout_scale


@torch.no_grad()
def monitor(ema: StyleFaceGenerator, batch: tuple[torch.Tensor, ...]) -> dict[str, float]:
    factors, views, truth, landmarks = batch
    w = ema.map_identity(factors)
    out = pixel_fidelity(ema.render(w, views).cpu(), truth.cpu())
    if ema.layout is not None:  # mean landmark error in 64-px pixels (a face unit is 32 px at scale 1)
        out["landmark_error_px"] = (ema.predict_landmarks(w, views) - landmarks).norm(dim=2).mean().item() * 32
    return out


def initialise_from(model: StyleFaceGenerator, directory: Path) -> dict:
    """Load a checkpoint's EMA weights into ``model`` where the names match (a generator with new parts, e.g. a
    layout head, starts from an older checkpoint); returns what the checkpoint was (path, step, seconds)."""
    state = json.loads((Path(directory) / "state.json").read_text())
    missing, unexpected = model.load_state_dict(load_file(Path(directory) / "ema.safetensors"), strict=False)
    if unexpected:
        raise ValueError(f"{directory} has weights this generator does not: {unexpected[:5]}")
    return {"path": str(directory), "step": state["step"], "train_seconds": state["train_seconds"],
            "new_parameters": len(missing), **({"init_from": state["init_from"]} if "init_from" in state else {})}


def train_factor_generator(cfg: FactorTrainingConfig, directory: Path, resume: bool = False,
                           stop_after_s: float | None = None, log=print, device: str = "cpu",
                           init_from: Path | None = None) -> StyleFaceGenerator:
    """Train (or resume) into ``directory``; returns the EMA generator (on the CPU). Stops at ``cfg.steps`` or the
    budget. ``device``: where the model trains and the faces are rendered; checkpoints are the same on any
    device. ``init_from``: a fresh run starts from that checkpoint's weights where the names match."""
    directory = Path(directory)
    torch.manual_seed(cfg.seed)
    resuming = resume and (directory / "state.json").exists()
    if resuming:  # the checkpoint's own architecture and schedule, whatever today's defaults are
        saved = json.loads((directory / "state.json").read_text())["config"]
        cfg.generator = saved["generator"]
    model = StyleFaceGenerator(GeneratorConfig.from_dict(cfg.generator)).train()
    step, history, seconds, origin, conversions = 0, [], 0.0, None, []
    if init_from is not None and not resuming:
        origin = initialise_from(model, init_from)
        log(f"initialised from {json.dumps(origin)}")
    ema = copy.deepcopy(model).eval()
    if resuming:
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
        origin, conversions = state.get("init_from"), state.get("conversions", [])
        log(f"resumed at step {step} ({seconds / 60:.0f} min trained)")
    disc = d_opt = None
    adversarial_start = None
    if cfg.adversarial_weight:
        disc = PatchDiscriminator(DiscriminatorConfig.from_dict(cfg.discriminator)).to(device).train()
        d_opt = torch.optim.Adam(disc.parameters(), lr=cfg.discriminator_lr, betas=(0.5, 0.99))
        has_disc = resuming and (directory / DISCRIMINATOR_FILES[0]).exists()
        if has_disc:  # a committed checkpoint carries the discriminator but not its optimiser state
            disc.load_state_dict(load_file(directory / DISCRIMINATOR_FILES[0], device=str(device)))
            if (directory / DISCRIMINATOR_FILES[1]).exists():
                _load_optimizer(d_opt, directory / DISCRIMINATOR_FILES[1], device)
            adversarial_start = json.loads((directory / "state.json").read_text()).get("adversarial_start")
        if adversarial_start is None:  # a fresh discriminator: its term ramps up from here
            adversarial_start = step
            log(f"adversarial term on from step {step} (fresh discriminator)")
    val = tuple(x.to(device) for x in validation_batch(cfg.eval_images))
    t0, start_seconds = time.time(), seconds

    def state_now() -> dict:
        return {"step": step, "train_seconds": round(seconds, 1), "config": asdict(cfg), "history": history,
                "torch_threads": torch.get_num_threads(), **({"init_from": origin} if origin else {}),
                **({"conversions": conversions} if conversions else {}),
                **({"adversarial_start": adversarial_start} if adversarial_start is not None else {})}

    def checkpoint() -> None:
        save_checkpoint(directory, model, ema, opt, state_now(), (disc, d_opt) if disc is not None else None)

    while step < cfg.steps:
        for group in opt.param_groups:
            group["lr"] = learning_rate(cfg, step)
        factors, views, target, landmarks, *details = training_batch(
            step, cfg.batch_size, cfg.seed, device, landmarks=True, details=bool(cfg.detail_weight))
        w = model.map_identity(factors)
        out = model.synthesize(w, views)
        loss = image_loss(out, target, cfg.gradient_weight)
        if cfg.feature_weight:
            loss = loss + cfg.feature_weight * feature_loss(out, target, feature_mask(views, landmarks))
        if details:
            loss = loss + cfg.detail_weight * feature_loss(out, target, details[0])
        if model.layout is not None:
            loss = loss + cfg.landmark_weight * landmark_loss(model, w, views, landmarks)
        if disc is not None:
            ramp = min(1.0, (step - adversarial_start + 1) / max(1, cfg.adversarial_warmup))
            disc.requires_grad_(False)
            adversarial = generator_adversarial_loss(disc, out)
            loss = loss + cfg.adversarial_weight * ramp * adversarial
            disc.requires_grad_(True)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if disc is not None:  # the discriminator's step on this batch: the truth against the render
            d_loss = discriminator_loss(disc, target, out)
            d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            d_opt.step()
        with torch.no_grad():
            decay = min(cfg.ema, (1 + step) / (10 + step))
            for pe, p in zip(ema.parameters(), model.parameters(), strict=True):
                pe.lerp_(p, 1 - decay)
        step += 1
        seconds = start_seconds + time.time() - t0
        if step % cfg.eval_every == 0 or step == cfg.steps:
            row = {"step": step, "loss": round(loss.item(), 5), "minutes": round(seconds / 60, 1),
                   **({"d_loss": round(d_loss.item(), 4), "adversarial": round(adversarial.item(), 4)}
                      if disc is not None else {}),
                   **{k: round(v, 3) for k, v in monitor(ema, val).items()}}
            history.append(row)
            log(json.dumps(row))
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            checkpoint()
        if stop_after_s is not None and time.time() - t0 > stop_after_s:
            checkpoint()
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
        "identity_input": "face-world factors (legato_core.faceworld.factors)", "inversion": FACTOR_INVERSION,
        "train_ids": [GENERATOR_TRAIN.start, GENERATOR_TRAIN.stop],
        "losses": {k: state["config"].get(k, 0.0) for k in LOSS_KEYS},
        **({"adversarial_start": state["adversarial_start"]} if "adversarial_start" in state else {}),
        **({"conversions": state["conversions"]} if state.get("conversions") else {})})
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
