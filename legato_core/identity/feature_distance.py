"""A perceptual distance built from an identity network's own stages (no VGG/LPIPS weights exist offline).

Used by the image objective (``unlearning``), by inversion (``backends.embedded``) and by the re-inversion audit;
it lives with the identity networks because it is one of their views of an image, not an unlearning loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ArcFaceFeatureDistance(nn.Module):
    """LPIPS-like distance on the stages of a frozen identity CNN (unit-normalised channels, mean over space)."""

    def __init__(self, identity_net: nn.Module):
        super().__init__()
        net = identity_net.net if hasattr(identity_net, "net") else identity_net
        if not hasattr(net, "stem"):
            raise TypeError("the feature distance needs an identity network with .stem and stage blocks")
        self.stem = net.stem
        self.stages = list(getattr(net, "blocks", getattr(net, "features", [])))
        self.head = getattr(net, "head", None)  # ArcFaceNet: embedding = normalize(head(last stage))

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        from .networks import prepare_images

        x = self.stem(prepare_images(images))
        feats = [x]
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats

    def embedding(self, feats: list[torch.Tensor]) -> torch.Tensor | None:
        """The network's identity embedding from already computed features (None if it has no head)."""
        return None if self.head is None else F.normalize(self.head(feats[-1]), dim=1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per-sample distance (B,)."""
        return self.distance(self.features(a), self.features(b))

    @staticmethod
    def distance(fa: list[torch.Tensor], fb: list[torch.Tensor]) -> torch.Tensor:
        total = 0.0
        for x, y in zip(fa, fb, strict=True):
            x, y = F.normalize(x, dim=1), F.normalize(y, dim=1)
            total = total + (x - y).square().sum(1).mean(dim=(1, 2))
        return total / len(fa)
