"""Low-rank residual adapters (LoRA at the same sites as the ODE adapters): LEGATO's natural rival.

x + s * up(down(x)) with 1x1 projections; ``up`` starts at zero, so an untrained adapter is the identity. Trained
at s = 1, swept over s in [0, 1] at inference (the Concept-Sliders knob). It runs through the same activation as
the ODE adapters (``adapters.active(model, [(adapter, s)])``): no hooks of its own, no copy of the base.
"""

from __future__ import annotations

import torch
from torch import nn

from .adapter import AdaptableModel, AdapterMismatchError


class LowRankResidual(nn.Module):
    def __init__(self, channels: int, rank: int):
        super().__init__()
        self.down = nn.Conv2d(channels, rank, 1, bias=False)
        self.up = nn.Conv2d(rank, channels, 1, bias=False)
        nn.init.kaiming_uniform_(self.down.weight, a=5**0.5)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor, scale: float) -> torch.Tensor:
        return x + scale * self.up(self.down(x))


class LowRankAdapter(nn.Module):
    """One low-rank residual per site; the intensity is the scale s in [0, 1]."""

    def __init__(self, sites: dict[str, int], rank: int = 4, base_model_id: str = "", base_weight_hash: str = ""):
        super().__init__()
        self.site_channels, self.rank = dict(sites), rank
        self.fields = nn.ModuleDict({name: LowRankResidual(c, rank) for name, c in sites.items()})
        self.base_model_id, self.base_weight_hash = base_model_id, base_weight_hash

    def transform(self, site: str, x: torch.Tensor, intensity: float,
                  states: dict[str, list[torch.Tensor]] | None = None) -> torch.Tensor:
        out = x if intensity == 0 else self.fields[site](x, intensity)
        if states is not None:
            states[site] = [x, out]
        return out

    def check_intensity(self, s: float) -> float:
        s = float(s)
        if not 0 <= s <= 1:
            raise ValueError(f"the low-rank scale s must be in [0, 1], got {s}")
        return s

    def check_base(self, model: AdaptableModel) -> None:
        sites = model.adapter_sites
        missing = [s for s in self.site_channels if s not in sites]
        if missing:
            raise AdapterMismatchError(f"base model has no adapter sites {missing}; it has {sorted(sites)}")
        if self.base_weight_hash and self.base_weight_hash != model.weight_hash():
            raise AdapterMismatchError(f"this low-rank adapter was trained for base weights {self.base_weight_hash}")

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
