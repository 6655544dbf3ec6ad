"""Training identity networks on the face world with additive-margin softmax losses.

``arcface``: additive *angular* margin, cos(theta + m) (Deng et al.). ``judge``: additive *cosine* margin,
cos(theta) - m (CosFace). The margin is ramped in over the first steps so training from scratch is stable.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..faceworld.dataset import render_set, to_float
from .model import IdentityModel
from .verification import verification_report


class MarginHead(nn.Module):
    def __init__(self, dim: int, classes: int, kind: str, scale: float, margin: float):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(classes, dim) * 0.01)
        self.kind, self.scale, self.margin = kind, scale, margin

    def forward(self, emb: torch.Tensor, labels: torch.Tensor, margin_frac: float = 1.0) -> torch.Tensor:
        cos = F.linear(emb, F.normalize(self.weight, dim=1)).clamp(-1 + 1e-6, 1 - 1e-6)
        m = self.margin * margin_frac
        target = cos.gather(1, labels[:, None])
        if self.kind == "arcface":
            theta = torch.acos(target)
            new = torch.where(theta + m < math.pi, torch.cos(theta + m), target - m * math.sin(m))
        else:
            new = target - m
        logits = cos.scatter(1, labels[:, None], new) * self.scale
        return F.cross_entropy(logits, labels)


@dataclass
class IdentityTrainingConfig:
    architecture: str = "arcface"
    train_ids: tuple[int, int] = (0, 4000)
    views_per_id: int = 16
    val_ids: tuple[int, int] = (100_000, 100_300)
    steps: int = 4000
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 5e-4
    scale: float = 30.0
    margin: float = 0.4
    margin_ramp: float = 0.2
    seed: int = 0
    threads: int = 1
    net: dict = field(default_factory=dict)
    init_from: str | None = None  # continue from saved weights (the margin head restarts at class means)


def train_identity_model(cfg: IdentityTrainingConfig, log=print) -> tuple[IdentityModel, dict]:
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    t0 = time.time()
    ids = list(range(*cfg.train_ids))
    images, labels = render_set(ids, cfg.views_per_id, desc=f"{cfg.architecture}: rendering train set")
    val_imgs, val_labels = render_set(list(range(*cfg.val_ids)), 10, first_view=1000, desc="rendering val set")
    render_seconds = time.time() - t0
    model = IdentityModel(cfg.architecture, cfg.net)
    kind = "arcface" if cfg.architecture == "arcface" else "cosface"
    head = MarginHead(model.net.head[-1].num_features, len(ids), kind, cfg.scale, cfg.margin)
    if cfg.init_from:
        model.net.load_state_dict(IdentityModel.from_pretrained(cfg.init_from).net.state_dict())
        emb = model.embed(to_float(images))
        means = torch.zeros(len(ids), emb.shape[1]).index_add_(0, labels, emb)
        with torch.no_grad():
            head.weight.copy_(F.normalize(means, dim=1))
        model.train()
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(cfg.seed)
    history = []
    bar = tqdm(range(cfg.steps), desc=f"training {cfg.architecture}", mininterval=5)
    for step in bar:
        idx = torch.randint(len(images), (cfg.batch_size,), generator=gen)
        x = to_float(images[idx])
        if torch.rand((), generator=gen) < 0.5:  # mirror: identity attributes are left/right symmetric
            x = x.flip(-1)
        frac = 1.0 if cfg.init_from else min(1.0, step / max(1, cfg.margin_ramp * cfg.steps))
        loss = head(model(x), labels[idx], frac)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 500 == 0 or step == cfg.steps - 1:
            rep = verification_report(model.embed(to_float(val_imgs)), val_labels)
            history.append({"step": step, "loss": loss.item(), "val_roc_auc": rep["roc_auc"],
                            "val_tar_at_far_0.001": rep["tar_at_far_0.001"]})
            log(f"step {step} loss {loss.item():.3f} val auc {rep['roc_auc']:.5f} "
                f"tar@1e-3 {rep['tar_at_far_0.001']:.4f}")
    model.eval()
    info = {"training": asdict(cfg), "history": history, "render_seconds": render_seconds,
            "train_seconds": time.time() - t0}
    return model, info


def calibrate_threshold(model: IdentityModel, ids: range, views: int = 10, far: float = 1e-3) -> dict:
    """Set ``model.threshold`` to the cosine at FAR ``far`` on validation ids (never evaluation ids)."""
    imgs, labels = render_set(list(ids), views, first_view=2000, desc="calibrating threshold")
    rep = verification_report(model.embed(to_float(imgs)), labels, far=far)
    model.threshold = rep["threshold_at_far"]
    return {"ids": [ids.start, ids.stop], "views": views, "far": far, **rep}
