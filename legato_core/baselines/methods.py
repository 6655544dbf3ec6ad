"""Unlearning methods behind the same losses, budget and metrics as LEGATO, one registered class each.

- ``legato``: the ODE adapters of the engine (``train_adapter``); knob t = s * T.
- ``legato-no-trajectory``: the same with the trajectory-consistency weight at 0, all else equal: what the
  term buys in smoothness, monotonicity and retention is measured, not assumed.
- ``guide``: GUIDE, a full fine-tune of the synthesis network (mapping frozen).
- ``salun``: SalUn, a global top-50 % weight-saliency mask from |grad L_forget| at the original weights;
  masked updates, and masked-out weights reset to their originals after every step.
- ``uno``: UNO, minimise lambda_f L_f + L_r + lambda_o (g_f . g_r)^2 / (|g_f|^2 |g_r|^2) with double
  backprop; ``uno-s`` alternates those steps with gradient surgery (g_r projected off g_f).
- ``lora``: low-rank residual adapters (``adapters.LowRankAdapter``) at LEGATO's sites, trained at s = 1,
  swept over s at inference (the Concept-Sliders knob).
- ``legato-robust``: ``legato`` in robust mode (``ForgetConfig.robust``): the trained adapter gets the person's
  identity gate (``adapters.gate``), so every latent the base model draws as them follows their path.
- ``guide-robust``: ``guide`` with the same gate in front of the fine-tuned copy: held latents are pulled to the
  person's latent, which the fine-tuned weights draw as the substitute. Beside ``legato-robust`` it says whether
  the adapters or the gate hold against the attacks.

Full-fine-tune methods train a deep copy of the backend and expose weight interpolation
theta(s) = theta_0 + s (theta_1 - theta_0) as their knob; adapter methods train on the frozen base itself.
Adding a method is one class and one ``@register`` line; every knob owns its cleanup (``close``).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..adapters import LowRankAdapter, ODEAdapter, active
from ..metrics import AdapterKnob
from ..unlearning.anchors import view_anchors
from ..unlearning.engine import ForgetConfig, train_adapter
from ..unlearning.objectives import ImageLoss
from ..unlearning.robust import RobustConfig, make_gate
from ..unlearning.step_objectives import sample_step, step_losses
from ..unlearning.targets import make_target, typical_radius

OnStep = Callable[[int, object], None]


@dataclass
class MethodResult:
    name: str
    knob: object  # has .at(s) with s in [0, 1] (None = base) and .close()
    trainable_parameters: int
    seconds: float
    history: list[dict]
    target_latent: torch.Tensor
    target: dict  # how the target was chosen (make_target's description: kind, distance, stop_fraction, ...)

    def close(self) -> None:
        """Release what the knob holds (a trained copy of the generator, adapters)."""
        self.knob.close()


class ScaledKnob:
    """Map a knob s in [0, 1] onto another knob's range (LEGATO: t = s * T)."""

    def __init__(self, knob, scale: float):
        self.knob, self.scale = knob, scale

    @contextmanager
    def at(self, s: float | None):
        with self.knob.at(None if s is None else s * self.scale) as model:
            yield model

    def close(self) -> None:
        self.knob.close()


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

    def close(self) -> None:
        self.model = self.params = self.theta0 = self.theta1 = None


class GatedKnob:
    """Another knob's model with an identity gate in front (robust mode for a method that is not an adapter): a
    zero-field ODE adapter on the latent site carrying the person's gate, at t = s * t_end. Held latents are
    pulled straight to the person's latent, complete at s = 1; all others pass unchanged."""

    def __init__(self, knob, gate_adapter: ODEAdapter):
        self.knob, self.gate_adapter = knob, gate_adapter

    @contextmanager
    def at(self, s: float | None):
        with self.knob.at(s) as model:
            if s is None:
                yield model
                return
            with active(model, [(self.gate_adapter, s * self.gate_adapter.config.t_end)]):
                yield model

    def close(self) -> None:
        self.knob.close()


def _flat(grads) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in grads])


METHODS: dict[str, type[UnlearningMethod]] = {}


def register(cls: type[UnlearningMethod]) -> type[UnlearningMethod]:
    """Class decorator: make a method available by its ``name`` (benchmark, CLI, sweeps)."""
    if cls.name in METHODS:
        raise ValueError(f"a method named {cls.name!r} is already registered")
    METHODS[cls.name] = cls
    return cls


class UnlearningMethod:
    """One way to make the generator forget ``w_u``. ``train`` returns a :class:`MethodResult` whose knob renders
    the method at any strength s in [0, 1]; ``on_step(step, model)`` is called after every update with a model
    that renders the method at full strength."""

    name: ClassVar[str]
    default_lr: ClassVar[float]  # docs/lr_sweep.json (scripts/sweep_lr.py, 60 steps, validation id 105,000)

    def __init__(self, **options):
        if options:
            raise TypeError(f"{self.name} takes no options, got {sorted(options)}")

    def train(self, backend, w_u: torch.Tensor, config: ForgetConfig, on_step: OnStep | None = None) -> MethodResult:
        raise NotImplementedError


@register
class Legato(UnlearningMethod):
    name = "legato"
    default_lr = ForgetConfig.lr  # the engine's own default (chosen on validation ids, docs/engine.md)

    def configure(self, config: ForgetConfig) -> ForgetConfig:
        return config

    def train(self, backend, w_u, config, on_step=None):
        cfg = self.configure(copy.deepcopy(config))

        def progress(ev) -> None:
            with active(backend, [(ev.adapter, cfg.ode.t_end)]):
                on_step(ev.step, backend)

        res = train_adapter(backend, w_u, cfg, on_progress=progress if on_step else None)
        knob = ScaledKnob(AdapterKnob(backend, [res.adapter]), cfg.ode.t_end)
        return MethodResult(self.name, knob, res.adapter.trainable_parameters(), res.seconds, res.history,
                            res.target_latent, res.adapter.description["target"])


@register
class LegatoRobust(Legato):
    """Robust mode with its defaults (``RobustConfig``), everything else as ``legato``."""

    name = "legato-robust"

    def configure(self, config: ForgetConfig) -> ForgetConfig:
        config.robust = config.robust or RobustConfig()
        return config


@register
class LegatoWithoutTrajectory(Legato):
    """The trajectory-consistency ablation: weight 0, everything else as ``legato``."""

    name = "legato-no-trajectory"

    def configure(self, config: ForgetConfig) -> ForgetConfig:
        config.weights.trajectory = 0.0
        return config


class ImageObjectiveMethod(UnlearningMethod):
    """Methods trained directly on the engine's image objective: choose parameters, then one loop."""

    def prepare(self, backend) -> tuple[object, list[nn.Parameter], Callable[[], object]]:
        """(model that renders while training, trainable parameters, knob factory called after training)."""
        raise NotImplementedError

    def update(self, step: int, parts: dict[str, torch.Tensor], params: list[nn.Parameter], rec: dict) -> torch.Tensor:
        """Set the parameters' gradients from the step's losses; returns the total loss."""
        total = parts["forget"] + parts["retain"]
        total.backward()
        return total

    def after_step(self, params: list[nn.Parameter]) -> None:
        pass

    def trainable(self, params: list[nn.Parameter]) -> int:
        return sum(p.numel() for p in params)

    def render_context(self) -> AbstractContextManager:
        """What must hold while the trained model renders (the low-rank adapter active); nothing by default."""
        return nullcontext()

    def train(self, backend, w_u, config, on_step=None):
        cfg = config
        t0 = time.time()
        torch.manual_seed(cfg.seed)
        self.gen = gen = torch.Generator().manual_seed(cfg.seed)
        w_target, target_desc = make_target(backend, w_u, cfg.target)
        radius = cfg.adjacency_radius * typical_radius(backend)
        loss_fn = ImageLoss(backend.loss_identity_model(), cfg.weights)
        model, params, make_knob = self.prepare(backend)
        for p in params:
            p.requires_grad_(True)

        def losses() -> dict[str, torch.Tensor]:
            batch = sample_step(backend, w_u, w_target, cfg, gen, radius)
            with torch.no_grad(), active(backend, []):
                ref_img, ref_feat = backend.synthesize(batch.dst, batch.views, return_features=True)
            with self.render_context():
                img, feat = model.synthesize(batch.src, batch.views, return_features=True)
            return step_losses(loss_fn, batch, img, feat, ref_img, ref_feat)

        self.losses = losses
        self.begin(params)
        opt = torch.optim.Adam(params, lr=cfg.lr)
        history = []
        for step in range(cfg.steps):
            parts = losses()
            opt.zero_grad(set_to_none=True)
            rec = {"step": step + 1}
            with self.render_context():
                total = self.update(step, parts, params, rec)
            opt.step()
            self.after_step(params)
            rec.update({"total": total.item(), "identity": parts["identity"].item(),
                        "preservation": parts["preservation"].item()})
            history.append(rec)
            if on_step:
                with self.render_context():
                    on_step(step + 1, model)
        for p in params:
            p.requires_grad_(False)
        return MethodResult(self.name, make_knob(), self.trainable(params), time.time() - t0, history, w_target,
                            target_desc)

    def begin(self, params: list[nn.Parameter]) -> None:
        """Called once before the first update, with ``self.losses`` ready (SalUn's saliency)."""


class FineTune(ImageObjectiveMethod):
    """A full fine-tune of the synthesis weights of a deep copy; knob: weight interpolation."""

    def prepare(self, backend):
        model = copy.deepcopy(backend)
        for p in model.parameters():
            p.requires_grad_(False)
        params = model.synthesis_parameters()
        theta0 = [p.detach().clone() for p in params]
        return model, params, lambda: WeightKnob(backend, model, params, theta0)


@register
class Guide(FineTune):
    name = "guide"
    default_lr = 1e-4


@register
class GuideRobust(Guide):
    """GUIDE, then robust mode's gate made exactly as the engine makes LEGATO's (the upload and its view anchors,
    ``make_gate`` with ``RobustConfig``), in front of the fine-tuned copy."""

    name = "guide-robust"

    def __init__(self, robust: RobustConfig | None = None):
        self.robust = robust or RobustConfig()

    def train(self, backend, w_u, config, on_step=None):
        res = super().train(backend, w_u, config, on_step)
        t0 = time.time()
        latent_sites = [k for k, m in backend.adapter_sites.items() if getattr(m, "adapter_kind", "conv") == "latent"]
        if not latent_sites:
            raise ValueError("guide-robust gates a latent site, and this backend has none")
        gen = torch.Generator().manual_seed(config.seed)
        people = torch.cat([w_u, view_anchors(backend, w_u, config.view_anchors, gen)])
        gate, info = make_gate(backend, people, self.robust)
        model = res.knob.model
        # the gate asks what the *base* model draws (as the engine's gate does), not the fine-tuned copy
        model.latent_identity = backend.latent_identity
        gate_adapter = ODEAdapter.for_model(model, latent_sites[:1], config.ode, {"method": self.name})
        gate_adapter.set_gate(gate)
        res.knob = GatedKnob(res.knob, gate_adapter)
        res.seconds += time.time() - t0
        res.target = {**res.target, "robust": info}
        return res


@register
class SalUn(FineTune):
    name = "salun"
    default_lr = 1e-4

    def __init__(self, fraction: float = 0.5):
        self.fraction = fraction
        self.mask: list[torch.Tensor] | None = None

    def begin(self, params):  # saliency from the forget loss at the original weights
        self.theta0 = [p.detach().clone() for p in params]
        sal = [torch.zeros_like(p) for p in params]
        for _ in range(4):
            g = torch.autograd.grad(self.losses()["forget"], params)
            for s, gi in zip(sal, g, strict=True):
                s += gi.abs()
        flat = _flat(sal)
        k = int(len(flat) * self.fraction)
        cut = flat.kthvalue(len(flat) - k).values
        self.mask = [s > cut for s in sal]

    def update(self, step, parts, params, rec):
        total = super().update(step, parts, params, rec)
        for p, m in zip(params, self.mask, strict=True):
            p.grad.mul_(m)
        return total

    def after_step(self, params):  # Adam's momentum would otherwise move masked-out weights
        with torch.no_grad():
            for p, m, p0 in zip(params, self.mask, self.theta0, strict=True):
                p.copy_(torch.where(m, p, p0))

    def trainable(self, params):
        return int(sum(m.sum() for m in self.mask))


@register
class Uno(FineTune):
    name = "uno"
    default_lr = 3e-4

    def __init__(self, orthogonality_weight: float = 1e3):
        self.orthogonality_weight = orthogonality_weight

    def update(self, step, parts, params, rec):
        g_f = torch.autograd.grad(parts["forget"], params, create_graph=True, retain_graph=True)
        g_r = torch.autograd.grad(parts["retain"], params, create_graph=True, retain_graph=True)
        gf, gr = _flat(g_f), _flat(g_r)
        ortho = (gf @ gr) ** 2 / (gf.square().sum() * gr.square().sum() + 1e-20)
        total = parts["forget"] + parts["retain"] + self.orthogonality_weight * ortho
        total.backward()
        rec["orthogonality"] = ortho.item()
        return total


@register
class UnoWithSurgery(Uno):
    """UNO steps alternating with gradient surgery: g = g_f + (g_r projected off g_f)."""

    name = "uno-s"
    default_lr = 1e-4

    def update(self, step, parts, params, rec):
        if step % 2 == 0:
            return super().update(step, parts, params, rec)
        g_f = torch.autograd.grad(parts["forget"], params, retain_graph=True)
        g_r = torch.autograd.grad(parts["retain"], params)
        gf, gr = _flat(g_f), _flat(g_r)
        gr = gr - (gr @ gf) / (gf @ gf + 1e-20) * gf
        g, k = gf + gr, 0
        for p in params:
            p.grad = g[k:k + p.numel()].view_as(p).clone()
            k += p.numel()
        return parts["forget"] + parts["retain"]


@register
class LowRank(ImageObjectiveMethod):
    name = "lora"
    default_lr = 3e-3

    def __init__(self, rank: int = 4):
        self.rank = rank

    def prepare(self, backend):
        self.backend = backend
        conv_sites = {k: m.channels for k, m in backend.adapter_sites.items()
                      if getattr(m, "adapter_kind", "conv") == "conv"}  # 1x1 residuals act on feature maps
        self.adapter = LowRankAdapter(conv_sites, self.rank,
                                      backend.base_model_id, backend.weight_hash())
        return backend, list(self.adapter.parameters()), lambda: AdapterKnob(backend, [self.adapter])

    def render_context(self):
        return active(self.backend, [(self.adapter, 1.0)])


def run_method(name: str, backend, w_u: torch.Tensor, config: ForgetConfig, lr: float | None = None,
               on_step: OnStep | None = None, **options) -> MethodResult:
    """Train method ``name`` (see ``METHODS``) to forget ``w_u`` with the engine's losses and budget."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {tuple(METHODS)}")
    cfg = copy.deepcopy(config)
    if lr is not None:
        cfg.lr = lr
    return METHODS[name](**options).train(backend, w_u, cfg, on_step)
