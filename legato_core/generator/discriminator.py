"""A small patch discriminator: the adversarial term that asks the generator's edges to look like real ones.

Regression losses (L1 on pixels and on their gradients) pull a generator towards the *average* picture, and
an average of slightly misplaced edges is a soft edge: after 26,500 steps the factor generator drew the
face's strong edges (eyes, mouths, glasses frames) at ~0.6 of their true gradient energy. A discriminator
that scores 64-px faces patch by patch (each logit sees ~30 px) has no notion of *which* face it is looking
at; it only tells crisp face-world edges from soft ones, and the L1 terms, which stay, keep the content right.
Spectral normalisation and a hinge loss keep it stable on a small batch; it is used in training only and never
shipped with the generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


@dataclass
class DiscriminatorConfig:
    channels: tuple[int, ...] = (32, 64, 128)  # one stride-2 4x4 conv each: 64 -> 32 -> 16 -> 8 px
    in_channels: int = 3

    @classmethod
    def from_dict(cls, d: dict) -> DiscriminatorConfig:
        return cls(**{**d, "channels": tuple(d.get("channels", cls.channels))})


class PatchDiscriminator(nn.Module):
    """(B, 3, 64, 64) images in [0, 1] -> (B, 1, 8, 8) logits, one per overlapping patch."""

    def __init__(self, config: DiscriminatorConfig | None = None):
        super().__init__()
        self.config = c = config or DiscriminatorConfig()
        layers, cin = [], c.in_channels
        for cout in c.channels:
            layers += [spectral_norm(nn.Conv2d(cin, cout, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            cin = cout
        layers.append(spectral_norm(nn.Conv2d(cin, 1, 3, padding=1)))
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images * 2 - 1)


def discriminator_loss(disc: PatchDiscriminator, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Hinge loss: real patches above +1, generated ones below -1 (``fake`` is detached here)."""
    return F.relu(1 - disc(real)).mean() + F.relu(1 + disc(fake.detach())).mean()


def generator_adversarial_loss(disc: PatchDiscriminator, fake: torch.Tensor) -> torch.Tensor:
    """The generator's side of the hinge game: raise the discriminator's score of its patches."""
    return -disc(fake).mean()
