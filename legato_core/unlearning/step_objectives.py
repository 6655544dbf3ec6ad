"""One training step's losses, one strategy per kind of generator, chosen from a table by the backend.

The engine runs one loop for every backend: inside the adapter's activation block it asks the run's objective
for ``losses(adapter) -> (parts, local_rows)``; ``parts`` has "forget" and "retain" (plus logged extras) and
the first ``local_rows`` rows of each site's ODE states are the target's (the trajectory term's rows). A
backend names its objective in ``backend.objective``:

- "image" (GAN-style generators that render with gradients): GUIDE's local, adjacency and preservation losses
  on rendered images and features (``ImageLoss``).
- "epsilon-matching" (identity-conditioned diffusion, Arc2Face): on states of frozen DDIM trajectories, the
  adapted UNet conditioned on the target must predict what the frozen UNet predicts for the anchor; conditioned
  on random identities (and the empty prompt, under guidance) what it predicts for them.
- "ddpm-trajectory" (unconditional DDPM): along the frozen target trajectory moved towards the anchor's, the
  adapted UNet must predict the noise whose x0-estimate is the anchor's (min-SNR weighted); random
  trajectories keep their noise.

An objective is built once per run (the diffusion ones build their frozen trajectories then, from the run's
generator) and dropped with it, so nothing of a run is left on the backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch

from ..adapters import ODEAdapter, active
from .objectives import ImageLoss, intensity_schedule, monotone_forgetting
from .targets import typical_radius

if TYPE_CHECKING:
    from .engine import ForgetConfig


@dataclass
class StepBatch:
    """One step's inputs: rows [0, k_l) local, [k_l, k_l+k_a) adjacency, the rest preservation."""

    src: torch.Tensor  # latents rendered by the model being trained
    dst: torch.Tensor  # latents rendered by the frozen model (the targets)
    views: torch.Tensor
    k_l: int
    k_a: int
    rows: torch.Tensor | None = None  # which rows of w_u the local and adjacency latents start from


def sample_step(backend, w_u: torch.Tensor, w_target: torch.Tensor, config: ForgetConfig, gen: torch.Generator,
                radius: float) -> StepBatch:
    """Random views, adjacency offsets delta = alpha (w_r - w_u)/|w_r - w_u| and preservation latents."""
    k_l, k_a, k_p = config.local_views, config.adjacency_samples, config.preservation_samples
    views = backend.sample_views(k_l + k_a + k_p, gen)
    w_r = backend.sample_latents(k_a + k_p, gen)
    alpha = torch.rand(k_a, 1, generator=gen) * radius
    pick = torch.randint(len(w_u), (k_l + k_a,), generator=gen)
    u = w_u[pick]
    tgt = w_target[pick] if len(w_target) == len(w_u) else w_target[:1].expand(k_l + k_a, -1)
    if config.adjacency_directions == "isotropic":  # any direction, not only towards other people
        dirs = torch.randn(k_a, w_u.shape[1], generator=gen).to(w_u)
    else:  # GUIDE: towards random identities of the prior
        dirs = w_r[:k_a] - u[k_l:]
    k_i = min(config.adjacency_isotropic, k_a)
    if k_i:  # the last k_i rows: random directions within the (smaller) ball of the person's other photos
        dirs = torch.cat([dirs[:k_a - k_i], torch.randn(k_i, w_u.shape[1], generator=gen).to(w_u)])
        scale = config.isotropic_radius / config.adjacency_radius if config.adjacency_radius else 0.0
        alpha = torch.cat([alpha[:k_a - k_i], alpha[k_a - k_i:] * scale])
    delta = alpha * dirs / dirs.norm(dim=1, keepdim=True).clamp(min=1e-8)
    keep = w_r[k_a:]
    k_n = min(config.preservation_near, k_p)
    if k_n:
        lam = 0.5 + 0.5 * torch.rand(k_n, 1, generator=gen)
        anchor = w_u[torch.randint(len(w_u), (k_n,), generator=gen)]
        keep = torch.cat([anchor + lam * (keep[:k_n] - anchor), keep[k_n:]])
    src = torch.cat([u[:k_l], u[k_l:] + delta, keep])
    dst = torch.cat([tgt[:k_l], tgt[k_l:] + delta, keep])
    return StepBatch(src, dst, views, k_l, k_a, pick)


def step_losses(loss_fn: ImageLoss, batch: StepBatch, img, feat, ref_img, ref_feat) -> dict[str, torch.Tensor]:
    """forget = local + w_adj * adjacency; retain = w_pres * preservation (GUIDE's three groups)."""
    k_l, n_f = batch.k_l, batch.k_l + batch.k_a
    local = loss_fn(img[:k_l], feat[:k_l], ref_img[:k_l], ref_feat[:k_l])
    adj = loss_fn(img[k_l:n_f], feat[k_l:n_f], ref_img[k_l:n_f], ref_feat[k_l:n_f])
    keep = loss_fn(img[n_f:], feat[n_f:], ref_img[n_f:], ref_feat[n_f:],
                   identity_weight=loss_fn.w.preservation_identity)
    w = loss_fn.w
    return {"forget": local["total"] + w.adjacency * adj["total"], "retain": w.preservation * keep["total"],
            "local": local["total"], "identity": local["identity"], "adjacency": adj["total"],
            "preservation": keep["total"]}


def combine_rows(per_row: torch.Tensor, k_l: int, k_a: int, config: ForgetConfig) -> dict[str, torch.Tensor]:
    """Per-row losses, rows [0, k_l) local, [k_l, k_l + k_a) adjacency, the rest preservation -> loss parts."""
    n_f = k_l + k_a
    zero = per_row.new_zeros(())
    local = per_row[:k_l].mean() if k_l else zero
    adj = per_row[k_l:n_f].mean() if k_a else zero
    keep = per_row[n_f:].mean() if len(per_row) > n_f else zero
    w = config.weights
    return {"forget": local + w.adjacency * adj, "retain": w.preservation * keep, "local": local,
            "adjacency": adj, "preservation": keep}


class StepObjective(Protocol):
    def losses(self, adapter: ODEAdapter) -> tuple[dict[str, torch.Tensor], int]: ...


class ImageObjective:
    """GUIDE's image losses on renders (GAN-style generators that render with gradients)."""

    def __init__(self, backend, w_u: torch.Tensor, w_target: torch.Tensor, config: ForgetConfig,
                 gen: torch.Generator):
        self.backend, self.w_u, self.w_target, self.config, self.gen = backend, w_u, w_target, config, gen
        self.radius = config.adjacency_radius * typical_radius(backend)
        self.loss_fn = ImageLoss(backend.loss_identity_model(), config.weights)
        self.local_rows: torch.Tensor | None = None  # the last step's local rows of w_u (the reference path's)

    def losses(self, adapter: ODEAdapter) -> tuple[dict[str, torch.Tensor], int]:
        backend, config, gen, loss_fn = self.backend, self.config, self.gen, self.loss_fn
        batch = sample_step(backend, self.w_u, self.w_target, config, gen, self.radius)
        k_l, n = batch.k_l, len(batch.dst)
        self.local_rows = batch.rows[:k_l]
        w_sched, w_mono, w_path = (config.weights.intensity_schedule, config.weights.monotone,
                                   config.weights.path)
        shape_path = bool(w_sched or w_mono or w_path)  # terms on a render at a random t' < T
        fraction = float(torch.rand((), generator=gen)) if shape_path else 0.0
        ref_src, ref_views = batch.dst, batch.views
        if w_sched or w_mono:  # the originals, for similarities along the path
            ref_src, ref_views = torch.cat([ref_src, batch.src[:k_l]]), torch.cat([ref_views, batch.views[:k_l]])
        if w_path:  # the point a fraction of the way along the latent line from the person to the target
            on_line = batch.src[:k_l] + fraction * (batch.dst[:k_l] - batch.src[:k_l])
            ref_src, ref_views = torch.cat([ref_src, on_line]), torch.cat([ref_views, batch.views[:k_l]])
        with torch.no_grad(), active(backend, []):  # frozen renders: the targets, plus what the path terms need
            ref_img, ref_feat = backend.synthesize(ref_src, ref_views, return_features=True)
        img, feat = backend.synthesize(batch.src, batch.views, return_features=True)
        parts = step_losses(loss_fn, batch, img, feat, ref_img[:n], ref_feat[:n])
        if shape_path:
            with active(backend, [(adapter, fraction * config.ode.t_end)]):
                mid, mid_feat = backend.synthesize(batch.src[:k_l], batch.views[:k_l], return_features=True)
            if w_sched or w_mono:
                original = ref_img[n:n + k_l]
            if w_sched:
                parts["schedule"] = intensity_schedule(loss_fn.identity_net, original, img[:k_l], mid, fraction)
                parts["forget"] = parts["forget"] + w_sched * parts["schedule"]
            if w_mono:
                parts["monotone"] = monotone_forgetting(loss_fn.identity_net, original, img[:k_l], mid,
                                                        fraction, config.weights.monotone_margin)
                parts["forget"] = parts["forget"] + w_mono * parts["monotone"]
            if w_path:
                parts["path"] = loss_fn(mid, mid_feat, ref_img[-k_l:], ref_feat[-k_l:])["total"]
                parts["forget"] = parts["forget"] + w_path * parts["path"]
        return parts, k_l


@dataclass
class TrajectoryPool:
    """States visited by frozen sampling trajectories: x (N, C, H, W) float32 and their timesteps (N,)."""

    x: torch.Tensor
    timesteps: torch.Tensor

    def pick(self, n: int, gen: torch.Generator) -> torch.Tensor:
        return torch.randint(len(self.timesteps), (n,), generator=gen)


class EpsilonMatching:
    """Identity-conditioned diffusion (Arc2Face): epsilon-matching on frozen DDIM trajectory states."""

    def __init__(self, backend, w_u: torch.Tensor, w_target: torch.Tensor, config: ForgetConfig,
                 gen: torch.Generator):
        self.backend, self.w_u, self.w_target, self.config, self.gen = backend, w_u, w_target, config, gen
        self.radius = config.adjacency_radius * typical_radius(backend)
        with torch.no_grad(), active(backend, []):  # the frozen model's trajectories, once per run
            self.forget_pool = self._pool(list(w_u) + list(w_target), backend.cache_seeds)
            self.retain_pool = self._pool(list(backend.sample_latents(max(1, backend.retain_seeds), gen)), 1)

    def _pool(self, embs: list[torch.Tensor], seeds_each: int) -> TrajectoryPool:
        xs, ts = [], []
        for e in embs:
            seeds = torch.randint(0, 2 ** 24, (seeds_each,), generator=self.gen).tolist()
            s, t = self.backend.frozen_trajectories(e[None].expand(seeds_each, -1), seeds)
            xs.append(s.flatten(0, 1))
            ts.append(t.repeat_interleave(seeds_each))
        return TrajectoryPool(torch.cat(xs), torch.cat(ts).to(self.backend.device))

    def losses(self, adapter: ODEAdapter) -> tuple[dict[str, torch.Tensor], int]:
        be, gen, config = self.backend, self.gen, self.config
        batch = sample_step(be, self.w_u, self.w_target, config, gen, self.radius)
        n_f, n = batch.k_l + batch.k_a, len(batch.src)
        fp, rp = self.forget_pool, self.retain_pool
        fi, ri = fp.pick(n_f, gen), rp.pick(n - n_f, gen)
        x = torch.cat([fp.x[fi], rp.x[ri]])
        timestep = torch.cat([fp.timesteps[fi], rp.timesteps[ri]])
        src, dst = be.encode_condition(batch.src), be.encode_condition(batch.dst)
        if be.uses_guidance:  # guidance also evaluates the empty prompt: keep it unchanged too
            ui = rp.pick(1, gen)
            x, timestep = torch.cat([x, rp.x[ui]]), torch.cat([timestep, rp.timesteps[ui]])
            src = torch.cat([src, be.negative_condition()])
            dst = torch.cat([dst, be.negative_condition()])
        with torch.no_grad(), active(be, []):
            ref = be.predict_noise(x, timestep, dst)
        eps = be.predict_noise(x, timestep, src)
        per_row = (eps - ref).square().mean(dim=(1, 2, 3))
        out = combine_rows(per_row, batch.k_l, batch.k_a, config)
        k_l = batch.k_l
        if be.identity_weight > 0:
            abar = be.alpha_bar(timestep[:k_l])
            sa, sn = abar.sqrt()[:, None, None, None], (1 - abar).sqrt()[:, None, None, None]
            x0 = (x[:k_l] - sn * eps[:k_l]) / sa
            x0_ref = (x[:k_l] - sn * ref[:k_l]) / sa
            ident = be.identity_term(x0, x0_ref, abar)
            out["identity"] = ident
            out["forget"] = out["forget"] + be.identity_weight * ident
        return out, config.local_views


class DDPMTrajectory:
    """Unconditional DDPM: match the anchor trajectory's x0-estimate along the (moved) target trajectory."""

    def __init__(self, backend, w_u: torch.Tensor, w_target: torch.Tensor, config: ForgetConfig,
                 gen: torch.Generator):
        self.backend, self.config, self.gen = backend, config, gen
        radius = config.adjacency_radius * typical_radius(backend)
        k_a = max(0, config.adjacency_samples)
        u, tgt = w_u[:1], w_target[:1]
        src = [w_u]
        dst = [w_target if len(w_target) == len(w_u) else w_target[:1].expand(len(w_u), -1)]
        if k_a:  # fixed adjacency offsets for this run: delta = alpha (w_r - w_u) / |w_r - w_u|
            w_r = backend.sample_latents(k_a, gen)
            dirs = w_r - u
            delta = torch.rand(k_a, 1, generator=gen) * radius * dirs / dirs.norm(dim=1, keepdim=True).clamp(min=1e-8)
            src.append(u + delta)
            dst.append(tgt + delta)
        with torch.no_grad(), active(backend, []):  # the frozen model's trajectories, once per run
            self.target = backend.trajectory_pool(torch.cat(src))
            self.anchor = backend.trajectory_pool(torch.cat(dst))
            self.retain = backend.trajectory_pool(backend.sample_latents(max(1, backend.retain_seeds), gen))
        self.n_local = len(w_u)

    def losses(self, adapter: ODEAdapter) -> tuple[dict[str, torch.Tensor], int]:
        be, gen, config = self.backend, self.gen, self.config
        k_l, k_a, k_p = config.local_views, config.adjacency_samples, config.preservation_samples
        tgt, anc, ret = self.target, self.anchor, self.retain
        n_steps, n_pairs = tgt["x"].shape[:2]
        n_adj = n_pairs - self.n_local  # == adjacency_samples of this run
        if k_a and not n_adj:
            raise ValueError("adjacency rows requested but the trajectory cache has no adjacency pairs")
        # forget rows: local rows follow the target's own trajectories, adjacency rows the offset ones
        pair = torch.cat([torch.randint(self.n_local, (k_l,), generator=gen),
                          self.n_local + torch.randint(max(1, n_adj), (k_a,), generator=gen)])
        step = torch.randint(n_steps, (k_l + k_a,), generator=gen)
        lam = torch.rand(k_l + k_a, generator=gen).to(be.device)
        ts_f = tgt["t"][step]
        abar_f = be.alpha_bar(ts_f)
        sa = abar_f.sqrt()[:, None, None, None]
        x0_u, x0_target = tgt["x0"][step, pair], anc["x0"][step, pair]
        x_f = tgt["x"][step, pair] + lam[:, None, None, None] * sa * (x0_target - x0_u)
        eps_star = (x_f - sa * x0_target) / (1 - abar_f).sqrt()[:, None, None, None]
        r_traj = torch.randint(ret["x"].shape[1], (k_p,), generator=gen)
        r_step = torch.randint(n_steps, (k_p,), generator=gen)
        x_r, ts_r = ret["x"][r_step, r_traj], ret["t"][r_step]
        with torch.no_grad(), active(be, []):
            eps_r_ref = be.predict_noise(x_r, ts_r) if k_p else x_r[:0]
        x, timestep = torch.cat([x_f, x_r]), torch.cat([ts_f, ts_r])
        eps = be.predict_noise(x, timestep)
        abar = be.alpha_bar(timestep)
        weight = torch.minimum(torch.ones_like(abar), (1 - abar) / abar)  # min-SNR, gamma = 1
        per_row = weight * (eps - torch.cat([eps_star, eps_r_ref])).square().mean(dim=(1, 2, 3))
        out = combine_rows(per_row, k_l, k_a, config)
        if be.identity_weight > 0 and k_l:
            a = abar[:k_l].sqrt()[:, None, None, None]
            x0 = (x[:k_l] - (1 - abar[:k_l]).sqrt()[:, None, None, None] * eps[:k_l]) / a
            ident = be.identity_term(x0, x0_target[:k_l], abar[:k_l])
            out["identity"] = ident
            out["forget"] = out["forget"] + be.identity_weight * ident
        return out, k_l


OBJECTIVES: dict[str, type] = {"image": ImageObjective, "epsilon-matching": EpsilonMatching,
                               "ddpm-trajectory": DDPMTrajectory}


def make_objective(backend, w_u: torch.Tensor, w_target: torch.Tensor, config: ForgetConfig,
                   gen: torch.Generator) -> StepObjective:
    """The objective ``backend.objective`` names, built for one run."""
    name = backend.objective
    if name not in OBJECTIVES:
        raise ValueError(f"backend {type(backend).__name__} names objective {name!r}; known: {tuple(OBJECTIVES)}")
    return OBJECTIVES[name](backend, w_u, w_target, config, gen)
