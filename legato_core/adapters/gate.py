"""Robust mode: an identity gate, so that every latent the model draws as the person is forgotten, not one ball.

A latent adapter moves a neighbourhood of the person's latent; anyone who inverts the person's photo lands
somewhere else that still draws the person (docs/attacks.md: 0/10 held). Latents far from the person's can draw
them (at 1.5-2 typical radii, often still the same person), so no latent ball can contain the person. The gate
asks the question the attacker answers instead: does the *base* model draw this latent as the person? It renders
each latent in a few fixed views, embeds the renders with the loss network (never the judge) and compares them
with the person's embeddings. A latent at or above the threshold is *held*: it leaves the field's own path and
follows the person's trained path shifted onto it, arriving at the person's end point at T:

    x(t) = x0 + (phi_t(w) - w) + (t / T) (w - x0)        (w: the person's latent, phi_t: the field's flow)

so the person's own dial is the field's bit for bit, and at full intensity every held latent draws the
person's substitute. The gate is a hard step read from where the latent starts: an attacker optimising inside it
gets no gradient on the latent, and one outside it is drawn by the base model, which the threshold keeps below the
loss network's notion of the person. The threshold is calibrated on the model's own prior (engine.py): above
the most similar of a bank of random identities, so nobody else is held.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import torch

# (latents (B, D), views) -> unit embeddings (B, views, E) of the base model's renders of each latent
IdentityReader = Callable[[torch.Tensor, int], torch.Tensor]


@dataclass(frozen=True)
class IdentityGate:
    """The person's loss-network embeddings (m, E, unit rows), their latent (1, D) where the trained path starts,
    the cosine at or above which a latent is held, and how many canonical views are read per latent."""

    centres: torch.Tensor
    anchor: torch.Tensor
    threshold: float
    views: int = 2

    def __post_init__(self):
        if self.centres.dim() != 2 or len(self.centres) == 0:
            raise ValueError(f"a gate needs centres of shape (m, E) with m >= 1, got {tuple(self.centres.shape)}")
        if self.anchor.dim() != 2 or len(self.anchor) != 1:
            raise ValueError(f"a gate needs one anchor latent (1, D), got {tuple(self.anchor.shape)}")
        if not -1 <= self.threshold <= 1:
            raise ValueError(f"a gate's threshold is a cosine in [-1, 1], got {self.threshold}")
        if self.views < 1:
            raise ValueError(f"a gate reads at least one view, got {self.views}")
        centres = self.centres.detach().float().contiguous()
        if not torch.allclose(centres.norm(dim=1), torch.ones(len(centres)), atol=1e-3):
            raise ValueError("a gate's centres are unit embeddings (normalise them first)")
        object.__setattr__(self, "centres", centres)
        object.__setattr__(self, "anchor", self.anchor.detach().float().contiguous())

    def similarity(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, views, E) unit embeddings of each latent's renders -> (B,): the mean over views of the cosine to
        the nearest centre (the best centre per latent)."""
        cos = torch.einsum("bve,me->bmv", embeddings.float(), self.centres.to(embeddings.device))
        return cos.mean(2).max(1).values

    def holds(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B,) bool: which latents the base model draws as the person."""
        return self.similarity(embeddings) >= self.threshold

    def to_json(self) -> str:
        return json.dumps({"threshold": self.threshold, "views": self.views})

    @classmethod
    def from_saved(cls, centres: torch.Tensor, anchor: torch.Tensor, text: str) -> IdentityGate:
        d = json.loads(text)
        return cls(centres, anchor, float(d["threshold"]), int(d["views"]))


def gated_path(x: torch.Tensor, anchor_at_t: torch.Tensor, anchor: torch.Tensor, t: float, t_end: float
               ) -> torch.Tensor:
    """Held latents ``x`` (B, D) at intensity ``t``: the person's displacement ``anchor_at_t - anchor`` plus a
    straight pull toward the person's start, complete at ``t_end`` (from there on every row is ``anchor_at_t``)."""
    # = x + (anchor_at_t - anchor) + s (anchor - x), written so that the person's own row is anchor_at_t exactly
    return anchor_at_t + (1.0 - min(t / t_end, 1.0)) * (x - anchor)
