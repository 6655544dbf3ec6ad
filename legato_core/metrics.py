"""Unlearning metrics, scored only by a judge network (never by the network that trained adapters).

The judge is the embedded ``judge`` model by default; the diffusers backends pass an insightface judge
(``judge=InsightFaceIdentity(pack)``), since the embedded one only knows 64 x 64 face-world faces.

- ID_target(t): mean judge cosine between base and adapted renders of the target latent over fixed views.
- ID_others(t): the same for *other* photos of the person, inverted but not trained on.
- retention: base-vs-adapted judge cosine of random identities (mean and 5th percentile).
- fd_judge: Frechet distance between judge embeddings of base and adapted samples (same latents and views).
  It is *not* FID: no Inception network exists offline, and the judge is a face-identity network.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

import numpy as np
import torch

from .adapters import ODEAdapter, active
from .identity.model import load_identity_model


class Knob(Protocol):
    """A method's continuous control. ``at(s)`` yields the model to render with (s=None: the base)."""

    def at(self, s: float | None) -> AbstractContextManager: ...


class Judge(Protocol):
    """What metrics need from an identity network: ``embed(images)`` -> unit vectors, and a same-person cosine.

    A judge whose embeddings are not compared by cosine (dlib's: Euclidean distance) also defines
    ``pair_similarity(a, b)`` and states its ``threshold`` on that scale (see :func:`judge_similarity`)."""

    threshold: float

    def embed(self, images: torch.Tensor) -> torch.Tensor: ...


def judge_similarity(judge: Judge, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise similarity of paired embeddings on the judge's own scale: its ``pair_similarity`` when it has one,
    else the dot product (cosine of unit vectors)."""
    pair = getattr(judge, "pair_similarity", None)
    return pair(a, b) if pair is not None else (a * b).sum(1)


class AdapterKnob:
    """LEGATO's knob: the integration time t of ODE adapters (s=None: none active, the base model)."""

    def __init__(self, backend, adapters: Sequence):
        self.backend, self.adapters = backend, list(adapters)

    @contextmanager
    def at(self, s: float | None):
        with active(self.backend, [] if s is None else [(a, s) for a in self.adapters]):
            yield self.backend

    def close(self) -> None:
        """Adapters are data, not hooks: nothing to undo on the backend; drop the references."""
        self.adapters = []


@torch.no_grad()
def judge_embeddings(backend, judge: Judge, latents: torch.Tensor, views: torch.Tensor, batch: int = 128):
    out = []
    for i in range(0, len(latents), batch):
        out.append(judge.embed(backend.render(latents[i:i + batch], views[i:i + batch])))
    return torch.cat(out)


def _pairs(latents: torch.Tensor, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every latent in every view."""
    n, k = len(latents), len(views)
    return latents.repeat_interleave(k, 0), views.repeat(n, 1)


@torch.no_grad()
def identity_similarity(knob: Knob, latents: torch.Tensor, views: torch.Tensor, s: float,
                        judge: Judge | None = None, base: torch.Tensor | None = None) -> torch.Tensor:
    """Per-latent mean judge cosine between base and knob-``s`` renders over ``views`` -> (N,)."""
    judge = judge if judge is not None else load_identity_model("judge")
    lat, vw = _pairs(latents, views)
    if base is None:
        with knob.at(None) as model:
            base = judge_embeddings(model, judge, lat, vw)
    with knob.at(s) as model:
        adapted = judge_embeddings(model, judge, lat, vw)
    return judge_similarity(judge, base, adapted).view(len(latents), len(views)).mean(1)


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().numpy(), b.double().numpy()
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # tr sqrt(s1 s2) = tr sqrt(r s2 r) with r = s1^(1/2): a symmetric PSD matrix, so eigvalsh is exact and stable
    ev, vec = np.linalg.eigh(s1)
    r = (vec * np.sqrt(ev.clip(min=0))) @ vec.T
    tr_covmean = np.sqrt(np.linalg.eigvalsh(r @ s2 @ r).clip(min=0)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


@torch.no_grad()
def unlearning_report(backend, knob: Knob, target_latent: torch.Tensor, s: float,
                      other_latents: torch.Tensor | None = None, other_views: torch.Tensor | None = None,
                      n_views: int = 8, n_retain: int = 200, n_fd: int = 500, curve_points: int = 9,
                      s_end: float | None = None, trainable_parameters: int | None = None, seed: int = 1234,
                      judge: Judge | None = None, pixel_others: int = 32) -> dict:
    """All engine metrics at knob value ``s`` plus the forgetting curve ID_target on [0, s_end].

    ``judge``: the scoring network (default: the embedded ``judge``); e.g. an ``InsightFaceIdentity`` for the
    diffusers backends.
    """
    judge = judge if judge is not None else load_identity_model("judge")
    views = backend.canonical_views(n_views)
    target_latent = target_latent[:1]
    lat, vw = _pairs(target_latent, views)
    with knob.at(None) as model:
        base_target = judge_embeddings(model, judge, lat, vw)
    s_end = s if s_end is None else s_end
    curve = []
    for sc in np.linspace(0, s_end, curve_points):
        sim = identity_similarity(knob, target_latent, views, float(sc), judge, base_target)
        curve.append([round(float(sc), 4), float(sim.mean())])
    id_target = float(identity_similarity(knob, target_latent, views, s, judge, base_target).mean())
    jumps = [abs(b[1] - a[1]) for a, b in itertools.pairwise(curve)]
    report = {"t": s, "threshold": judge.threshold, "id_target": id_target, "curve": curve,
              "curve_monotone": all(b[1] <= a[1] + 1e-6 for a, b in itertools.pairwise(curve)),
              "curve_max_jump": max(jumps), "curve_spearman": _spearman([c[0] for c in curve], [c[1] for c in curve])}
    if other_latents is not None and len(other_latents):
        ov = other_views if other_views is not None else backend.canonical_views(len(other_latents))
        with knob.at(None) as model:
            base_o = judge_embeddings(model, judge, other_latents, ov)
        with knob.at(s) as model:
            ad_o = judge_embeddings(model, judge, other_latents, ov)
        sims = judge_similarity(judge, base_o, ad_o)
        report["id_others"] = float(sims.mean())
        report["id_others_each"] = sims.tolist()
    gen = torch.Generator().manual_seed(seed)
    n = max(n_retain, n_fd)
    w_r = backend.sample_latents(n, gen)
    v_r = backend.sample_views(n, gen)
    with knob.at(None) as model:
        base_r = judge_embeddings(model, judge, w_r, v_r)
    with knob.at(s) as model:
        ad_r = judge_embeddings(model, judge, w_r, v_r)
    ret = judge_similarity(judge, base_r[:n_retain], ad_r[:n_retain])
    report["retention_mean"] = float(ret.mean())
    report["retention_p5"] = float(torch.quantile(ret, 0.05))
    report["fd_judge"] = frechet_distance(base_r[:n_fd], ad_r[:n_fd])
    if pixel_others:
        report.update(pixel_forgetting(backend, knob, target_latent, s, views, pixel_others, seed))
    if trainable_parameters is None:
        trainable_parameters = sum(a.trainable_parameters() for a in getattr(knob, "adapters", []))
    report["trainable_parameters"] = trainable_parameters
    report["trainable_fraction"] = trainable_parameters / backend.parameter_count()
    return report


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images in [0, 1]."""
    mse = (a - b).square().mean(dim=(1, 2, 3)).clamp(min=1e-10)
    return 10 * torch.log10(1 / mse)


def central_crop(images: torch.Tensor, fraction: float = 0.5) -> torch.Tensor:
    """The central ``fraction`` of each side, at least one pixel (32x32 of a 64-px face: eyes, nose, mouth)."""
    h, w = images.shape[-2:]
    ch, cw = max(1, round(h * fraction)), max(1, round(w * fraction))
    top, left = (h - ch) // 2, (w - cw) // 2
    return images[..., top:top + ch, left:left + cw]


def central_change(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """Mean absolute change per image (B, C, H, W) -> (B,) over the central half of each side: on a 64-px
    face-world face, eyes, brows, nose and mouth, where hair and outline hardly reach."""
    return central_crop(after - before).abs().mean(dim=(1, 2, 3))


@torch.no_grad()
def pixel_forgetting(backend, knob: Knob, target_latent: torch.Tensor, s: float, views: torch.Tensor,
                     n_others: int = 32, seed: int = 1234) -> dict[str, float | list[float]]:
    """Forgetting in pixels, no network involved: over the central half of the image (the face), the target's
    mean absolute change between the base and knob ``s`` in ``views`` against that of ``n_others`` random other
    identities (each in a random view), and how close the others stay (PSNR of knob ``s`` against the base: mean,
    least and each person's).

    A judge can be fooled or blind to a factor; pixels show whether forgetting is visible and nothing else moves.
    """
    gen = torch.Generator().manual_seed(seed + 1)
    others, other_views = backend.sample_latents(n_others, gen), backend.sample_views(n_others, gen)
    lat = torch.cat([target_latent[:1].expand(len(views), -1), others])
    vw = torch.cat([views, other_views])
    with knob.at(None) as model:
        before = model.render(lat, vw)
    with knob.at(s) as model:
        after = model.render(lat, vw)
    change = central_change(before, after)
    k = len(views)
    others_db = psnr(after[k:], before[k:])
    target_change, others_change = float(change[:k].mean()), float(change[k:].mean())
    return {"pixel_change_target": target_change, "pixel_change_others": others_change,
            "pixel_change_ratio": target_change / max(others_change, 1e-8),
            "others_psnr_db_mean": float(others_db.mean()), "others_psnr_db_min": float(others_db.min()),
            "others_psnr_db_each": [round(float(x), 2) for x in others_db]}  # a mean can hide a few who move


def _base_embeddings(backend, judge, latents: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
    lat = latents.repeat_interleave(len(views), 0)  # same pairing as metrics.identity_similarity
    vw = views.repeat(len(latents), 1)
    with torch.no_grad():
        return judge.embed(backend.render(lat, vw))


def forgetting_curve(backend, adapter: ODEAdapter, latent: torch.Tensor | None, judge, retained: torch.Tensor,
                     n_views: int = 6, points: int = 9,
                     should_stop: Callable[[], bool] | None = None) -> dict:
    """ID_target and retention at ``points`` evenly spaced slider positions u in [0, 1], each rendered at the t the
    adapter's dial maps it to (``ODEAdapter.t_at``; no dial: t = u t_max), scored by the judge only.

    Returns ``u`` and ``t`` with the scores, and ``dial``: what measured the adapter's dial map (None: no map)."""
    us = [k / (points - 1) for k in range(points)]
    ts = [round(adapter.t_at(u), 6) for u in us]
    knob = AdapterKnob(backend, [adapter])
    views = backend.canonical_views(n_views)
    frontal = backend.canonical_views(1)
    out = {"u": us, "t": ts, "id_target": [], "retention": [], "retention_min": [], "threshold": float(judge.threshold),
           "views": n_views, "retained": len(retained),
           "dial": adapter.dial.measured_by if adapter.dial is not None else None}
    base_t = _base_embeddings(backend, judge, latent, views) if latent is not None else None
    base_r = _base_embeddings(backend, judge, retained, frontal)
    for t in ts:
        if should_stop is not None and should_stop():
            raise InterruptedError("cancelled while computing the forgetting curve")
        if latent is not None:
            out["id_target"].append(float(identity_similarity(knob, latent, views, t, judge, base_t).mean()))
        ret = identity_similarity(knob, retained, frontal, t, judge, base_r)
        out["retention"].append(float(ret.mean()))
        out["retention_min"].append(float(ret.min()))
    if latent is None:
        out["id_target"] = None
    return out


# -- one forgotten identity -------------------------------------------------------------------------------------


def _spearman(x: Sequence[float], y: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    if len(set(x)) < 2 or len(set(y)) < 2:  # a flat curve: no control, and no correlation to compute
        return 0.0
    r = spearmanr(x, y).statistic
    return float(r) if np.isfinite(r) else 0.0


# -- the dial: what a user sees along the knob -------------------------------------------------------------------

DIAL_POINTS = 17  # knob positions u = 0, 1/16, ..., 1
MANIFOLD_POSITIONS = (0.25, 0.5, 0.75, 0.875, 1.0)


def sharpness(images: torch.Tensor) -> torch.Tensor:
    """Mean squared image gradient over the central half of each image (B, C, H, W) -> (B,): the face's edges.
    A ghost (two faces blended, a smear) has fewer and weaker edges than either face."""
    c = central_crop(images)
    gx, gy = c[..., :, 1:] - c[..., :, :-1], c[..., 1:, :] - c[..., :-1, :]
    return gx.square().mean(dim=(1, 2, 3)) + gy.square().mean(dim=(1, 2, 3))


def evenness(curve: Sequence[float]) -> float:
    """Largest drop between neighbouring points / (total drop / steps): 1.0 when every step drops the same;
    inf when the curve does not fall at all (no dial)."""
    drops = [a - b for a, b in itertools.pairwise(curve)]
    total = curve[0] - curve[-1]
    return max(drops) / (total / len(drops)) if total > 1e-8 else float("inf")


def step_evenness(steps: Sequence[float]) -> float:
    """Largest step / mean step (for sizes that are never negative, such as pixel change between neighbours)."""
    mean = sum(steps) / len(steps)
    return max(steps) / mean if mean > 1e-12 else float("inf")


def is_monotone(curve: Sequence[float], tolerance: float = 0.01) -> bool:
    """True when the curve never rises by more than ``tolerance`` between neighbours."""
    return all(b <= a + tolerance for a, b in itertools.pairwise(curve))


@torch.no_grad()
def manifold_psnr(backend, images: torch.Tensor) -> torch.Tensor:
    """Invert ``images`` with the base model (the backend's own inversion) and re-render: per-image PSNR in dB.
    A face the generator can draw comes back close (the model's own faces: about 41 dB on the embedded default);
    a ghost of two faces does not."""
    with active(backend, []), torch.enable_grad():
        w, v = backend.invert(images)
    with active(backend, []):
        return psnr(backend.render(w, v), images)


@torch.no_grad()
def dial_report(backend, knob: Knob, person: torch.Tensor, target: torch.Tensor, position: Callable[[float], float],
                views: torch.Tensor, judge: Judge, points: int = DIAL_POINTS,
                manifold_positions: Sequence[float] = MANIFOLD_POSITIONS) -> dict:
    """The knob as a user moves it (``position(u)``: the knob value at slider position u in [0, 1]): the judge's
    ``judge_curve`` at ``points`` positions with its ``evenness`` and ``monotone`` (never up by > 0.01); central
    ``pixel_steps`` and ``pixel_evenness``; ``sharpness`` at each position over the smaller of the person's at u = 0
    and the frozen render of ``target``; ``manifold_db`` (re-rendered through the base model at
    ``manifold_positions``); ``reach_db`` (u = 1 against the frozen render of ``target``)."""
    us = [i / (points - 1) for i in range(points)]
    n = len(views)
    lat = person[:1].expand(n, -1)
    with knob.at(None) as model:
        original = model.render(lat, views)
        target_img = model.render(target[:1].expand(n, -1), views)
    renders = []
    for u in us:
        with knob.at(position(u)) as model:
            renders.append(model.render(lat, views))
    stack = torch.stack(renders)  # (P, V, 3, H, W)
    e0 = judge.embed(original)
    curve = [float(judge_similarity(judge, e0, judge.embed(r)).mean()) for r in renders]
    steps = [float(central_change(a, b).mean()) for a, b in itertools.pairwise(renders)]
    ref = torch.minimum(sharpness(original), sharpness(target_img))
    sharp = [float((sharpness(r) / ref).mean()) for r in renders]
    at = {round(u, 4): i for i, u in enumerate(us)}
    manifold = {}
    for u in manifold_positions:
        i = at.get(round(u, 4))
        img = stack[i] if i is not None else None
        if img is None:
            with knob.at(position(u)) as model:
                img = model.render(lat, views)
        manifold[str(u)] = float(manifold_psnr(backend, img).mean())
    return {"positions": us, "knob": [float(position(u)) for u in us], "judge_curve": curve,
            "evenness": evenness(curve), "monotone": is_monotone(curve), "pixel_steps": steps,
            "pixel_evenness": step_evenness(steps), "sharpness": sharp, "sharpness_min": min(sharp),
            "manifold_db": manifold,
            "manifold_db_original": float(manifold_psnr(backend, original).mean()) if manifold else None,
            "reach_db": float(psnr(renders[-1], target_img).mean())}
