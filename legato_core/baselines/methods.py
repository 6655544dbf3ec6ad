"""Baselines behind the same losses, budget and metrics as LEGATO.

- ``guide``: GUIDE, a full fine-tune of the synthesis network (mapping frozen).
- ``salun``: SalUn, a global top-50 % weight-saliency mask from |grad L_forget| at the original weights;
  masked updates, and masked-out weights reset to their originals after every step.
- ``uno``: UNO, minimise lambda_f L_f + L_r + lambda_o (g_f . g_r)^2 / (|g_f|^2 |g_r|^2) with double
  backprop; ``uno-s`` alternates those steps with gradient surgery (g_r projected off g_f).
- ``lora``: low-rank residual adapters x + s * up(down(x)) at the same sites as LEGATO's ODE adapters,
  trained at s = 1 (up-projection zero-initialised), s swept at inference (the Concept-Sliders knob).
Full-fine-tune methods expose weight interpolation theta(s) = theta_0 + s (theta_1 - theta_0) as their knob.
Every method trains a deep copy of the backend; the original stays frozen and renders every target.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from ..metrics import AdapterKnob
from ..unlearning.engine import ForgetConfig, sample_step, step_losses, train_adapter
from ..unlearning.objectives import ImageLoss
from ..unlearning.targets import make_target, typical_radius

METHODS = ("legato", "guide", "salun", "uno", "uno-s", "lora")


@dataclass
class MethodResult:
    name: str
    knob: object  # has .at(s) with s in [0, 1] (None = base)
    trainable_parameters: int
    seconds: float
    history: list[dict]
    target_latent: torch.Tensor


class ScaledKnob:
    """Map a knob s in [0, 1] onto another knob's range (LEGATO: t = s * T)."""

    def __init__(self, knob, scale: float):
        self.knob, self.scale = knob, scale

    @contextmanager
    def at(self, s: float | None):
        with self.knob.at(None if s is None else s * self.scale) as model:
            yield model


class WeightKnob:
    """theta(s) = theta_0 + s (theta_1 - theta_0) on a trained copy; s = None renders the untouched base."""

    def __init__(self, base, model, params: list[nn.Parameter], theta0: list[torch.Tensor]):
        self.base, self.model, self.params = base, model, params
        self.theta0 = theta0
        self.theta1 = [p.detach().clone() for p in params]

    @contextmanager
    def at(self, s: float | None):
        if s is None:
            yield self.base
            return
        with torch.no_grad():
            for p, a, b in zip(self.params, self.theta0, self.theta1, strict=True):
                p.copy_(a + s * (b - a))
        try:
            yield self.model
        finally:
            with torch.no_grad():
                for p, b in zip(self.params, self.theta1, strict=True):
                    p.copy_(b)


class LowRankSiteAdapter(nn.Module):
    """x + scale * up(down(x)) with 1x1 convs; up starts at zero so scale has no effect before training."""

    def __init__(self, channels: int, rank: int = 4):
        super().__init__()
        self.down = nn.Conv2d(channels, rank, 1, bias=False)
        self.up = nn.Conv2d(rank, channels, 1, bias=False)
        nn.init.kaiming_uniform_(self.down.weight, a=5**0.5)
        nn.init.zeros_(self.up.weight)
        self.scale = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.up(self.down(x)) if self.scale else x


class LoraKnob:
    def __init__(self, base, model, adapters: list[LowRankSiteAdapter]):
        self.base, self.model, self.adapters = base, model, adapters

    @contextmanager
    def at(self, s: float | None):
        if s is None:
            yield self.base
            return
        for a in self.adapters:
            a.scale = s
        try:
            yield self.model
        finally:
            for a in self.adapters:
                a.scale = 1.0


def _synthesis_params(model) -> list[nn.Parameter]:
    return [p for p in model.generator.blocks.parameters()]


def _flat(grads) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in grads])


def run_method(name: str, backend, w_u: torch.Tensor, config: ForgetConfig, lr: float | None = None,
               on_step: Callable[[int, object], None] | None = None, uno_lambda: float = 1e3,
               salun_fraction: float = 0.5, lora_rank: int = 4) -> MethodResult:
    """Train ``name`` to forget ``w_u`` on a copy of ``backend`` with the engine's losses and budget.

    ``on_step(step, model)`` is called after every update with a model that renders the method at full
    strength (for LEGATO: the backend with the adapter being trained attached).
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {METHODS}")
    cfg = copy.deepcopy(config)
    if lr is not None:
        cfg.lr = lr
    t0 = time.time()
    if name == "legato":
        res = train_adapter(backend, w_u, cfg, on_progress=(lambda ev: on_step(ev.step, backend)) if on_step else None)
        res.adapter.attach(backend)  # caller detaches via result.knob.knob.adapters
        knob = ScaledKnob(AdapterKnob(backend, [res.adapter]), cfg.ode.t_end)
        return MethodResult(name, knob, res.adapter.trainable_parameters(), res.seconds, res.history,
                            res.target_latent)

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    w_t, _ = make_target(backend, w_u, cfg.target)
    radius = cfg.adjacency_radius * typical_radius(backend)
    model = copy.deepcopy(backend)
    loss_fn = ImageLoss(backend.loss_identity_model(), cfg.weights)

    if name == "lora":
        adapters = []
        for _site_name, site in model.adapter_sites.items():
            a = LowRankSiteAdapter(site.channels, lora_rank)
            site.register_forward_hook(lambda _m, _i, out, _a=a: _a(out))
            adapters.append(a)
        params = [p for a in adapters for p in a.parameters()]
    else:
        params = _synthesis_params(model)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    theta0 = [p.detach().clone() for p in params]
    opt = torch.optim.Adam(params, lr=cfg.lr)

    def losses():
        batch = sample_step(backend, w_u, w_t, cfg, gen, radius)
        with torch.no_grad():
            ref_img, ref_feat = backend.synthesize(batch.dst, batch.views, return_features=True)
        img, feat = model.synthesize(batch.src, batch.views, return_features=True)
        return step_losses(loss_fn, batch, img, feat, ref_img, ref_feat)

    mask = None
    if name == "salun":  # saliency from the forget loss at the original weights
        sal = [torch.zeros_like(p) for p in params]
        for _ in range(4):
            g = torch.autograd.grad(losses()["forget"], params)
            for s, gi in zip(sal, g, strict=True):
                s += gi.abs()
        flat = _flat(sal)
        k = int(len(flat) * salun_fraction)
        cut = flat.kthvalue(len(flat) - k).values
        mask = [s > cut for s in sal]

    history = []
    for step in range(cfg.steps):
        parts = losses()
        opt.zero_grad(set_to_none=True)
        rec = {"step": step + 1}
        if name in ("guide", "lora", "salun"):
            total = parts["forget"] + parts["retain"]
            total.backward()
            if mask is not None:
                for p, m in zip(params, mask, strict=True):
                    p.grad.mul_(m)
        elif name == "uno" or (name == "uno-s" and step % 2 == 0):
            g_f = torch.autograd.grad(parts["forget"], params, create_graph=True, retain_graph=True)
            g_r = torch.autograd.grad(parts["retain"], params, create_graph=True, retain_graph=True)
            gf, gr = _flat(g_f), _flat(g_r)
            ortho = (gf @ gr) ** 2 / (gf.square().sum() * gr.square().sum() + 1e-20)
            total = parts["forget"] + parts["retain"] + uno_lambda * ortho
            total.backward()
            rec["orthogonality"] = ortho.item()
        else:  # uno-s surgery step: g = g_f + (g_r projected off g_f)
            g_f = torch.autograd.grad(parts["forget"], params, retain_graph=True)
            g_r = torch.autograd.grad(parts["retain"], params)
            gf, gr = _flat(g_f), _flat(g_r)
            gr = gr - (gr @ gf) / (gf @ gf + 1e-20) * gf
            g, k = gf + gr, 0
            for p in params:
                p.grad = g[k:k + p.numel()].view_as(p).clone()
                k += p.numel()
            total = parts["forget"] + parts["retain"]
        opt.step()
        if mask is not None:
            with torch.no_grad():
                for p, m, p0 in zip(params, mask, theta0, strict=True):
                    p.copy_(torch.where(m, p, p0))
        rec.update({"total": total.item(), "identity": parts["identity"].item(),
                    "preservation": parts["preservation"].item()})
        history.append(rec)
        if on_step:
            on_step(step + 1, model)
    for p in params:
        p.requires_grad_(False)
    if name == "lora":
        knob = LoraKnob(backend, model, adapters)
        trainable = sum(p.numel() for p in params)
    else:
        knob = WeightKnob(backend, model, params, theta0)
        trainable = int(sum(m.sum() for m in mask)) if mask is not None else sum(p.numel() for p in params)
    return MethodResult(name, knob, trainable, time.time() - t0, history, w_t)
