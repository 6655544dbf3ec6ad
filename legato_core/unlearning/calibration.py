"""Calibrating a knob after training: equal slider steps take equal steps away from the person.

On a fine grid of the knob, the person's renders are measured two ways, neither by the judge:

- identity: the loss network's (``backend.loss_identity_model()``) cosine to the person's original renders down
  to ``identity_floor`` (unrelated), raised to ``identity_power``; its monotone envelope (running minimum: a curve
  that comes back never moves the dial backwards), as the fraction of its total fall;
- pixels: the change over the face's centre between neighbouring grid points, accumulated, as the fraction of
  the whole path.

A knob cannot be even in both: near the person a cosine similarity changes with the square of a small change
(the face moves, the identity hardly), so a dial even in identity takes large pixel steps at its start. The dial
follows a pace between the two: a blend u = (1 - b) * identity + b * pixels, or the faster of the two at each
point (max(identity rate, pixel rate / c)), whichever makes the larger of the identity unevenness and the pixel
unevenness / ``pixel_tolerance`` smallest (identity is what the dial means; pixel steps may be a little less
even); slider position u maps to the first knob value where the pace reaches u.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..adapters import ODEAdapter
from ..adapters.dial import DialMap
from ..metrics import DIAL_POINTS, AdapterKnob, Knob, central_change


@dataclass
class CalibrationConfig:
    grid: int = 65  # knob values 0 .. s_max, evenly: where the person is measured
    knots: int = 33  # the map's knots: u = 0, 1/32, ..., 1
    views: int = 8  # seeded random views (not the canonical evaluation views)
    seed: int = 4242
    blends: int = 21  # pixel weights b tried: 0, 0.05, ..., 1
    pixel_tolerance: float = 4 / 3
    # envelope paces tried beside the blends (pixel rate scales c from 1/4 to 4, geometric); 0: blends only
    envelopes: int = 17
    # below this cosine the loss network calls the face unrelated to the person: further falls are not steps away
    # from the person a viewer sees (the judge hardly moves there while arcface goes on falling), so the identity
    # fraction is measured down to it, and the pixels carry the rest of the dial
    identity_floor: float | None = 0.0
    # identity is measured as 1 - cos**power (sign kept below 0): the loss network holds on to the person longer
    # than a viewer's network does, and a power above 1 spends more of the slider there (docs/engine.md)
    identity_power: float = 1.75
    # end the dial where the loss network's cosine first reaches identity_floor (if it ever does), not at the
    # knob's end: past it the judge's curve has nothing left to fall and comes back for some people
    # (docs/dial_paths, docs/ideal_dials: monotone for 40/40 validation people against 34/40); the rest of the
    # knob stays in raw t
    end_at_floor: bool = True


@dataclass
class KnobProfile:
    """The person along a knob: identity and pixel fractions (each 0 -> 1, never decreasing) at ``values``."""

    values: list[float]
    similarity: list[float]  # the loss network's mean cosine to the originals (raw, may rise)
    identity: np.ndarray
    pixels: np.ndarray


@torch.no_grad()
def profile_knob(backend, knob: Knob, person: torch.Tensor, s_max: float,
                 config: CalibrationConfig | None = None) -> KnobProfile:
    """Measure the person's renders at ``config.grid`` knob values in [0, s_max]."""
    config = config or CalibrationConfig()
    net = backend.loss_identity_model()
    views = backend.sample_views(config.views, torch.Generator().manual_seed(config.seed))
    lat = person[:1].expand(len(views), -1)
    with knob.at(None) as model:
        original = model.render(lat, views)
    e0 = net.embed(original)
    values = [s_max * i / (config.grid - 1) for i in range(config.grid)]
    sims, steps, prev = [], [], original
    for s in values:
        with knob.at(s) as model:
            img = model.render(lat, views)
        sims.append(float((net.embed(img) * e0).sum(1).mean()))
        steps.append(float(central_change(prev, img).mean()))
        prev = img
    return KnobProfile(values, sims, identity_fraction(sims, config), _fraction(np.cumsum(steps)))


def identity_fraction(similarity: list[float], config: CalibrationConfig) -> np.ndarray:
    """How far along its fall from the person the loss network's cosine is at each grid point (0 -> 1, never
    decreasing): floored at ``identity_floor``, raised to ``identity_power`` (sign kept), running minimum."""
    s = np.asarray(similarity, dtype=float)
    if config.identity_floor is not None:
        s = np.maximum(s, config.identity_floor)
    envelope = np.minimum.accumulate(np.sign(s) * np.abs(s) ** config.identity_power)
    return _fraction(envelope[0] - envelope)


def _fraction(rising: np.ndarray) -> np.ndarray:
    total = rising[-1] - rising[0]
    if total <= 1e-9:
        return np.linspace(0, 1, len(rising))  # no change at all: the raw knob
    return (rising - rising[0]) / total


def invert(values: list[float], fraction: np.ndarray, knots: int) -> list[float]:
    """Knob values at u = 0, 1/(knots-1), ..., 1: the first value where ``fraction`` (never decreasing, 0 -> 1)
    reaches u, linear between grid points."""
    out = [float(values[0])]
    j = 0
    for i in range(1, knots - 1):
        u = i / (knots - 1)
        while j < len(values) - 2 and fraction[j + 1] < u:
            j += 1
        f0, f1 = fraction[j], fraction[j + 1]
        out.append(values[j] + (values[j + 1] - values[j]) * float(np.clip((u - f0) / max(f1 - f0, 1e-12), 0, 1)))
    out.append(float(values[-1]))
    return list(np.maximum.accumulate(out))  # float rounding never makes the map step back


def _unevenness(values: list[float], fraction: np.ndarray, knots: list[float]) -> float:
    """Largest step / mean step of ``fraction`` at DIAL_POINTS evenly spaced slider positions."""
    us = np.linspace(0, 1, DIAL_POINTS)
    at = np.interp(np.interp(us, np.linspace(0, 1, len(knots)), knots), values, fraction)
    steps = np.diff(at)
    return float(steps.max() / max(steps.mean(), 1e-12))


def candidate_paces(profile: KnobProfile, config: CalibrationConfig) -> list[tuple[str, np.ndarray]]:
    """The slider paces tried, each a fraction (0 -> 1, never decreasing) over the profile's grid: blends
    (1 - b) identity + b pixels, and, with ``config.envelopes``, the pace of whichever is faster at each point,
    max(identity rate, pixel rate / c): a slider that takes no step larger than allowed in either measure."""
    paces = [(f"pixel weight {b:.2f}", (1 - b) * profile.identity + b * profile.pixels)
             for b in np.linspace(0, 1, config.blends)]
    d_id, d_px = np.diff(profile.identity), np.diff(profile.pixels)
    for c in np.geomspace(0.25, 4, config.envelopes) if config.envelopes else []:
        pace = np.concatenate([[0.0], np.cumsum(np.maximum(d_id, d_px / c))])
        paces.append((f"faster of identity and pixels / {c:.2f}", _fraction(pace)))
    return paces


def knob_knots(profile: KnobProfile, config: CalibrationConfig | None = None) -> tuple[list[float], str]:
    """(knob values at the map's knots, which pace was chosen) for a measured profile: of the candidate paces,
    the one whose larger of identity unevenness and pixel unevenness / ``pixel_tolerance`` is smallest."""
    config = config or CalibrationConfig()
    if config.end_at_floor and config.identity_floor is not None \
            and min(profile.similarity, default=1.0) <= config.identity_floor:
        profile = up_to_floor(profile)  # only where the loss network does call the face unrelated
    best = None
    for name, pace in candidate_paces(profile, config):
        knots = invert(profile.values, pace, config.knots)
        worst = max(_unevenness(profile.values, profile.identity, knots),
                    _unevenness(profile.values, profile.pixels, knots) / config.pixel_tolerance)
        if best is None or worst < best[0] - 1e-9:
            best = (worst, knots, name)
    return best[1], best[2]


def up_to_floor(profile: KnobProfile) -> KnobProfile:
    """The profile cut at the first grid point where its identity fraction reaches 1, the pixel fraction
    measured again over what is left (at least two points)."""
    end = max(1, int(np.argmax(profile.identity >= 1 - 1e-9)))
    return KnobProfile(profile.values[:end + 1], profile.similarity[:end + 1], profile.identity[:end + 1],
                       _fraction(profile.pixels[:end + 1]))


def calibrate_dial(backend, adapter: ODEAdapter, person: torch.Tensor,
                   config: CalibrationConfig | None = None) -> DialMap:
    """Measure ``adapter`` on ``person`` (its trained latent) and return its map u -> t (attach with
    ``adapter.set_dial``)."""
    profile = profile_knob(backend, AdapterKnob(backend, [adapter]), person, adapter.config.t_max, config)
    knots, pace = knob_knots(profile, config)
    return DialMap(tuple(knots), f"loss network and pixels ({pace})", adapter.digest())


__all__ = ["CalibrationConfig", "KnobProfile", "calibrate_dial", "identity_fraction", "invert", "knob_knots",
           "profile_knob", "up_to_floor"]
