"""Where a latent adapter acts: a ball around the person's latents, so that many adapters can share one model.

A trained field moves every latent a little, not only the person's: invisible for one adapter, but composed over
ten people those moves add up (docs/many.md, the first row of the scope table). A
:class:`Scope` weighs each sample by where it *starts*: 1 within ``inner`` of any of the person's latents (the
upload and its view anchors), 0 beyond ``outer``, smooth between. How a weighted sample moves is its ``carry``:
"parallel" (the engine's default) moves it by the person's own displacement along the dial times its weight, so
the person's other photos (0.5-0.8 typical radii away, where the trained field has faded) go where the person
goes; "field" integrates the field at the sample, scaled by the weight. Either way the person's own path is the
field's bit for bit and a latent out of scope leaves the adapter as it came in. Distances are latent distances,
or taken after a linear map (``metric``: the inversion scatter's whitening, along which another photo of the same
person is a short step). Radii and measurements: docs/many.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
from torch import nn

CARRIES = ("parallel", "field")


def measured(x: torch.Tensor, metric: torch.Tensor | None) -> torch.Tensor:
    """Rows of x (B, D) as a scope with ``metric`` (D, D) measures them: mapped through it, or as they are."""
    return x if metric is None else x @ metric.to(x).T


def same_metric(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    """Whether two scopes measure distance alike (both plain, or the same matrix)."""
    return a is b or (a is not None and b is not None and a.shape == b.shape and torch.equal(a, b))


@dataclass(frozen=True)
class Scope:
    """The person's latents (m, D; the first is the upload, whose path "parallel" carries), two radii in latent
    units (inner < outer), and how a sample in scope moves (``CARRIES``)."""

    centres: torch.Tensor
    inner: float
    outer: float
    carry: str = "field"  # what a file saved before carries were named means
    # (D, D): distances are measured after this linear map (a whitening of where a person's other photos invert,
    # scripts/inversion_scatter.py); None: plain latent distance
    metric: torch.Tensor | None = None

    def __post_init__(self):
        if self.centres.dim() != 2 or len(self.centres) == 0:
            raise ValueError(f"a scope needs centres of shape (m, D) with m >= 1, got {tuple(self.centres.shape)}")
        if not 0 <= self.inner < self.outer:
            raise ValueError(f"a scope needs 0 <= inner < outer, got inner={self.inner}, outer={self.outer}")
        if self.carry not in CARRIES:
            raise ValueError(f"a scope's carry is one of {CARRIES}, got {self.carry!r}")
        object.__setattr__(self, "centres", self.centres.detach().float().contiguous())
        if self.metric is not None:
            d = self.centres.shape[1]
            if tuple(self.metric.shape) != (d, d):
                raise ValueError(f"a scope's metric must be ({d}, {d}) for {d}-d centres, "
                                 f"got {tuple(self.metric.shape)}")
            object.__setattr__(self, "metric", self.metric.detach().float().contiguous())
        object.__setattr__(self, "mapped_centres", measured(self.centres, self.metric))

    def distance(self, x: torch.Tensor) -> torch.Tensor:
        """Distance of each row of x (B, D) to the nearest centre (through the metric, if any) -> (B,)."""
        return torch.cdist(measured(x.float(), self.metric), self.mapped_centres.to(x.device)).min(1).values

    def weight(self, x: torch.Tensor) -> torch.Tensor:
        """Per-row weight in [0, 1] (B, 1): 1 within ``inner``, 0 beyond ``outer``, a smoothstep between."""
        s = ((self.outer - self.distance(x)) / (self.outer - self.inner)).clamp(0, 1)
        return (s * s * (3 - 2 * s))[:, None]

    def parallel(self, x: torch.Tensor, upload_at_t: torch.Tensor) -> torch.Tensor:
        """Rows of x (B, D) moved by the upload's displacement ``upload_at_t - centres[0]`` times their weight; a
        row at full weight is ``upload_at_t + (x - upload)``, so the upload's own row is ``upload_at_t`` exactly."""
        upload = self.centres[:1].to(x)
        shift = upload_at_t - upload
        weight = self.weight(x).to(x)
        return torch.where(weight == 1, upload_at_t + (x - upload), x + weight * shift)

    def to_json(self) -> str:
        """The radii, the carry and whether a metric is stored (its matrix goes beside the centres)."""
        return json.dumps({"inner": self.inner, "outer": self.outer, "carry": self.carry,
                           "metric": "whitened" if self.metric is not None else "latent"})

    @classmethod
    def from_saved(cls, centres: torch.Tensor, text: str, metric: torch.Tensor | None = None) -> Scope:
        d = json.loads(text)
        if (d.get("metric", "latent") == "whitened") != (metric is not None):
            raise ValueError("the scope's metric and its matrix do not match (one without the other)")
        return cls(centres, float(d["inner"]), float(d["outer"]), d.get("carry", "field"), metric)


class WeightedField(nn.Module):
    """A vector field times a fixed per-row weight: integrating it to t is integrating the field to t * weight
    (up to the solver's steps), and exactly the field where the weight is 1 and nothing where it is 0."""

    def __init__(self, field: nn.Module, weight: torch.Tensor):
        super().__init__()
        self.field, self.row_weight = field, weight

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.row_weight.to(x.dtype) * self.field(t, x)
