"""Training the embedded generator and its view encoder on rendered face-world data.

The generator is trained by regression, not adversarially: the face world tells us the exact view of every
image, and the identity comes from the ``arcface`` embedding of *another* view of the same person, so the
mapping must carry identity alone and the view code everything else. Losses: L1 at two scales, the
arcface-feature perceptual distance, and an identity term.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..faceworld import decode_view, encode_view
from ..faceworld.attributes import sample_identities, sample_views
from ..faceworld.renderer import render_faces
from ..identity.feature_distance import ArcFaceFeatureDistance
from ..identity.model import IdentityModel
from .modeling import GeneratorConfig, StyleFaceGenerator
from .view_encoder import ViewEncoder


def render_training_data(ids: range, views_per_id: int, path: Path, chunk: int = 256) -> dict[str, torch.Tensor]:
    """Render (and cache as safetensors) images, canonical view vectors and identity labels."""
    if path.exists():
        return load_file(path)
    flat_ids = [i for i in ids for _ in range(views_per_id)]
    flat_views = [v for _ in ids for v in range(views_per_id)]
    images = torch.empty(len(flat_ids), 3, 64, 64, dtype=torch.uint8)
    vectors = torch.empty(len(flat_ids), 21)
    for s in tqdm(range(0, len(flat_ids), chunk), desc="rendering generator data", mininterval=15):
        view = sample_views(flat_ids[s:s + chunk], flat_views[s:s + chunk])
        images[s:s + chunk] = (render_faces(sample_identities(flat_ids[s:s + chunk]), view) * 255).round().byte()
        vectors[s:s + chunk] = encode_view(view)
    data = {"images": images, "views": encode_view(decode_view(vectors)),
            "labels": torch.arange(len(ids)).repeat_interleave(views_per_id)}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(data, path)
    return data


def train_view_encoder(data: dict[str, torch.Tensor], steps: int = 3000, batch: int = 128, lr: float = 2e-3,
                       seed: int = 0) -> ViewEncoder:
    torch.manual_seed(seed)
    enc = ViewEncoder()
    opt = torch.optim.AdamW(enc.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    gen = torch.Generator().manual_seed(seed)
    n = len(data["images"])
    for step in tqdm(range(steps), desc="training view encoder", mininterval=15):
        idx = torch.randint(n, (batch,), generator=gen)
        loss = F.mse_loss(enc(data["images"][idx].float() / 255), data["views"][idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 500 == 0:
            tqdm.write(f"view encoder step {step} mse {loss.item():.4f}")
    return enc.eval()


@torch.no_grad()
def embed_all(arcface: IdentityModel, images: torch.Tensor, batch: int = 512) -> torch.Tensor:
    return torch.cat([arcface.embed(images[i:i + batch].float() / 255) for i in range(0, len(images), batch)])


@dataclass
class GeneratorTrainingConfig:
    steps: int = 6000
    batch_size: int = 32
    lr: float = 2e-3
    ema: float = 0.998
    l1_weight: float = 1.0
    perceptual_weight: float = 0.5
    identity_weight: float = 0.3
    embedding_noise: float = 0.01
    seed: int = 0
    time_budget_s: float | None = None
    checkpoint_every: int = 500
    init_from: str | None = None  # continue from a saved generator (weights only; the schedule restarts)


def train_generator(data: dict[str, torch.Tensor], embeddings: torch.Tensor, arcface: IdentityModel,
                    cfg: GeneratorTrainingConfig, out_dir: Path, log=print) -> tuple[StyleFaceGenerator, dict]:
    torch.manual_seed(cfg.seed)
    g = StyleFaceGenerator(GeneratorConfig()) if not cfg.init_from else StyleFaceGenerator.from_pretrained(
        cfg.init_from).train()
    ema = copy.deepcopy(g).eval()
    perceptual = ArcFaceFeatureDistance(arcface)
    opt = torch.optim.Adam(g.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(cfg.seed)
    warmup = 100
    labels, images, views = data["labels"], data["images"], data["views"]
    per_id = int((labels == 0).sum())
    n = len(images)
    t0 = time.time()
    history = []
    step, total = 0, cfg.steps
    for step in tqdm(range(cfg.steps), desc="training generator", mininterval=15):
        if cfg.time_budget_s and step == 30:  # fit the schedule to the budget; the log records the step count
            total = min(cfg.steps, int(cfg.time_budget_s / ((time.time() - t0) / 30)))
            log(f"time budget {cfg.time_budget_s:.0f}s -> {total} steps")
        if step >= total:
            break
        lr = cfg.lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / total))
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(n, (cfg.batch_size,), generator=gen)
        other = labels[idx] * per_id + torch.randint(per_id, (cfg.batch_size,), generator=gen)
        e = embeddings[other] + cfg.embedding_noise * torch.randn(cfg.batch_size, embeddings.shape[1], generator=gen)
        target = images[idx].float() / 255
        out = g.synthesize(g.map_identity(e), views[idx])
        l1 = (out - target).abs().mean() + (F.avg_pool2d(out, 2) - F.avg_pool2d(target, 2)).abs().mean()
        perc = perceptual(out, target).mean()
        ident = (1 - (arcface(out) * embeddings[idx]).sum(1)).mean()
        loss = cfg.l1_weight * l1 + cfg.perceptual_weight * perc + cfg.identity_weight * ident
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), g.parameters(), strict=True):
                pe.lerp_(p, 1 - cfg.ema)
        if step % 100 == 0:
            history.append({"step": step, "l1": l1.item(), "perceptual": perc.item(), "identity": ident.item(),
                            "seconds": round(time.time() - t0, 1)})
            log(f"step {step} l1 {l1.item():.4f} perc {perc.item():.4f} id {ident.item():.4f} "
                f"{time.time() - t0:.0f}s")
        if step and step % cfg.checkpoint_every == 0:
            ema.save_pretrained(out_dir / "checkpoint", extra={"step": step})
    ema.fit_prior(embeddings)
    return ema, {"training": asdict(cfg), "steps_done": min(step + 1, total),
                 "train_seconds": round(time.time() - t0, 1), "history": history}
