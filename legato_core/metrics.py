"""Unlearning metrics, scored only by the ``judge`` network (never by the network that trained adapters).

- ID_target(t): mean judge cosine between base and adapted renders of the target latent over fixed views.
- ID_others(t): the same for *other* photos of the person, inverted but not trained on.
- retention: base-vs-adapted judge cosine of random identities (mean and 5th percentile).
- fd_judge: Frechet distance between judge embeddings of base and adapted samples (same latents and views).
  It is *not* FID: no Inception network exists offline, and the judge is a face-identity network.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from scipy import linalg

from .identity.model import IdentityModel, load_identity_model


@contextmanager
def intensity(adapters: Sequence, t: float | None):
    """Set every adapter to ``t`` (None: disable them, i.e. the base model) for the duration."""
    old = [(a.t, a.enabled) for a in adapters]
    try:
        for a in adapters:
            if t is None:
                a.enabled = False
            else:
                a.enabled = True
                a.set_t(t)
        yield
    finally:
        for a, (ot, oe) in zip(adapters, old, strict=True):
            a.t, a.enabled = ot, oe


@torch.no_grad()
def _judge_embed(backend, judge: IdentityModel, latents: torch.Tensor, views: torch.Tensor, batch: int = 128):
    out = []
    for i in range(0, len(latents), batch):
        out.append(judge.embed(backend.render(latents[i:i + batch], views[i:i + batch])))
    return torch.cat(out)


def _pairs(latents: torch.Tensor, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every latent in every view."""
    n, k = len(latents), len(views)
    return latents.repeat_interleave(k, 0), views.repeat(n, 1)


@torch.no_grad()
def identity_similarity(backend, adapters: Sequence, latents: torch.Tensor, views: torch.Tensor, t: float,
                        judge: IdentityModel | None = None, base: torch.Tensor | None = None) -> torch.Tensor:
    """Per-latent mean judge cosine between base and adapted renders over ``views`` -> (N,)."""
    judge = judge or load_identity_model("judge")
    lat, vw = _pairs(latents, views)
    if base is None:
        with intensity(adapters, None):
            base = _judge_embed(backend, judge, lat, vw)
    with intensity(adapters, t):
        adapted = _judge_embed(backend, judge, lat, vw)
    return (base * adapted).sum(1).view(len(latents), len(views)).mean(1)


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().numpy(), b.double().numpy()
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(s1 @ s2, disp=False)
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


@torch.no_grad()
def unlearning_report(backend, adapters: Sequence, target_latent: torch.Tensor, t: float,
                      other_latents: torch.Tensor | None = None, other_views: torch.Tensor | None = None,
                      n_views: int = 8, n_retain: int = 200, n_fd: int = 500, curve_points: int = 9,
                      t_end: float | None = None, seed: int = 1234,
                      progress: Callable[[str], None] | None = None) -> dict:
    """All engine metrics at intensity ``t`` plus the forgetting curve ID_target(t) on [0, t_end]."""
    judge = load_identity_model("judge")
    say = progress or (lambda _m: None)
    views = backend.canonical_views(n_views)
    target_latent = target_latent[:1]
    lat, vw = _pairs(target_latent, views)
    with intensity(adapters, None):
        base_target = _judge_embed(backend, judge, lat, vw)
    say("forgetting curve")
    t_end = t if t_end is None else t_end
    curve = []
    for tc in np.linspace(0, t_end, curve_points):
        s = identity_similarity(backend, adapters, target_latent, views, float(tc), judge, base_target)
        curve.append([round(float(tc), 4), float(s.mean())])
    id_target = float(identity_similarity(backend, adapters, target_latent, views, t, judge, base_target).mean())
    report = {"t": t, "threshold": judge.threshold, "id_target": id_target, "curve": curve,
              "curve_monotone": all(b[1] <= a[1] + 1e-6 for a, b in zip(curve, curve[1:], strict=False)),
              "curve_max_jump": max(abs(b[1] - a[1]) for a, b in zip(curve, curve[1:], strict=False))}
    if other_latents is not None and len(other_latents):
        say("other photos")
        ov = other_views if other_views is not None else backend.canonical_views(len(other_latents))
        base_o = _judge_embed(backend, judge, other_latents, ov)
        with intensity(adapters, t):
            ad_o = _judge_embed(backend, judge, other_latents, ov)
        sims = (base_o * ad_o).sum(1)
        report["id_others"] = float(sims.mean())
        report["id_others_each"] = sims.tolist()
    say("retention")
    gen = torch.Generator().manual_seed(seed)
    n = max(n_retain, n_fd)
    w_r = backend.sample_latents(n, gen)
    v_r = backend.sample_views(n, gen)
    with intensity(adapters, None):
        base_r = _judge_embed(backend, judge, w_r, v_r)
    with intensity(adapters, t):
        ad_r = _judge_embed(backend, judge, w_r, v_r)
    ret = (base_r[:n_retain] * ad_r[:n_retain]).sum(1)
    report["retention_mean"] = float(ret.mean())
    report["retention_p5"] = float(torch.quantile(ret, 0.05))
    report["fd_judge"] = frechet_distance(base_r[:n_fd], ad_r[:n_fd])
    trainable = sum(a.trainable_parameters() for a in adapters)
    report["trainable_parameters"] = trainable
    report["trainable_fraction"] = trainable / backend.parameter_count()
    return report
