"""Robust mode's identity gate (adapters/gate.py), made for one person and calibrated on the model's own prior.

The centre is the person's prototype: the mean of the loss network's embeddings of the base model's renders of
their latents (the upload and its view anchors, each in the gate's views). The threshold sits a margin above a
high quantile of a bank of random prior identities, and below the person's own latents. It cannot sit above the
whole prior: on the face world the loss network finds a random identity as like the person (up to 0.81 on
validation ids) as the inversion encoder's first guess of another photo of them (0.64-0.93), and every guess
left outside the gate is an attacker's way back. So about 1 % of random people are held too, and drawn as the
substitute at full intensity; docs/attacks.md measures that cost on each target's look-alikes. Only the loss
network reads identities here; the judge only scores.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..adapters.gate import IdentityGate


@dataclass
class RobustConfig:
    """How the gate is made. The values and the measurements behind them: docs/attacks.md, "Robust mode"."""

    views: int = 2  # canonical views read per latent (each costs one base render per latent drawn)
    bank: int = 512  # random prior identities the threshold is calibrated on
    quantile: float = 0.99  # of the bank's similarities to the person: the share of random people left unheld
    margin: float = 0.05  # cosine above that quantile
    seed: int = 20_261_206  # the bank's latents

    def __post_init__(self):
        if self.views < 1 or self.bank < 1:
            raise ValueError(f"robust mode needs views >= 1 and bank >= 1, got {self.views}, {self.bank}")
        if not 0 <= self.margin < 1:
            raise ValueError(f"robust margin must be in [0, 1), got {self.margin}")
        if not 0 < self.quantile <= 1:
            raise ValueError(f"robust quantile must be in (0, 1], got {self.quantile}")


def make_gate(backend, w_u: torch.Tensor, config: RobustConfig) -> tuple[IdentityGate, dict]:
    """The gate for the person whose latents are ``w_u`` (the upload first), and what calibrated it."""
    if not hasattr(backend, "latent_identity"):
        raise ValueError(f"robust mode reads identities of latents, which the {type(backend).__name__} backend "
                         "cannot do (it has no latent_identity)")
    t0 = time.time()
    own = backend.latent_identity(w_u, config.views)  # (m, views, E)
    centre = torch.nn.functional.normalize(own.mean((0, 1))[None], dim=1)
    probe = IdentityGate(centre, w_u[:1], 0.0, config.views)
    bank = backend.sample_latents(config.bank, torch.Generator().manual_seed(config.seed))
    bank_sims = torch.cat([probe.similarity(backend.latent_identity(bank[i:i + 256], config.views))
                           for i in range(0, len(bank), 256)])
    own_min = probe.similarity(own).min().item()
    bank_q = torch.quantile(bank_sims, config.quantile).item()
    threshold = bank_q + config.margin
    squeezed = threshold > own_min - config.margin
    if squeezed:  # random people are nearly as like the person as their own latents: split the difference
        threshold = (bank_q + own_min) / 2
    info = {"threshold": threshold, "bank_quantile": bank_q, "bank_max": bank_sims.max().item(),
            "own_min": own_min, "bank": config.bank, "quantile": config.quantile, "views": config.views,
            "held_in_bank": (bank_sims >= threshold).float().mean().item(), "squeezed": squeezed,
            "seconds": time.time() - t0}
    return IdentityGate(centre, w_u[:1], threshold, config.views), info
